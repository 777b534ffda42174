"""Anthropic's Messages API through the official SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import anthropic

from trunkline.errors import ErrorKind, ProviderError
from trunkline.providers.base import (
    Provider,
    kind_from_codes,
    parse_error_body,
    redact_secrets,
    translate_sdk_error,
)
from trunkline.types.calls import FinishReason, ModelRequest, ModelResponse
from trunkline.types.messages import Message, ToolCall
from trunkline.types.usage import Usage

#: The Messages API requires max_tokens; this applies when the request sets none.
DEFAULT_MAX_TOKENS = 1024
#: Name of the tool that structured output is forced through.
OUTPUT_TOOL = "emit_output"

_STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    # Newer models stop with this when the prompt plus output fill the context
    # window, which cuts the output short as max_tokens does.
    "model_context_window_exceeded": "length",
}


class AnthropicProvider(Provider):
    """Messages over the `anthropic` SDK, with the SDK's own retries off.

    A request with an output schema forces a call to one tool whose input
    schema is that schema, and the tool's input becomes the output text.
    """

    name = "anthropic"

    def __init__(self, client: anthropic.AsyncAnthropic, model: str) -> None:
        self.client = client
        self.model = model

    @classmethod
    def create(cls, model: str, *, api_key: str | None, base_url: str | None = None) -> AnthropicProvider:
        client = anthropic.AsyncAnthropic(
            api_key=api_key or "not-needed", base_url=base_url, max_retries=0, timeout=None
        )
        return cls(client, model)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        try:
            message = await self.client.messages.create(**self._arguments(request))
        except anthropic.APIError as error:
            raise self._translate(error) from error
        return self._response(message, forced_tool=request.output_schema is not None)

    async def stream(self, request: ModelRequest) -> AsyncIterator[str | ModelResponse]:
        """Stream the message's text deltas, then yield the response assembled from its events.

        With an output schema, the deltas are pieces of the forced tool's input
        JSON, which becomes the text. An ``error`` event mid-stream raises
        `ProviderError` with the kind its error type names, such as overloaded
        for ``overloaded_error``. A stream that ends before ``message_stop`` was
        cut off, so it raises `ProviderError` with kind connection.
        """
        arguments = self._arguments(request)
        arguments["stream"] = True
        try:
            events = await self.client.messages.create(**arguments)
        except anthropic.APIError as error:
            raise self._translate(error) from error

        message = _StreamedMessage(forced_tool=request.output_schema is not None)
        # Leaving the block closes the HTTP response, also when the consumer
        # stops early (GeneratorExit) or is cancelled.
        async with events:
            while (event := await self._next_event(events)) is not None:
                delta = message.add(event)
                if delta:
                    yield delta

        if not message.stopped:
            raise self._stream_failure(
                "the stream ended before message_stop", ErrorKind.CONNECTION
            )
        if message.stop_reason == "refusal":
            # Text already sent stays with the caller; the record keeps it with this kind.
            raise ProviderError(
                f"{self.name} stream for model {self.model!r} was stopped by a safety "
                "classifier (stop_reason refusal)",
                kind=ErrorKind.CONTENT_FILTER,
                provider=self.name,
                model=self.model,
                status_code=200,
            )
        yield message.response(self.model)

    async def _next_event(self, events: Any) -> Any | None:
        """Return the next event, or None at the end, as a `ProviderError` on any failure."""
        try:
            return await anext(events)
        except StopAsyncIteration:
            return None
        except anthropic.APIStatusError as error:
            # The stream opened with status 200, so a status error now comes from
            # an `error` event, and only its body gives the error type.
            raise self._stream_failure(str(error), _stream_error_kind(error.body)) from error
        except anthropic.APIError as error:
            raise self._translate(error) from error
        except json.JSONDecodeError as error:
            raise self._stream_failure(
                f"the server sent an event that is not JSON: {error}", ErrorKind.SERVER_ERROR
            ) from error

    def _stream_failure(self, reason: str, kind: ErrorKind) -> ProviderError:
        return ProviderError(
            f"anthropic stream for model {self.model!r} failed: {reason}",
            kind=kind,
            provider=self.name,
            model=self.model,
        )

    async def aclose(self) -> None:
        """Close the SDK client and its connection pool."""
        await self.client.close()

    def _arguments(self, request: ModelRequest) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        arguments: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": anthropic_messages(request.messages),
            **request.extra,
        }
        if system:
            arguments["system"] = system

        # `messages.create` in the anthropic SDK 2.17 has no `temperature` or `top_p`
        # parameter, so they are sent in the JSON body and the API decides whether
        # the model accepts them.
        sampling = {"temperature": request.temperature, "top_p": request.top_p}
        sampling = {key: value for key, value in sampling.items() if value is not None}
        if sampling:
            arguments["extra_body"] = {**arguments.get("extra_body", {}), **sampling}

        if request.stop:
            arguments["stop_sequences"] = list(request.stop)
        if request.tools:
            arguments["tools"] = [tool.to_anthropic() for tool in request.tools]
            if request.tool_choice is not None:
                arguments["tool_choice"] = _anthropic_tool_choice(request.tool_choice)
            if request.parallel_tool_calls is False and request.tool_choice != "none":
                # Anthropic sets this on the tool choice, which is then needed even for auto.
                choice = arguments.get("tool_choice", {"type": "auto"})
                arguments["tool_choice"] = {**choice, "disable_parallel_tool_use": True}
        if request.output_schema is not None:
            arguments["tools"] = [
                {
                    "name": OUTPUT_TOOL,
                    "description": "Return the answer in the required structure.",
                    "input_schema": request.output_schema,
                }
            ]
            arguments["tool_choice"] = {"type": "tool", "name": OUTPUT_TOOL}
        return arguments

    def _response(self, message: Any, *, forced_tool: bool) -> ModelResponse:
        if message.stop_reason == "refusal":
            raise _refusal_error(self.name, self.model, message)
        texts: list[str] = []
        tool_calls: list[ToolCall] = []
        for block in message.content:
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "tool_use":
                tool_calls.append(
                    ToolCall(id=block.id, name=block.name, arguments=json.dumps(block.input))
                )
        finish = _STOP_REASONS.get(message.stop_reason or "end_turn", "stop")
        text = "".join(texts)
        forced = [call for call in tool_calls if call.name == OUTPUT_TOOL] if forced_tool else []
        if forced:
            text = forced[0].arguments
            tool_calls = [call for call in tool_calls if call.name != OUTPUT_TOOL]
            finish = "stop" if finish == "tool_calls" else finish
        return ModelResponse(
            text=text,
            model=message.model or self.model,
            finish_reason=finish,
            usage=usage_from_anthropic(message.usage),
            response_id=message.id,
            tool_calls=tuple(tool_calls),
        )

    def _translate(self, error: anthropic.APIError) -> ProviderError:
        secrets = (self.client.api_key,)
        # Unlike the `openai` SDK, this one keeps the whole body in `error.body`.
        translated = translate_sdk_error(
            error, anthropic, provider=self.name, model=self.model, body=lambda status_error: status_error.body, secrets=secrets
        )
        if translated is not None:
            return translated
        return ProviderError(
            redact_secrets(
                f"anthropic request for model {self.model!r} failed: {error.message}", secrets
            ),
            kind=ErrorKind.BAD_REQUEST,
            provider=self.name,
            model=self.model,
        )


def anthropic_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Convert the conversation to Messages API turns; system messages go elsewhere.

    An assistant message's tool calls become ``tool_use`` blocks after its
    text. Tool messages become ``tool_result`` blocks of a user turn, and
    consecutive ones share that turn, because the API expects every result
    of one assistant turn in the single user turn that follows it.
    """
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": message.content,
            }
            if message.is_error:
                block["is_error"] = True
            previous = turns[-1] if turns else None
            if previous is not None and previous["role"] == "user" and _is_result_turn(previous):
                previous["content"].append(block)
            else:
                turns.append({"role": "user", "content": [block]})
        elif message.role == "assistant" and message.tool_calls:
            blocks: list[dict[str, Any]] = []
            if message.content:
                blocks.append({"type": "text", "text": message.content})
            blocks += [
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input_object()}
                for call in message.tool_calls
            ]
            turns.append({"role": "assistant", "content": blocks})
        elif message.role in ("user", "assistant"):
            turns.append({"role": message.role, "content": message.content})
    return turns


def _is_result_turn(turn: dict[str, Any]) -> bool:
    content = turn["content"]
    return isinstance(content, list) and all(block["type"] == "tool_result" for block in content)


def _anthropic_tool_choice(choice: str) -> dict[str, Any]:
    """Map ``auto``, ``none``, ``required`` and a tool name to the Messages API's tool_choice."""
    if choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    return {"type": "tool", "name": choice}


def _kind_from_body(body: object) -> ErrorKind | None:
    """Return the kind that the body's error type or code names, or None for a catch-all.

    ``api_error`` and ``invalid_request_error`` are catch-alls, so they give None
    and leave the decision to the caller.
    """
    return kind_from_codes(parse_error_body(body))


def _refusal_error(provider: str, model: str, message: Any) -> ProviderError:
    """Build the error for a reply that Anthropic's safety classifiers stopped.

    Such a reply has status 200 and may carry the text written before the
    classifier stepped in, which is not an answer, so it is dropped.
    """
    partial = sum(len(block.text) for block in message.content if block.type == "text")
    return ProviderError(
        f"{provider} response for model {model!r} has no usable output: a safety "
        f"classifier stopped it (stop_reason refusal) after {partial} characters of text",
        kind=ErrorKind.CONTENT_FILTER,
        provider=provider,
        model=model,
        status_code=200,
    )


def usage_from_anthropic(usage: Any) -> Usage:
    """Convert Anthropic usage; its ``input_tokens`` excludes cache reads and writes, so add them."""
    cache_read = getattr(usage, "cache_read_input_tokens", None) or 0
    cache_write = getattr(usage, "cache_creation_input_tokens", None) or 0
    details = getattr(usage, "output_tokens_details", None)
    return Usage(
        input_tokens=(usage.input_tokens or 0) + cache_read + cache_write,
        output_tokens=usage.output_tokens or 0,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=getattr(details, "thinking_tokens", None) or 0,
    )


def _stream_error_kind(body: object) -> ErrorKind:
    """Map the body of a mid-stream ``error`` event to a kind.

    The status of a streamed response is 200, so unlike `_kind_from_body` this
    cannot fall back to the status. ``api_error`` and unknown types count as
    server errors.
    """
    kind = _kind_from_body(body)
    if kind is not None:
        return kind
    error = body.get("error") if isinstance(body, dict) else None
    error_type = error.get("type") if isinstance(error, dict) else None
    if error_type in ("invalid_request_error", "request_too_large"):
        return ErrorKind.BAD_REQUEST
    return ErrorKind.SERVER_ERROR


class _StreamedBlock:
    """One content block assembled from its ``content_block_*`` events."""

    def __init__(self, block: Any) -> None:
        self.type = block.type
        self.id = getattr(block, "id", "") or ""
        self.name = getattr(block, "name", "") or ""
        self.start_input = getattr(block, "input", None)
        self.parts: list[str] = []

    def arguments(self) -> str:
        if self.parts:
            return "".join(self.parts)
        # A tool whose input is empty may send no input_json_delta at all.
        return json.dumps(self.start_input or {})


class _StreamedMessage:
    """The parts of a Message gathered from its stream events."""

    def __init__(self, *, forced_tool: bool) -> None:
        self.forced_tool = forced_tool
        self.response_id: str | None = None
        self.model = ""
        self.stop_reason: str | None = None
        self.stopped = False
        self.blocks: dict[int, _StreamedBlock] = {}
        self._start_usage: Any = None
        self._delta_usage: Any = None

    def add(self, event: Any) -> str:
        """Take in one event and return the text delta it carries, or an empty string."""
        if event.type == "message_start":
            self.response_id = event.message.id
            self.model = event.message.model or ""
            self._start_usage = event.message.usage
        elif event.type == "content_block_start":
            self.blocks[event.index] = _StreamedBlock(event.content_block)
        elif event.type == "content_block_delta":
            return self._add_delta(event)
        elif event.type == "message_delta":
            self.stop_reason = event.delta.stop_reason or self.stop_reason
            self._delta_usage = event.usage
        elif event.type == "message_stop":
            self.stopped = True
        return ""

    def _add_delta(self, event: Any) -> str:
        block = self.blocks.get(event.index)
        delta = event.delta
        if block is None:
            return ""
        if delta.type == "text_delta":
            block.parts.append(delta.text)
            # With an output schema the forced tool's input is the output, so
            # text blocks are not streamed, as `_response` drops them too.
            return "" if self.forced_tool else delta.text
        if delta.type == "input_json_delta":
            block.parts.append(delta.partial_json)
            return delta.partial_json if self._is_output_block(block) else ""
        return ""

    def _is_output_block(self, block: _StreamedBlock) -> bool:
        return self.forced_tool and block.type == "tool_use" and block.name == OUTPUT_TOOL

    def usage(self) -> Usage:
        """Merge the counts of ``message_start`` with the later ones of ``message_delta``.

        ``message_delta`` counts are cumulative, so each one it sets replaces
        the earlier count.
        """
        merged = SimpleNamespace(
            input_tokens=0,
            output_tokens=0,
            cache_read_input_tokens=0,
            cache_creation_input_tokens=0,
            output_tokens_details=None,
        )
        for source in (self._start_usage, self._delta_usage):
            for name in vars(merged):
                value = getattr(source, name, None)
                if value is not None:
                    setattr(merged, name, value)
        return usage_from_anthropic(merged)

    def response(self, default_model: str) -> ModelResponse:
        blocks = [self.blocks[index] for index in sorted(self.blocks)]
        text = "".join("".join(block.parts) for block in blocks if block.type == "text")
        tool_blocks = [block for block in blocks if block.type == "tool_use"]
        finish = _STOP_REASONS.get(self.stop_reason or "end_turn", "stop")
        output = next((block for block in tool_blocks if self._is_output_block(block)), None)
        if output is not None:
            text = output.arguments()
            tool_blocks = [block for block in tool_blocks if block is not output]
            finish = "stop" if finish == "tool_calls" else finish
        tool_calls = tuple(
            ToolCall(id=block.id, name=block.name, arguments=block.arguments())
            for block in tool_blocks
        )
        return ModelResponse(
            text=text,
            model=self.model or default_model,
            finish_reason=finish,
            usage=self.usage(),
            response_id=self.response_id,
            tool_calls=tool_calls,
        )
