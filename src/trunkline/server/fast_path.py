"""``POST /v1/chat/completions`` without FastAPI's per-request machinery, for the gateway's hot path.

FastAPI's dependency injection and body handling cost about 150 us of CPU
a request, and its middleware stack and route table about 40 us more
(py-spy samples of `benchmarks/gateway_overhead.py` at concurrency 1 on a
2-core VM, FastAPI 0.165). `GatewayApp` answers a well-formed chat completion
itself, before any of them: it parses the JSON body with one pydantic call,
checks the key with the same `require` dependency, calls the same endpoint
function and turns its exceptions into responses with the app's own
exception handlers. Every other request, and any chat completion it cannot
parse (a body without Content-Length or over the size cap, a content type
that is not JSON, invalid JSON, a body that does not validate) goes through
FastAPI as declared in `openai_api`, so error responses, the body limit and
the OpenAPI schema are exactly FastAPI's.
"""

from __future__ import annotations

import inspect

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from trunkline.server import openai_api
from trunkline.server.body_limit import DEFAULT_MAX_BODY_BYTES

CHAT_PATH = "/v1/chat/completions"


class GatewayApp(FastAPI):
    """The gateway's FastAPI app, with the chat-completions fast path in front of its middleware."""

    #: The largest body the fast path reads; larger ones go to FastAPI's body limit.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == CHAT_PATH and scope["method"] == "POST":
            await self._chat(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        length, json_body = _body_headers(scope)
        if length is None or length > self.max_body_bytes or not json_body:
            await super().__call__(scope, receive, send)
            return
        raw = await _read_body(receive)
        try:
            body = openai_api.ChatCompletionRequest.model_validate_json(raw)
        except ValidationError:
            await super().__call__(scope, _replay(raw), send)
            return
        # What Starlette sets before the middleware, for `request.app`.
        scope["app"] = self
        request = Request(scope, receive)
        try:
            key = await openai_api.DEVELOPER(request)
            response = await openai_api.chat_completions(body, request, key)
        except Exception as error:
            response = await self._handled(request, error)
        await response(scope, receive, send)

    async def _handled(self, request: Request, error: Exception) -> Response:
        """Return the response of the app's handler for `error`; re-raise one no handler takes."""
        for cls in type(error).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is None:
                continue
            response = handler(request, error)
            return await response if inspect.isawaitable(response) else response
        raise error


def _body_headers(scope: Scope) -> tuple[int | None, bool]:
    """Return the request's Content-Length (None when absent or invalid) and whether it sends JSON."""
    length, json_body = None, False
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = int(value) if value.isdigit() else None
        elif name == b"content-type":
            json_body = value.startswith(b"application/json")
    return length, json_body


async def _read_body(receive: Receive) -> bytes:
    # The server stops at Content-Length, which the caller checked against the cap.
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(raw: bytes) -> Receive:
    """Return a `receive` that delivers the body already read, then waits for the disconnect."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return {"type": "http.disconnect"}

    return receive
