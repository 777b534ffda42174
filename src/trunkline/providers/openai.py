"""OpenAI, Azure OpenAI and any OpenAI-compatible server through the official SDK.

A plain (non-Azure) client that the adapter built itself sends its
non-streamed completions through `HttpPool` instead of the SDK's transport:
the same URL, headers and body, with errors classified as the SDK path
classifies them. Streams, Azure and clients built by the caller go through
the SDK.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
from openai.types.chat import ChatCompletion
from pydantic_core import from_json

from trunkline.errors import ErrorKind, ProviderError
from trunkline.providers.base import (
    Provider,
    estimate_tokens,
    http_error,
    kind_from_codes,
    parse_error_body,
    redact_secrets,
    transport_error,
    translate_sdk_error,
)
from trunkline.providers.openai_http import (
    CHAT_PATH,
    HttpPool,
    encode_body,
    error_body,
    pool_for_client,
)
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
        # Built on the first call, inside the event loop; None keeps the SDK transport.
        self._pool: HttpPool | None = None
        self._pool_checked = False

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
        if not self._pool_checked:
            self._pool = pool_for_client(self.client)
            self._pool_checked = True
        if self._pool is not None:
            return await self._complete_over_pool(self._pool, request)
        return await self._complete_over_sdk(request)

    async def _complete_over_sdk(self, request: ModelRequest) -> ModelResponse:
        try:
            # The body is built from an already validated request, so it is
            # posted as it is: `chat.completions.create` would first run the
            # SDK's TypedDict transform over it, about 0.3 ms of CPU a call
            # (openai 3.60, measured on a 2-core VM). Errors, the Azure URL
            # rewrite and the response model are the same on both paths.
            completion = await self.client.post(
                CHAT_PATH, body=self._arguments(request), cast_to=ChatCompletion
            )
        except openai.APIError as error:
            raise self._translate(error) from error
        return self._response(completion, request)

    async def _complete_over_pool(self, pool: HttpPool, request: ModelRequest) -> ModelResponse:
        """Send the request as the SDK would, and read the reply as the SDK path reads it."""
        secrets = (self.client.api_key,)
        try:
            reply = await pool.post(CHAT_PATH, encode_body(self._arguments(request)))
        except OSError as error:
            # The SDK wraps every transport failure in APIConnectionError("Connection error.").
            cause = str(error) or type(error).__name__
            raise transport_error(
                provider=self.name,
                model=self.model,
                kind=ErrorKind.CONNECTION,
                detail=f"Connection error. ({cause})",
                secrets=secrets,
            ) from error
        if 300 <= reply.status < 400:
            # The SDK follows redirects; rare enough to leave to it.
            return await self._complete_over_sdk(request)
        if not 200 <= reply.status < 300:
            raise http_error(
                provider=self.name,
                model=self.model,
                status=reply.status,
                body=error_body(reply.text()),
                headers=reply.headers,
                secrets=secrets,
            )
        # A body that is not JSON, or has no choices, fails here as it does in
        # the SDK path, and the router records it as a malformed response.
        return self._response(from_json(reply.body), request)

    async def stream(self, request: ModelRequest) -> AsyncIterator[str | ModelResponse]:
        """Stream the completion's text deltas, then yield the response assembled from its chunks.

        The request sets ``stream_options.include_usage``, so the server sends
        the usage in a last chunk. A server that sends none gets its usage
        estimated and marked as estimated. A stream that ends without a finish
        reason was cut off, so it raises `ProviderError` with kind connection.
        """
        arguments = self._arguments(request)
        arguments["stream"] = True
        arguments["stream_options"] = {
            "include_usage": True,
            **(arguments.get("stream_options") or {}),
        }
        try:
            chunks = await self.client.chat.completions.create(**arguments)
        except openai.APIError as error:
            raise self._translate(error) from error

        completion = _StreamedCompletion()
        # Leaving the block closes the HTTP response, also when the consumer
        # stops early (GeneratorExit) or is cancelled.
        async with chunks:
            while (chunk := await self._next_chunk(chunks)) is not None:
                delta = completion.add(chunk)
                if delta:
                    yield delta

        if completion.finish_reason is None:
            raise self._stream_failure(
                "the stream ended before a finish reason", ErrorKind.CONNECTION
            )
        response = completion.response(request, self.model)
        if response.finish_reason == "content_filter" and not response.text and not response.tool_calls:
            raise _filtered_output_error(
                self.name, self.model, "a content filter removed the output (finish_reason content_filter)"
            )
        yield response

    async def _next_chunk(self, chunks: Any) -> Any | None:
        """Return the next chunk, or None at the end, as a `ProviderError` on any failure."""
        try:
            return await anext(chunks)
        except StopAsyncIteration:
            return None
        except openai.APIError as error:
            raise self._translate(error) from error
        except json.JSONDecodeError as error:
            raise self._stream_failure(
                f"the server sent an event that is not JSON: {error}", ErrorKind.SERVER_ERROR
            ) from error
        except _TRANSPORT_ERRORS as error:
            raise self._stream_failure(
                f"reading the stream failed: {error!r}", ErrorKind.CONNECTION
            ) from error

    def _stream_failure(self, reason: str, kind: ErrorKind) -> ProviderError:
        return ProviderError(
            f"{self.name} stream for model {self.model!r} failed: {reason}",
            kind=kind,
            provider=self.name,
            model=self.model,
        )

    async def aclose(self) -> None:
        """Close the SDK client and the connection pools."""
        if self._pool is not None:
            await self._pool.aclose()
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
        if request.tools:
            arguments["tools"] = [tool.to_openai() for tool in request.tools]
            if request.tool_choice is not None:
                arguments["tool_choice"] = _openai_tool_choice(request.tool_choice)
            if request.parallel_tool_calls is not None:
                arguments["parallel_tool_calls"] = request.parallel_tool_calls
        if request.output_schema is not None:
            schema = request.output_schema
            arguments["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": is_strict_schema(schema)},
            }
        return arguments

    def _response(self, completion: Any, request: ModelRequest) -> ModelResponse:
        """Read a completion, an SDK response model or its decoded JSON, into a `ModelResponse`."""
        choice = _field(completion, "choices")[0]
        message = _field(choice, "message")
        tool_calls = tuple(
            ToolCall(
                id=_field(call, "id"),
                name=_field(function, "name"),
                arguments=_field(function, "arguments"),
            )
            for call in (_field(message, "tool_calls") or [])
            if (function := _field(call, "function")) is not None
        )
        text = _field(message, "content") or ""
        if not text and not tool_calls:
            reason = _empty_output_reason(choice, message)
            if reason is not None:
                raise _filtered_output_error(self.name, self.model, reason)
        return ModelResponse(
            text=text,
            model=_field(completion, "model") or self.model,
            finish_reason=_FINISH_REASONS.get(_field(choice, "finish_reason") or "stop", "stop"),
            usage=usage_from_openai(_field(completion, "usage"), request, text),
            response_id=_field(completion, "id"),
            model_version=_field(completion, "system_fingerprint"),
            tool_calls=tool_calls,
        )

    def _translate(self, error: openai.APIError) -> ProviderError:
        secrets = (self.client.api_key,)
        translated = translate_sdk_error(
            error, openai, provider=self.name, model=self.model, body=_error_body, secrets=secrets
        )
        if translated is not None:
            return translated
        # An `error` event inside a stream, or a body the SDK could not parse,
        # has no status, so only a known code in the body can refine the kind.
        # Without one, the fault is the server's: the request was accepted.
        kind = kind_from_codes(parse_error_body(error.body)) or ErrorKind.SERVER_ERROR
        return ProviderError(
            redact_secrets(
                f"{self.name} request for model {self.model!r} failed: {error.message}", secrets
            ),
            kind=kind,
            provider=self.name,
            model=self.model,
        )


def _openai_tool_choice(choice: str) -> str | dict[str, Any]:
    """Return ``auto``, ``none`` and ``required`` as they are, and a tool name as the forcing object."""
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def _error_body(error: openai.APIStatusError) -> object:
    """Return the whole decoded error body.

    The SDK keeps only the object under ``"error"`` in ``error.body``, which
    loses the fields beside it, such as text-generation-inference's
    ``error_type``. When ``error.body`` is set, the SDK has read the response,
    so its text is available.
    """
    if error.body is None:
        return None
    try:
        return json.loads(error.response.text)
    except ValueError:
        return error.body


def _empty_output_reason(choice: Any, message: Any) -> str | None:
    """Return why a 200 reply without text or tool calls was blocked, or None.

    Azure OpenAI and OpenAI set finish_reason ``content_filter`` when a filter
    removed the output, and OpenAI's structured outputs put a safety refusal
    in ``message.refusal`` instead of the content.
    """
    if _field(choice, "finish_reason") == "content_filter":
        categories = _filtered_categories(_field(choice, "content_filter_results"))
        suffix = f", filtered categories: {', '.join(categories)}" if categories else ""
        return f"a content filter removed the output (finish_reason content_filter{suffix})"
    refusal = _field(message, "refusal")
    if isinstance(refusal, str) and refusal.strip():
        return f"the model refused: {refusal.strip()}"
    return None


def _filtered_categories(results: object) -> list[str]:
    """List the categories that Azure's ``content_filter_results`` marks as filtered."""
    if not isinstance(results, dict):
        return []
    return [
        name
        for name, result in results.items()
        if isinstance(result, dict) and result.get("filtered") is True
    ]


def _field(source: Any, name: str) -> Any:
    """Read `name` from decoded JSON or from an SDK response model; None when it is absent.

    The SDK builds its response models without validation, so a field the
    server left out is missing there too, and both shapes read it as None.
    """
    if isinstance(source, dict):
        return source.get(name)
    return getattr(source, name, None)


def is_strict_schema(schema: Any) -> bool:
    """Return whether OpenAI's strict structured outputs accept `schema` as it is.

    Strict mode requires every object to list all its properties as
    required and to set ``additionalProperties`` to false. Other schemas are
    sent with ``strict`` false, and the router still validates the reply.
    """
    if isinstance(schema, list):
        return all(is_strict_schema(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            return False
        if set(schema.get("required", [])) != set(properties):
            return False
    return all(is_strict_schema(value) for value in schema.values() if isinstance(value, dict | list))


def _filtered_output_error(provider: str, model: str, reason: str) -> ProviderError:
    return ProviderError(
        f"{provider} response for model {model!r} has no usable output: {reason}",
        kind=ErrorKind.CONTENT_FILTER,
        provider=provider,
        model=model,
        status_code=200,
    )


def usage_from_openai(usage: Any, request: ModelRequest, output: str) -> Usage:
    """Convert an OpenAI ``usage`` object or its decoded JSON, cached and reasoning details included.

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
    prompt_details = _field(usage, "prompt_tokens_details")
    completion_details = _field(usage, "completion_tokens_details")
    return Usage(
        input_tokens=_field(usage, "prompt_tokens") or 0,
        output_tokens=_field(usage, "completion_tokens") or 0,
        cache_read_tokens=_field(prompt_details, "cached_tokens") or 0,
        cache_write_tokens=_field(prompt_details, "cache_write_tokens") or 0,
        reasoning_tokens=_field(completion_details, "reasoning_tokens") or 0,
    )


def _transport_error_types() -> tuple[type[BaseException], ...]:
    """Collect the read errors that can escape the SDK's own wrapping mid-stream.

    The SDK turns most transport failures into `openai.APIConnectionError`.
    These are the rest, from `httpx2` (openai 3.x) and `httpx` (older SDKs, or a
    caller's own client), whichever is installed.
    """
    errors: list[type[BaseException]] = [OSError]
    for name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        errors += [module.HTTPError, module.StreamError]
    return tuple(errors)


_TRANSPORT_ERRORS = _transport_error_types()


class _ToolCallParts:
    """One tool call assembled from its deltas, which share an index."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []

    def add(self, delta: Any) -> None:
        if delta.id:
            self.id = delta.id
        function = delta.function
        if function is None:
            return
        if function.name:
            self.name = function.name
        if function.arguments:
            self.arguments.append(function.arguments)

    def to_tool_call(self) -> ToolCall:
        # Some compatible servers send no call id, and a reply must name one.
        call_id = self.id or f"call_{self.index}"
        return ToolCall(id=call_id, name=self.name, arguments="".join(self.arguments))


class _StreamedCompletion:
    """The parts of a chat completion gathered from its stream chunks.

    Only the first choice is kept, as `OpenAIProvider._response` keeps it.
    """

    def __init__(self) -> None:
        self.text: list[str] = []
        self.finish_reason: str | None = None
        self.model = ""
        self.response_id: str | None = None
        self.system_fingerprint: str | None = None
        self.usage: Any = None
        self.tool_calls: dict[int, _ToolCallParts] = {}

    def add(self, chunk: Any) -> str:
        """Take in one chunk and return its text delta, or an empty string."""
        # Azure sends a first chunk with only content filter results and an empty model.
        self.model = chunk.model or self.model
        self.response_id = self.response_id or chunk.id or None
        fingerprint = getattr(chunk, "system_fingerprint", None)
        self.system_fingerprint = fingerprint or self.system_fingerprint
        if chunk.usage is not None:
            self.usage = chunk.usage
        # The usage chunk has no choices, and some compatible servers send null there.
        choice = next((item for item in chunk.choices or [] if item.index == 0), None)
        if choice is None:
            return ""
        if choice.finish_reason:
            self.finish_reason = choice.finish_reason
        delta = choice.delta
        if delta is None:
            return ""
        for call in delta.tool_calls or []:
            self.tool_calls.setdefault(call.index, _ToolCallParts(call.index)).add(call)
        if delta.content:
            self.text.append(delta.content)
            return delta.content
        return ""

    def response(self, request: ModelRequest, default_model: str) -> ModelResponse:
        text = "".join(self.text)
        tool_calls = [self.tool_calls[index].to_tool_call() for index in sorted(self.tool_calls)]
        return ModelResponse(
            text=text,
            model=self.model or default_model,
            finish_reason=_FINISH_REASONS.get(self.finish_reason or "stop", "stop"),
            usage=usage_from_openai(self.usage, request, text),
            response_id=self.response_id,
            model_version=self.system_fingerprint,
            tool_calls=tuple(tool_calls),
        )
