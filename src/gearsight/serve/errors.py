"""Client mistakes: one exception type carrying the HTTP status and a message that names the problem.

Every parser and guard in the serving package raises ``RequestError``; the app turns it into a
``{"error": "..."}`` JSON body (the Open Inference Protocol's error shape) with a 4xx status, or a
503 when the server is overloaded or past a deadline (with ``Retry-After``).
"""
from __future__ import annotations

RETRY_AFTER_S = 1  # what busy/deadline answers tell a client to wait


class RequestError(Exception):
    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = headers or {}

    def __reduce__(self):  # keeps status and headers when raised in the heavy-body process
        return RequestError, (self.message, self.status, self.headers)


def too_large(message: str) -> RequestError:
    return RequestError(message, status=413)


def busy(message: str, status: int = 429) -> RequestError:
    """Back-pressure: 429 (come back later) or 503 (deadline), with Retry-After."""
    return RequestError(message, status=status, headers={"Retry-After": str(RETRY_AFTER_S)})
