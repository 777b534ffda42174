"""``POST /v1/chat/completions`` without FastAPI's per-request machinery, for the gateway's hot path.

FastAPI's dependency injection and body handling cost about 150 us of CPU
a request, measured with `benchmarks/gateway_overhead.py` on a 2-core VM
(FastAPI 0.165), about a quarter of the gateway's own time. This route sits
first in the route table. It parses a JSON body with one pydantic call,
checks the key with the same `require` dependency, and calls the same
endpoint function. Any request it cannot parse (a content type that is not
JSON, invalid JSON, a body that does not validate) goes on to the FastAPI
route declared in `openai_api`, so error responses, and the OpenAPI
schema, are exactly FastAPI's.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from trunkline.server import openai_api

#: Set in the scope of a request handed on, so this route does not match it again.
_HANDED_ON = "trunkline.handed_on"


class FastRoute(Route):
    """A route that steps aside for requests it has handed on to the FastAPI route.

    `role` is the role it admits, declared as FastAPI routes declare theirs
    through `require`, so the role-matrix test reads it from every route.
    """

    role = openai_api.DEVELOPER.role

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get(_HANDED_ON):
            return Match.NONE, {}
        return super().matches(scope)


class ChatCompletionsApp:
    """The ASGI app of the fast chat-completions route."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        raw = await request.body()
        body = _parse(request, raw)
        if body is None:
            await scope["app"].router({**scope, _HANDED_ON: True}, _replay(raw), send)
            return
        key = await openai_api.DEVELOPER(request)
        response = await openai_api.chat_completions(body, request, key)
        await response(scope, receive, send)


def _parse(request: Request, raw: bytes) -> openai_api.ChatCompletionRequest | None:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/json"):
        return None
    try:
        return openai_api.ChatCompletionRequest.model_validate_json(raw)
    except ValidationError:
        return None


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


def fast_route() -> FastRoute:
    return FastRoute("/v1/chat/completions", ChatCompletionsApp(), methods=["POST"], include_in_schema=False)
