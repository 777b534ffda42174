"""The interface every provider adapter implements, and helpers they share."""

from __future__ import annotations

import abc
import email.utils
import math
import time
from collections.abc import AsyncIterator, Mapping

from trunkline.errors import ErrorKind
from trunkline.types.calls import ModelRequest, ModelResponse


class Provider(abc.ABC):
    """One way of reaching models: an SDK client, the local model or a fake.

    `complete` makes exactly one attempt. It returns a `ModelResponse` or
    raises `ProviderError` with an `ErrorKind`. Retrying and falling back are
    the router's work, so adapters turn their SDK's own retries off.
    """

    #: Adapter name recorded in every attempt, such as ``openai``.
    name: str = "provider"

    @abc.abstractmethod
    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Send `request` once and return the response."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[str | ModelResponse]:
        """Send `request` once as a stream: yield text deltas, then the final response.

        The last item is always a `ModelResponse` whose text is the whole
        output and whose usage is the provider's count for the stream. A
        failure before or during the stream raises `ProviderError`; the
        caller keeps the deltas it already received. Adapters without a
        streaming mode inherit this version, which yields the whole text at once.
        """
        response = await self.complete(request)
        if response.text:
            yield response.text
        yield response

    async def aclose(self) -> None:
        """Release connections; the default has nothing to release."""


def estimate_tokens(text: str) -> int:
    """Estimate a token count at four characters a token, the usual rule for English."""
    return max(1, math.ceil(len(text) / 4))


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Return the wait a response requests in seconds, or None.

    ``retry-after-ms`` (OpenAI, Azure) wins over ``Retry-After``, which may
    be a number of seconds or an HTTP date (RFC 9110, section 10.2.3).
    """
    if not headers:
        return None
    lowered = {key.lower(): value for key, value in headers.items()}
    milliseconds = lowered.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(float(milliseconds) / 1000.0, 0.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(moment.timestamp() - current, 0.0)


# Fragments that providers put in 400 bodies when the prompt is too long.
# OpenAI: "context_length_exceeded" / "maximum context length";
# Anthropic: "prompt is too long"; llama.cpp: "exceed context window".
_CONTEXT_LENGTH_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "prompt is too long",
    "exceed context window",
    "context window",
)


def kind_from_status(status: int, body: str = "") -> ErrorKind:
    """Map an HTTP status and its error body to an `ErrorKind`."""
    lowered = body.lower()
    if status in (400, 413, 422):
        if any(marker in lowered for marker in _CONTEXT_LENGTH_MARKERS):
            return ErrorKind.CONTEXT_LENGTH
        if "content_filter" in lowered or "content_policy" in lowered:
            return ErrorKind.CONTENT_FILTER
        return ErrorKind.BAD_REQUEST
    if status in (401, 403):
        return ErrorKind.AUTH
    if status == 404:
        return ErrorKind.NOT_FOUND
    if status == 408:
        return ErrorKind.TIMEOUT
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status in (503, 529):
        return ErrorKind.OVERLOADED
    if status >= 500:
        return ErrorKind.SERVER_ERROR
    return ErrorKind.BAD_REQUEST
