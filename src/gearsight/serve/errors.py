"""Client mistakes: one exception type carrying the HTTP status and a message that names the problem.

Every parser and guard in the serving package raises ``RequestError``; the app turns it into a
``{"error": "..."}`` JSON body (the Open Inference Protocol's error shape) with a 4xx status.
"""
from __future__ import annotations


class RequestError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def too_large(message: str) -> RequestError:
    return RequestError(message, status=413)
