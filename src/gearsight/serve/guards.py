"""Pure-ASGI guards in front of the app: an optional API key and a request body size limit."""
from __future__ import annotations

import hmac
import json

from gearsight.serve.errors import RETRY_AFTER_S, RequestError


# Refused before its body was read: close the connection, or uvicorn reads (and drops) the rest of
# a 16 MiB body on the event loop before the next request on it.
CLOSE = [(b"connection", b"close")]


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
    """Refuse bodies over ``max_bytes``, and big bodies while ``budget_bytes`` of them are in flight.

    Content-Length is checked up front but never trusted: the bytes that arrive are counted too
    (h11 lets ``Transfer-Encoding: chunked`` override a declared length). Bodies over ``small_bytes``
    share the budget (a 429 with Retry-After when it is spent), so a crowd of 16 MiB uploads
    cannot hold gigabytes while small requests go on being answered.
    """

    def __init__(self, app, max_bytes: int, budget_bytes: int | None = None, small_bytes: int = 1 << 20):
        self.app, self.max_bytes, self.small_bytes = app, max_bytes, small_bytes
        self.budget = budget_bytes if budget_bytes is not None else 4 * max_bytes
        self.in_flight = 0  # bytes of big bodies held by requests in progress

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _header(scope, b"content-length")
        size = 0
        if declared is not None and declared.isdigit():
            size = int(declared) if len(declared) < 20 else self.max_bytes + 1
        if size > self.max_bytes:
            return await send_error(send, 413, f"body of {size:,} bytes is over the {self.max_bytes:,}-byte limit", CLOSE)
        held = 0  # bytes of the budget this request holds

        def reserve(total: int) -> bool:
            nonlocal held
            if total <= self.small_bytes or total <= held:
                return True
            if self.in_flight + total - held > self.budget:
                return False
            self.in_flight += total - held
            held = total
            return True

        if not reserve(size):
            return await send_error(send, 429, self._busy(), [(b"retry-after", str(RETRY_AFTER_S).encode()), *CLOSE])
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            # Raised inside the endpoint's body read; the app's RequestError handler answers.
            if received > self.max_bytes:
                raise RequestError(f"body is over the {self.max_bytes:,}-byte limit", 413, {"Connection": "close"})
            if not reserve(received):
                raise RequestError(self._busy(), 429, {"Retry-After": str(RETRY_AFTER_S), "Connection": "close"})
            return message

        try:
            return await self.app(scope, counting_receive, send)
        finally:
            self.in_flight -= held

    def _busy(self) -> str:
        return (f"server busy: {self.in_flight:,} bytes of large request bodies in progress "
                f"(budget {self.budget:,}); retry later")
