"""The OpenAI-compatible endpoints: ``POST /v1/chat/completions``, ``GET /v1/models`` and one model."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from pydantic_core import to_json

from trunkline.errors import CallError, TrunklineError
from trunkline.server.auth import require
from trunkline.server.content import UnicodeText, check_text_content
from trunkline.server.errors import ApiError, from_call_error, openai_body
from trunkline.server.gateway import Admission, Gateway
from trunkline.server.tool_requests import invalid, openai_tool_choice, openai_tools
from trunkline.store.keys import ApiKey, Role
from trunkline.types.calls import CallRecord
from trunkline.types.messages import Message, ToolCall
from trunkline.types.usage import Usage

router = APIRouter()

_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter"}


class TextPart(BaseModel):
    type: Literal["text"]
    text: UnicodeText


class FunctionCall(BaseModel):
    name: UnicodeText
    #: JSON text, passed on as the model produced it.
    arguments: UnicodeText


class ToolCallPart(BaseModel):
    id: UnicodeText
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    #: None only in an assistant message with tool calls, which `_tool_message` checks.
    content: UnicodeText | list[TextPart] | None = None
    name: UnicodeText | None = None
    tool_calls: list[ToolCallPart] | None = None
    tool_call_id: UnicodeText | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        return check_text_content(value)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ChatCompletionRequest(BaseModel):
    """The part of OpenAI's chat-completions request that the gateway serves."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: UnicodeText | list[UnicodeText] | None = None
    seed: int | None = None
    n: int | None = Field(default=None, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    user: UnicodeText | None = Field(default=None, max_length=200)
    #: Checked by `tool_requests`, which rejects each problem with a 400 of its own.
    tools: list[Any] | None = None
    tool_choice: Any = None
    #: False allows at most one tool call in the reply; ignored without tools.
    parallel_tool_calls: StrictBool | None = None


def _messages(body: ChatCompletionRequest) -> tuple[Message, ...]:
    messages = []
    for index, message in enumerate(body.messages):
        # Plain text messages skip the tool checks, which keeps requests without tools fast.
        if message.role == "tool" or message.tool_calls or message.content is None:
            messages.append(_tool_message(index, message))
            continue
        role = "system" if message.role == "developer" else message.role
        messages.append(Message(role=role, content=_text(message.content), name=message.name))
    return tuple(messages)


def _text(content: str | list[TextPart]) -> str:
    return content if isinstance(content, str) else "".join(part.text for part in content)


def _tool_message(index: int, message: ChatMessage) -> Message:
    """Convert a tool message, an assistant message with tool calls, or a message without content."""
    if message.content is None and (message.role != "assistant" or not message.tool_calls):
        raise invalid(
            f"messages[{index}].content", "a string or a list of text parts", None,
            "only an assistant message with tool_calls may leave out its content",
        )
    content = "" if message.content is None else _text(message.content)
    if message.role == "tool":
        if message.tool_call_id is None:
            raise invalid(
                f"messages[{index}].tool_call_id",
                "the id of the tool call whose result this message returns",
                None,
                "copy the id from the assistant message's tool_calls",
            )
        return Message.tool(message.tool_call_id, content)
    if message.tool_calls and message.role != "assistant":
        raise invalid(
            f"messages[{index}].role", '"assistant" in a message with tool_calls', message.role,
            "send tool calls in assistant messages only",
        )
    calls = tuple(
        ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments)
        for call in message.tool_calls or ()
    )
    return Message(role="assistant", content=content, name=message.name, tool_calls=calls)


def _output_schema(body: ChatCompletionRequest) -> dict[str, Any] | None:
    response_format = body.response_format
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return {"type": "object"}
    schema = (response_format.json_schema or {}).get("schema")
    if not isinstance(schema, dict):
        raise ApiError(
            400,
            "invalid_request",
            "response_format of type json_schema needs json_schema.schema, a JSON Schema object",
            param="response_format",
        )
    return schema


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _completion(record: CallRecord, model: str) -> dict[str, Any]:
    text = record.output_text or ""
    # OpenAI sends null content beside tool calls when the model wrote no text.
    content = None if record.tool_calls and not text else text
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if record.tool_calls:
        message["tool_calls"] = [_tool_call(call) for call in record.tool_calls]
    return {
        "id": f"chatcmpl-{record.call_id}",
        "object": "chat.completion",
        "created": int(record.started_at.timestamp()),
        "model": model,
        "system_fingerprint": record.model_version,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _FINISH.get(record.finish_reason or "stop", "stop"),
                "logprobs": None,
            }
        ],
        "usage": usage_body(record.usage),
    }


def _tool_call(call: ToolCall) -> dict[str, Any]:
    function = {"name": call.name, "arguments": call.arguments}
    return {"id": call.id, "type": "function", "function": function}


def _headers(record: CallRecord) -> dict[str, str]:
    headers = {"x-trunkline-call-id": record.call_id, "x-trunkline-trace-id": record.trace_id}
    if record.cost.total_usd is not None:
        headers["x-trunkline-cost-usd"] = f"{record.cost.total_usd:.8f}"
    return headers


#: The check of the chat-completions endpoint, shared with its fast route in `fast_path`.
DEVELOPER = require(Role.DEVELOPER)


@router.post("/v1/chat/completions", response_model=None, tags=["gateway"])
async def chat_completions(
    body: ChatCompletionRequest, request: Request, key: ApiKey = Depends(DEVELOPER)
) -> Response:
    """Complete a chat through the router, as OpenAI's chat-completions endpoint does."""
    gateway: Gateway = request.app.state.gateway
    # Read by the error handlers, which count every response by model.
    request.state.model = body.model
    messages = _messages(body)
    max_tokens = body.max_completion_tokens or body.max_tokens
    stop = [body.stop] if isinstance(body.stop, str) else body.stop or ()
    schema = _output_schema(body)
    tools = openai_tools(body.tools) if body.tools else ()
    tool_choice = openai_tool_choice(body.tool_choice, tools)
    if body.stream and schema is not None:
        raise ApiError(
            400, "invalid_request", "response_format with stream: true is not supported; "
            "send the request without stream to get validated structured output", param="response_format",
        )
    admission = await gateway.admit(key, body.model, messages, max_tokens, "chat_completions")
    tags = {**admission.tags, "user": body.user} if body.user else admission.tags
    options = dict(
        route=body.model, temperature=body.temperature, max_tokens=max_tokens, top_p=body.top_p,
        stop=stop, seed=body.seed, tags=tags, budgets=admission.budgets,
        tools=tools, tool_choice=tool_choice, parallel_tool_calls=body.parallel_tool_calls if tools else None,
    )
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await _stream(gateway, admission, messages, options, include_usage)
    try:
        result = await gateway.router.complete(messages, output=schema, **options)
    except TrunklineError as error:
        raise await gateway.failed(admission, error) from None
    await gateway.finish(admission, 200, result.record)
    return Response(
        to_json(_completion(result.record, body.model)),
        media_type="application/json",
        headers=_headers(result.record),
    )


def _chunk(call_id: str, created: int, model: str, delta: dict | None, finish: str | None = None) -> bytes:
    payload: dict[str, Any] = {
        "id": f"chatcmpl-{call_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
    }
    if delta is not None:
        payload["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    return b"data: " + to_json(payload) + b"\n\n"


def _tool_call_deltas(index: int, call: ToolCall) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return one tool call's deltas as OpenAI streams them: id and name, then arguments."""
    function = {"name": call.name, "arguments": ""}
    opening = {"index": index, "id": call.id, "type": "function", "function": function}
    arguments = {"index": index, "function": {"arguments": call.arguments}}
    return {"tool_calls": [opening]}, {"tool_calls": [arguments]}


def _usage_chunk(call_id: str, created: int, model: str, usage: Usage) -> bytes:
    """Build the last chunk that ``stream_options.include_usage`` requests: no choices, the call's usage."""
    payload = {
        "id": f"chatcmpl-{call_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_body(usage),
    }
    return b"data: " + to_json(payload) + b"\n\n"


async def _stream(
    gateway: Gateway, admission: Admission, messages: tuple[Message, ...], options: dict, include_usage: bool
) -> Response:
    """Respond with server-sent events once the first delta arrived, so earlier failures keep their status."""
    stream, deltas, first = await gateway.open_stream(admission, messages, options)
    model, call_id, created = admission.model, stream.call_id, int(time.time())

    async def events() -> AsyncIterator[bytes]:
        record, kind = None, None
        try:
            # A stream without text has ended before its first chunk, so its tool calls are known.
            tool_only = first is None and bool(stream.result.record.tool_calls)
            opening = {"role": "assistant", "content": None if tool_only else ""}
            yield _chunk(call_id, created, model, opening)
            if first is not None:
                yield _chunk(call_id, created, model, {"content": first})
            async for delta in deltas:
                yield _chunk(call_id, created, model, {"content": delta})
            record = stream.result.record
            for index, call in enumerate(record.tool_calls):
                for delta in _tool_call_deltas(index, call):
                    yield _chunk(call_id, created, model, delta)
            yield _chunk(call_id, created, model, {}, _FINISH.get(record.finish_reason or "stop", "stop"))
            if include_usage:
                yield _usage_chunk(call_id, created, model, record.usage)
            yield b"data: [DONE]\n\n"
        except CallError as error:
            # The headers are sent, so the failure travels as an error event, which the SDK raises.
            record, kind = getattr(error, "record", None), error.kind.value
            body = openai_body(from_call_error(error))
            yield b"data: " + to_json(body) + b"\n\n"
        finally:
            await gateway.close_stream(admission, stream, record, kind)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


@router.get("/v1/models", tags=["gateway"])
async def list_models(request: Request, key: ApiKey = Depends(require(Role.VIEWER))) -> dict[str, Any]:
    """List the routes and deployments this key may call, in OpenAI's model-list shape."""
    gateway: Gateway = request.app.state.gateway
    gateway.metrics.count("models", "-", 200)
    return {"object": "list", "data": [_model(name) for name in gateway.models_for(key)]}


@router.get("/v1/models/{model_id:path}", tags=["gateway"])
async def retrieve_model(
    model_id: str, request: Request, key: ApiKey = Depends(require(Role.VIEWER))
) -> dict[str, Any]:
    """Return one route or deployment this key may call, as an item of the model list."""
    gateway: Gateway = request.app.state.gateway
    request.state.model = model_id
    # A model the key may not call gets the same 404 as an unknown one, so that a key
    # does not learn the routes of other keys.
    if not gateway.serves(model_id) or not key.may_call(model_id):
        raise ApiError(
            404,
            "model_not_found",
            f"the model {model_id!r} is not served here, or the key {key.key_id} may not call it; "
            "GET /v1/models lists the ones this key may use",
            param="model",
        )
    gateway.metrics.count("models", model_id, 200)
    return _model(model_id)


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "trunkline"}
