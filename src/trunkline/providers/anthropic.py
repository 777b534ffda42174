"""Anthropic's Messages API through the official SDK."""

from __future__ import annotations

import json
from typing import Any

import anthropic

from trunkline.errors import ErrorKind, ProviderError
from trunkline.providers.base import Provider, kind_from_status, parse_retry_after
from trunkline.types.calls import FinishReason, ModelRequest, ModelResponse
from trunkline.types.messages import ToolCall
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

    async def aclose(self) -> None:
        """Close the SDK client and its connection pool."""
        await self.client.close()

    def _arguments(self, request: ModelRequest) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        arguments: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": [
                {"role": m.role, "content": m.content}
                for m in request.messages
                if m.role in ("user", "assistant")
            ],
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
        status: int | None = None
        headers: dict[str, str] | None = None
        if isinstance(error, anthropic.APITimeoutError):
            kind = ErrorKind.TIMEOUT
        elif isinstance(error, anthropic.APIConnectionError):
            kind = ErrorKind.CONNECTION
        elif isinstance(error, anthropic.APIStatusError):
            status = error.status_code
            headers = dict(error.response.headers)
            kind = _kind_from_body(error.body) or kind_from_status(status, str(error.body))
        else:
            kind = ErrorKind.BAD_REQUEST
        return ProviderError(
            f"anthropic request for model {self.model!r} failed: {error}",
            kind=kind,
            provider=self.name,
            model=self.model,
            status_code=status,
            retry_after_s=parse_retry_after(headers),
        )


# `api_error` is left out on purpose because it is Anthropic's catch-all type.
# The status decides instead, so a 503 maps to overloaded rather than server_error.
_ERROR_TYPES = {
    "overloaded_error": ErrorKind.OVERLOADED,
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "authentication_error": ErrorKind.AUTH,
    "permission_error": ErrorKind.AUTH,
    "not_found_error": ErrorKind.NOT_FOUND,
    "timeout_error": ErrorKind.TIMEOUT,
}


def _kind_from_body(body: object) -> ErrorKind | None:
    """Read the Anthropic error type, which is more precise than the status code."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    error_type = error.get("type") if isinstance(error, dict) else None
    return _ERROR_TYPES.get(error_type) if isinstance(error_type, str) else None


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
