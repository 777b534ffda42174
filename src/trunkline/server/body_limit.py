"""A cap on the size of request bodies, rejected with 413 in the API's error shape.

A body that declares its size in ``Content-Length`` is rejected before any
of it is read. A chunked body is counted while the endpoint reads it and
rejected once it passes the cap, so no request keeps more than the cap in
memory. Requests without a body pass through untouched.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trunkline.server.errors import ApiError, BodyTooLarge, error_response

#: The default cap. At about 4 bytes a token of English text, 10 MiB is over 2 million
#: tokens, well above the context windows of common models.
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024

_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class BodySizeLimit:
    """ASGI middleware that rejects a request whose body is over `max_bytes` with 413."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS_WITH_BODY:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None:
            # The server delivers no more than Content-Length bytes, so a body within it needs no count.
            if declared > self.max_bytes:
                detail = BodyTooLarge(self.max_bytes).detail
                rejection = ApiError(413, "request_too_large", detail)
                await error_response(Request(scope), rejection)(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        await self.app(scope, _counted(receive, self.max_bytes), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _counted(receive: Receive, max_bytes: int) -> Receive:
    """Wrap `receive` so that reading past `max_bytes` raises `BodyTooLarge`."""
    received = 0

    async def receive_counted() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                # FastAPI re-raises an HTTPException from reading the body, so the
                # app's handler builds the response in the endpoint's error shape.
                raise BodyTooLarge(max_bytes)
        return message

    return receive_counted
