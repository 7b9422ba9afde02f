"""Pure-ASGI guards in front of the app: an optional API key and a request body size limit."""
from __future__ import annotations

import hmac
import json

from gearsight.serve.errors import too_large


async def send_error(send, status: int, message: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope["headers"] if k == name), None)


class ApiKeyMiddleware:
    """``Authorization: Bearer <key>`` on every path except the open ones (health checks, web page)."""

    def __init__(self, app, api_key: str, open_paths: frozenset[str]):
        self.app, self.key, self.open_paths = app, api_key.encode(), open_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        auth = _header(scope, b"authorization")
        challenge = [(b"www-authenticate", b'Bearer realm="gearsight"')]
        if auth is None:
            return await send_error(send, 401, "missing API key: send the header 'Authorization: Bearer <key>'", challenge)
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
            return await send_error(send, 401, "wrong API key", challenge)
        return await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes``: by Content-Length up front, or while a chunked body streams."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await send_error(send, 413, f"body of {int(declared):,} bytes is over the {self.max_bytes:,}-byte limit")
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # Raised inside the endpoint's body read; the app's RequestError handler answers 413.
                raise too_large(f"body is over the {self.max_bytes:,}-byte limit")
            return message

        return await self.app(scope, receive if declared is not None else counting_receive, send)

