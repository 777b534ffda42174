"""OpenAI, Azure OpenAI and any OpenAI-compatible server through the official SDK."""

from __future__ import annotations

from typing import Any

import openai

from trunkline.errors import ErrorKind, ProviderError
from trunkline.providers.base import Provider, estimate_tokens, kind_from_status, parse_retry_after
from trunkline.types.calls import FinishReason, ModelRequest, ModelResponse
from trunkline.types.messages import ToolCall
from trunkline.types.usage import Usage

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


class OpenAIProvider(Provider):
    """Chat completions over the `openai` SDK, with the SDK's own retries off.

    The router owns retries and timeouts, so the client is built with
    ``max_retries=0`` and no timeout of its own.
    """

    name = "openai"

    def __init__(self, client: openai.AsyncOpenAI, model: str) -> None:
        self.client = client
        self.model = model

    @classmethod
    def create(
        cls,
        model: str,
        *,
        api_key: str | None,
        base_url: str | None = None,
        azure_api_version: str | None = None,
    ) -> OpenAIProvider:
        """Build a provider for OpenAI, or for Azure OpenAI when `azure_api_version` is set."""
        if azure_api_version is not None:
            client: openai.AsyncOpenAI = openai.AsyncAzureOpenAI(
                azure_endpoint=base_url,
                api_version=azure_api_version,
                api_key=api_key,
                max_retries=0,
                timeout=None,
            )
            provider = cls(client, model)
            provider.name = "azure"
            return provider
        client = openai.AsyncOpenAI(
            # A compatible local server often needs no key, but the SDK insists on one.
            api_key=api_key or "not-needed",
            base_url=base_url,
            max_retries=0,
            timeout=None,
        )
        return cls(client, model)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        try:
            completion = await self.client.chat.completions.create(**self._arguments(request))
        except openai.APIError as error:
            raise self._translate(error) from error
        return self._response(completion, request)

    async def aclose(self) -> None:
        """Close the SDK client and its connection pool."""
        await self.client.close()

    def _arguments(self, request: ModelRequest) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": request.model,
            "messages": [message.to_openai() for message in request.messages],
            **request.parameters(),
            **request.extra,
        }
        if "max_tokens" in arguments and request.extra.get("use_max_completion_tokens"):
            arguments["max_completion_tokens"] = arguments.pop("max_tokens")
        arguments.pop("use_max_completion_tokens", None)
        if request.output_schema is not None:
            arguments["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.output_schema},
            }
        return arguments

    def _response(self, completion: Any, request: ModelRequest) -> ModelResponse:
        choice = completion.choices[0]
        message = choice.message
        tool_calls = tuple(
            ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments)
            for call in (message.tool_calls or [])
            if getattr(call, "function", None) is not None
        )
        return ModelResponse(
            text=message.content or "",
            model=completion.model or self.model,
            finish_reason=_FINISH_REASONS.get(choice.finish_reason or "stop", "stop"),
            usage=usage_from_openai(completion.usage, request, message.content or ""),
            response_id=completion.id,
            model_version=getattr(completion, "system_fingerprint", None),
            tool_calls=tool_calls,
        )

    def _translate(self, error: openai.APIError) -> ProviderError:
        if isinstance(error, openai.APITimeoutError):
            kind, status, headers = ErrorKind.TIMEOUT, None, None
        elif isinstance(error, openai.APIConnectionError):
            kind, status, headers = ErrorKind.CONNECTION, None, None
        elif isinstance(error, openai.APIStatusError):
            status = error.status_code
            headers = dict(error.response.headers)
            kind = kind_from_status(status, _body_text(error))
        else:
            kind, status, headers = ErrorKind.BAD_REQUEST, None, None
        return ProviderError(
            f"{self.name} request for model {self.model!r} failed: {error}",
            kind=kind,
            provider=self.name,
            model=self.model,
            status_code=status,
            retry_after_s=parse_retry_after(headers),
        )


def _body_text(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        return " ".join(str(value) for value in body.values()) + f" {error.message}"
    return f"{body or ''} {error.message}"


def usage_from_openai(usage: Any, request: ModelRequest, output: str) -> Usage:
    """Convert an OpenAI ``usage`` object, cached and reasoning details included.

    Some compatible servers send no usage. The counts are then estimated
    from the text and marked as estimated, so the call is never priced as free.
    """
    if usage is None:
        prompt = "".join(message.content for message in request.messages)
        return Usage(
            input_tokens=estimate_tokens(prompt),
            output_tokens=estimate_tokens(output) if output else 0,
            estimated=True,
        )
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cache_read_tokens=getattr(prompt_details, "cached_tokens", None) or 0,
        cache_write_tokens=getattr(prompt_details, "cache_write_tokens", None) or 0,
        reasoning_tokens=getattr(completion_details, "reasoning_tokens", None) or 0,
    )
