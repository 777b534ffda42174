"""The Anthropic-compatible endpoint: ``POST /v1/messages``, plain and streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import to_json

from trunkline.errors import CallError, TrunklineError
from trunkline.server.auth import require
from trunkline.server.content import UnicodeText, check_text_content
from trunkline.server.errors import ApiError, anthropic_body, from_call_error
from trunkline.server.gateway import Admission, Gateway
from trunkline.store.keys import ApiKey, Role
from trunkline.types.calls import CallRecord
from trunkline.types.messages import Message
from trunkline.types.usage import Usage

router = APIRouter()

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


class TextBlock(BaseModel):
    type: Literal["text"]
    text: UnicodeText


class AnthropicMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: UnicodeText | list[TextBlock]

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        return check_text_content(value)


class Metadata(BaseModel):
    user_id: UnicodeText | None = Field(default=None, max_length=200)


class MessagesRequest(BaseModel):
    """The part of Anthropic's Messages request that the gateway serves."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: UnicodeText | list[TextBlock] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop_sequences: list[UnicodeText] | None = None
    stream: bool = False
    metadata: Metadata | None = None
    #: Read only to reject it, because tool calls are not forwarded.
    tools: list[Any] | None = None


def _text(content: str | list[TextBlock]) -> str:
    return content if isinstance(content, str) else "".join(block.text for block in content)


def _messages(body: MessagesRequest) -> tuple[Message, ...]:
    messages = [Message(role=message.role, content=_text(message.content)) for message in body.messages]
    if body.system:
        messages.insert(0, Message(role="system", content=_text(body.system)))
    return tuple(messages)


def _usage(usage: Usage) -> dict[str, int]:
    # Anthropic counts cache reads and writes apart from input_tokens.
    fresh = max(usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens, 0)
    return {
        "input_tokens": fresh,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    }


def _message(record: CallRecord, model: str) -> dict[str, Any]:
    return {
        "id": f"msg_{record.call_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": record.output_text or ""}],
        "stop_reason": _STOP.get(record.finish_reason or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": _usage(record.usage),
    }


@router.post("/v1/messages", response_model=None, tags=["gateway"])
async def create_message(
    body: MessagesRequest, request: Request, key: ApiKey = Depends(require(Role.DEVELOPER))
) -> Response:
    """Create a message through the router, as Anthropic's Messages endpoint does."""
    gateway: Gateway = request.app.state.gateway
    # Read by the error handlers, which count every response by model.
    request.state.model = body.model
    if body.tools is not None:
        raise ApiError(
            400, "invalid_request", "tools are not supported by this gateway; "
            "send the request without tools and tool_choice", param="tools",
        )
    messages = _messages(body)
    admission = await gateway.admit(key, body.model, messages, body.max_tokens, "messages")
    user = body.metadata.user_id if body.metadata else None
    options = dict(
        route=body.model, temperature=body.temperature, max_tokens=body.max_tokens, top_p=body.top_p,
        stop=body.stop_sequences or (), tags={**admission.tags, "user": user} if user else admission.tags,
        budgets=admission.budgets,
    )
    if body.stream:
        return await _stream(gateway, admission, messages, options)
    try:
        result = await gateway.router.complete(messages, **options)
    except TrunklineError as error:
        raise await gateway.failed(admission, error) from None
    await gateway.finish(admission, 200, result.record)
    return Response(
        to_json(_message(result.record, body.model)),
        media_type="application/json",
        headers={"x-trunkline-call-id": result.record.call_id, "request-id": f"req_{result.record.call_id}"},
    )


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: ".encode() + to_json(data) + b"\n\n"


async def _stream(gateway: Gateway, admission: Admission, messages: tuple[Message, ...], options: dict) -> Response:
    """Send Anthropic's event sequence once the first delta came, so earlier failures keep their status."""
    stream, deltas, first = await gateway.open_stream(admission, messages, options)
    start = {
        "id": f"msg_{stream.call_id}",
        "type": "message",
        "role": "assistant",
        "model": admission.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }

    async def events() -> AsyncIterator[bytes]:
        record, kind = None, None
        try:
            yield _event("message_start", {"type": "message_start", "message": start})
            yield _event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
            text = first
            while text is not None:
                yield _event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
                )
                text = await anext(deltas, None)
            record = stream.result.record
            yield _event("content_block_stop", {"type": "content_block_stop", "index": 0})
            yield _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": _STOP.get(record.finish_reason or "stop", "end_turn"), "stop_sequence": None},
                    "usage": _usage(record.usage),
                },
            )
            yield _event("message_stop", {"type": "message_stop"})
        except CallError as error:
            record, kind = getattr(error, "record", None), error.kind.value
            yield _event("error", anthropic_body(from_call_error(error)))
        finally:
            await gateway.close_stream(admission, stream, record, kind)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache"})
