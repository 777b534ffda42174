"""The Anthropic-compatible endpoint: ``POST /v1/messages``, plain and streamed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import to_json

from trunkline.errors import CallError, TrunklineError
from trunkline.server.auth import require
from trunkline.server.content import UnicodeText, check_text_content
from trunkline.server.errors import anthropic_body, from_call_error
from trunkline.server.gateway import Admission, Gateway
from trunkline.server.tool_requests import (
    anthropic_parallel_tool_calls,
    anthropic_tool_choice,
    anthropic_tools,
    invalid,
)
from trunkline.store.keys import ApiKey, Role
from trunkline.types.calls import CallRecord
from trunkline.types.messages import Message, ToolCall
from trunkline.types.usage import Usage

router = APIRouter()

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


class TextBlock(BaseModel):
    type: Literal["text"]
    text: UnicodeText


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"]
    id: UnicodeText
    name: UnicodeText
    input: dict[str, Any]


class ToolResultBlock(BaseModel):
    type: Literal["tool_result"]
    #: Optional here so that `_messages` can reject its absence with a 400 that names the field.
    tool_use_id: UnicodeText | None = None
    content: UnicodeText | list[TextBlock] = ""
    is_error: bool = False

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        return check_text_content(value)


ContentBlock = Annotated[TextBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]
_BLOCK_TYPES = frozenset({"text", "tool_use", "tool_result"})


class AnthropicMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: UnicodeText | list[ContentBlock]

    @field_validator("content", mode="before")
    @classmethod
    def _supported_blocks(cls, value: Any) -> Any:
        return check_text_content(value, _BLOCK_TYPES)


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
    #: Checked by `tool_requests`, which rejects each problem with a 400 of its own.
    tools: list[Any] | None = None
    #: Its ``disable_parallel_tool_use`` allows at most one tool call in the reply.
    tool_choice: Any = None


def _text(content: str | list[TextBlock]) -> str:
    return content if isinstance(content, str) else "".join(block.text for block in content)


def _messages(body: MessagesRequest) -> tuple[Message, ...]:
    messages = []
    if body.system:
        messages.append(Message(role="system", content=_text(body.system)))
    for index, message in enumerate(body.messages):
        if isinstance(message.content, str):
            messages.append(Message(role=message.role, content=message.content))
        elif message.role == "user":
            messages += _user_turn(index, message.content)
        else:
            messages.append(_assistant_turn(index, message.content))
    return tuple(messages)


def _user_turn(index: int, blocks: list[ContentBlock]) -> list[Message]:
    """Split a user turn into a tool message per ``tool_result`` block and a user message."""
    messages, texts = [], []
    for position, block in enumerate(blocks):
        where = f"messages[{index}].content[{position}]"
        if isinstance(block, ToolUseBlock):
            raise invalid(
                f"{where}.type", '"text" or "tool_result" in a user message', block.type,
                "send tool_use blocks in assistant messages",
            )
        if isinstance(block, TextBlock):
            texts.append(block.text)
            continue
        if block.tool_use_id is None:
            raise invalid(
                f"{where}.tool_use_id", "the id of the tool_use block whose result this is", None,
                "copy the id from the assistant message's tool_use block",
            )
        content = _text(block.content)
        messages.append(Message.tool(block.tool_use_id, content, is_error=block.is_error))
    if texts or not messages:
        messages.append(Message.user("".join(texts)))
    return messages


def _assistant_turn(index: int, blocks: list[ContentBlock]) -> Message:
    texts, calls = [], []
    for position, block in enumerate(blocks):
        if isinstance(block, ToolResultBlock):
            raise invalid(
                f"messages[{index}].content[{position}].type",
                '"text" or "tool_use" in an assistant message',
                block.type,
                "send tool_result blocks in user messages",
            )
        if isinstance(block, TextBlock):
            texts.append(block.text)
        else:
            calls.append(ToolCall(id=block.id, name=block.name, arguments=json.dumps(block.input)))
    return Message(role="assistant", content="".join(texts), tool_calls=tuple(calls))


def _usage(usage: Usage) -> dict[str, int]:
    # Anthropic counts cache reads and writes apart from input_tokens.
    fresh = max(usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens, 0)
    return {
        "input_tokens": fresh,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    }


def _content(record: CallRecord) -> list[dict[str, Any]]:
    """Return the reply's text block, unless empty beside tool calls, then a tool_use per call."""
    blocks = [_tool_use(call) for call in record.tool_calls]
    if record.output_text or not blocks:
        blocks.insert(0, {"type": "text", "text": record.output_text or ""})
    return blocks


def _tool_use(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input_object()}


def _message(record: CallRecord, model: str) -> dict[str, Any]:
    return {
        "id": f"msg_{record.call_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _content(record),
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
    messages = _messages(body)
    tools = anthropic_tools(body.tools) if body.tools else ()
    tool_choice = anthropic_tool_choice(body.tool_choice, tools)
    admission = await gateway.admit(key, body.model, messages, body.max_tokens, "messages")
    user = body.metadata.user_id if body.metadata else None
    options = dict(
        route=body.model, temperature=body.temperature, max_tokens=body.max_tokens, top_p=body.top_p,
        stop=body.stop_sequences or (), tags={**admission.tags, "user": user} if user else admission.tags,
        budgets=admission.budgets, tools=tools, tool_choice=tool_choice,
        parallel_tool_calls=anthropic_parallel_tool_calls(body.tool_choice) if tools else None,
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
            # A stream without text has ended before its first event, so its tool calls are known.
            blocks = 0
            if first is not None or not stream.result.record.tool_calls:
                yield _block_start(0, {"type": "text", "text": ""})
                text = first
                while text is not None:
                    yield _block_delta(0, {"type": "text_delta", "text": text})
                    text = await anext(deltas, None)
                yield _block_stop(0)
                blocks = 1
            record = stream.result.record
            for index, call in enumerate(record.tool_calls, start=blocks):
                for event in _tool_use_events(index, call):
                    yield event
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


def _block_start(index: int, block: dict[str, Any]) -> bytes:
    frame = {"type": "content_block_start", "index": index, "content_block": block}
    return _event("content_block_start", frame)


def _block_delta(index: int, delta: dict[str, Any]) -> bytes:
    frame = {"type": "content_block_delta", "index": index, "delta": delta}
    return _event("content_block_delta", frame)


def _block_stop(index: int) -> bytes:
    return _event("content_block_stop", {"type": "content_block_stop", "index": index})


def _tool_use_events(index: int, call: ToolCall) -> list[bytes]:
    """Return a tool call's events as Anthropic streams them: start, the input as JSON, stop."""
    block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
    delta = {"type": "input_json_delta", "partial_json": json.dumps(call.input_object())}
    return [_block_start(index, block), _block_delta(index, delta), _block_stop(index)]
