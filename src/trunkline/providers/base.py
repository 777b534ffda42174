"""The interface every provider adapter implements, and helpers they share."""

from __future__ import annotations

import abc
import email.utils
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from trunkline.errors import ErrorKind, ProviderError
from trunkline.redaction import redact
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
    milliseconds = _finite(lowered.get("retry-after-ms"))
    if milliseconds is not None:
        return max(milliseconds / 1000.0, 0.0)
    value = lowered.get("retry-after")
    if value is None:
        return None
    seconds = _finite(value)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(moment.timestamp() - current, 0.0)


def _finite(value: str | None) -> float | None:
    """Parse a header number; "nan", "inf" and text that is no number give None."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


# Error classification.
#
# `classify_error` reads a failed response in three steps. The body's error
# codes decide first, because providers document them and keep them stable.
# The HTTP status decides next. The message text is read last, and only to
# refine a status that is too coarse, such as a 400 that is really a
# context-window overflow, because wording changes between server versions.


@dataclass(frozen=True)
class ErrorBody:
    """The parts of a provider's error body that describe the failure.

    Attributes:
        message: the provider's own message, or "" when the body has none.
        codes: the error codes, types and statuses found in the body, as sent,
            most specific first, such as ``enforced_spend_limit_reached``
            before ``rate_limit_error``. Numeric codes are left out because
            they repeat the HTTP status.
    """

    message: str = ""
    codes: tuple[str, ...] = ()


# Error codes and types that decide the kind whatever the status, keyed in
# lowercase. Catch-all types (`invalid_request_error`, `api_error`,
# `server_error`, Gemini's `INVALID_ARGUMENT`) are left out so the status and
# the message decide instead.
_CODE_KINDS: dict[str, ErrorKind] = {
    # OpenAI, Azure OpenAI, Groq and other compatible servers.
    "context_length_exceeded": ErrorKind.CONTEXT_LENGTH,
    # llama.cpp server (`llama-server`).
    "exceed_context_size_error": ErrorKind.CONTEXT_LENGTH,
    # Azure OpenAI's prompt filter, as `error.code` and `error.innererror.code`.
    "content_filter": ErrorKind.CONTENT_FILTER,
    "responsibleaipolicyviolation": ErrorKind.CONTENT_FILTER,
    # OpenAI's safety system, and its prompt check on reasoning models.
    "content_policy_violation": ErrorKind.CONTENT_FILTER,
    "invalid_prompt": ErrorKind.CONTENT_FILTER,
    # OpenAI sends these with status 429, but waiting does not bring access back.
    "insufficient_quota": ErrorKind.QUOTA_EXCEEDED,
    "credit_balance_exhausted": ErrorKind.QUOTA_EXCEEDED,
    "organization_spend_limit_exceeded": ErrorKind.QUOTA_EXCEEDED,
    "project_spend_limit_exceeded": ErrorKind.QUOTA_EXCEEDED,
    "organization_usage_limit_exceeded": ErrorKind.QUOTA_EXCEEDED,
    # Anthropic: 402 `billing_error`, and `error.details.error_code` on the 429
    # sent once the usage tier's monthly spend cap is reached.
    "billing_error": ErrorKind.QUOTA_EXCEEDED,
    "enforced_spend_limit_reached": ErrorKind.QUOTA_EXCEEDED,
    # Groq returns 400 with this code once an organization reaches its spend limit.
    "blocked_api_access": ErrorKind.QUOTA_EXCEEDED,
    "rate_limit_exceeded": ErrorKind.RATE_LIMITED,  # OpenAI, Groq
    "rate_limit_error": ErrorKind.RATE_LIMITED,  # Anthropic
    "overloaded_error": ErrorKind.OVERLOADED,  # Anthropic, with status 529
    "overloaded": ErrorKind.OVERLOADED,  # text-generation-inference, with status 429
    "invalid_api_key": ErrorKind.AUTH,  # OpenAI, Groq
    "authentication_error": ErrorKind.AUTH,  # Anthropic
    "permission_error": ErrorKind.AUTH,  # Anthropic
    "api_key_invalid": ErrorKind.AUTH,  # Gemini `ErrorInfo.reason`, with status 400
    "unsupported_country_region_territory": ErrorKind.AUTH,  # OpenAI, with status 403
    "model_not_found": ErrorKind.NOT_FOUND,  # OpenAI
    "not_found_error": ErrorKind.NOT_FOUND,  # Anthropic, Ollama
    "deploymentnotfound": ErrorKind.NOT_FOUND,  # Azure OpenAI
    "timeout_error": ErrorKind.TIMEOUT,  # Anthropic, with status 504
}

# The one table of context-window overflow messages, for servers that send no
# code or only a catch-all one. Each entry is matched case-insensitively
# anywhere in the provider's message, and tests/unit/test_error_kinds.py
# contains one real message for each.
_CONTEXT_LENGTH_MESSAGES: tuple[re.Pattern[str], ...] = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        # OpenAI and Azure OpenAI ("This model's maximum context length is N
        # tokens. However, your messages resulted in M tokens"), and vLLM's
        # OpenAI-compatible server in its older and current wording.
        r"maximum context length is \d+ tokens",
        # OpenAI's Responses API.
        r"input exceeds the context window",
        # Groq, whose message carries no numbers ("Please reduce the length of
        # the messages or completion."), and Cerebras.
        r"reduce the length of the messages",
        # Anthropic, for the prompt alone and for the prompt plus max_tokens.
        r"prompt is too long: \d+ tokens > \d+ maximum",
        r"input length and `max_tokens` exceed context limit",
        # llama.cpp server: "request (N tokens) exceeds the available context
        # size (M tokens), try increasing it", and without counts in older builds.
        r"exceeds the available context size",
        # llama.cpp server for inputs it cannot split, such as embeddings.
        r"is larger than the max context size",
        # llama-cpp-python's own check, which the local adapter catches (0.3.36).
        r"requested tokens \(\d+\) exceed context window of \d+",
        # text-generation-inference, status 422 ("Input validation error: ...").
        r"`inputs` tokens \+ `max_new_tokens` must be <= \d+",
        r"`inputs` must have less than \d+ tokens",
        # vLLM's engine check ("The decoder prompt (length N) is longer than the
        # maximum model length of M.").
        r"is longer than the maximum model length of \d+",
        # Ollama's runner when truncation is off, seen with status 400 and 500.
        r"the input length exceeds the context length",
        # NOTE: the next two forms come from client libraries that quote Ollama
        # and Mistral; neither was found in those projects' own sources or docs.
        r"prompt too long; exceeded (?:max )?context length",
        r"too large for model with \d+ maximum context length",
        # Gemini API.
        r"input token count \(\d+\) exceeds the maximum number of tokens allowed",
        # Code names that a proxy flattened into the message text.
        r"context_length_exceeded|exceed_context_size_error",
    )
)

# Message forms that turn a plain 400 into a content-filter failure.
_CONTENT_FILTER_MESSAGES = re.compile(
    r"content management policy"  # Azure OpenAI's prompt filter
    r"|flagged as potentially violating our usage policy"  # OpenAI reasoning models
    r"|rejected as a result of our safety system"  # OpenAI's safety system
    r"|\bcontent_filter\b",  # the Azure code name flattened into text
    re.IGNORECASE,
)

# Message forms that turn a 400 or a 429 into an exhausted quota. OpenAI's
# "You exceeded your current quota" is left out because OpenAI also sends the
# insufficient_quota code, and Gemini sends the same words for per-minute
# limits that clear within a minute.
_QUOTA_MESSAGES = re.compile(
    # Anthropic, status 400, for an organization or workspace spend limit.
    r"you have reached your specified (?:workspace )?api usage limits"
    # Anthropic, status 400, for an account without prepaid credit.
    r"|credit balance is too low"
    # Gemini, status 429, once a project reaches the spend cap it set.
    r"|exceeded its monthly spending cap"
    r"|\binsufficient_quota\b",
    re.IGNORECASE,
)

# Message forms that turn a plain 400 into an authentication failure. Gemini
# rejects an invalid key with 400 INVALID_ARGUMENT and "API key not valid.
# Please pass a valid API key."
_AUTH_MESSAGES = re.compile(r"api key not valid|pass a valid api key", re.IGNORECASE)

# The message on a rate-limit code when one request is larger than the whole
# per-minute token allowance. Groq sends it with status 413 and OpenAI with 429.
# Waiting cannot help, but a deployment on another tier or provider may take
# the request.
_OVER_RATE_LIMIT_MESSAGE = re.compile(
    r"request too large for .+ on tokens per min", re.IGNORECASE
)

_MAX_DETAIL_CHARS = 500

# Key formats that a provider may echo in a message: OpenAI and Anthropic
# (sk-...), Groq (gsk_...), xAI (xai-...) and Google (AIza...).


def parse_error_body(body: object) -> ErrorBody:
    """Read the message and codes from an error body in any provider's shape.

    `body` is the decoded JSON or its text. Handled shapes:

    - OpenAI's ``{"error": {...}}``, also sent by Azure and most compatible
      servers, or its inner object alone, which the `openai` SDK keeps as
      ``error.body``.
    - Anthropic's ``{"type": "error", "error": {...}}``.
    - The one-element list that Gemini's OpenAI-compatible endpoint sends.
    - The flat ``{"object": "error", "message": ...}`` of vLLM and Mistral.
    - ``{"error": "...", "error_type": ...}`` from text-generation-inference,
      and ``{"error": "..."}`` from Ollama's own API.

    Text that is not JSON becomes the message.
    """
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str):
        return _parse_error_text(body)
    if isinstance(body, list):
        first = next((item for item in body if isinstance(item, dict)), None)
        return ErrorBody() if first is None else _parse_error_object(first)
    if isinstance(body, dict):
        return _parse_error_object(body)
    return ErrorBody()


def _parse_error_text(text: str) -> ErrorBody:
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            decoded = json.loads(stripped)
        except ValueError:
            pass
        else:
            return parse_error_body(decoded)
    return ErrorBody(message=stripped)


def _parse_error_object(body: dict[str, Any]) -> ErrorBody:
    error = body.get("error")
    fields = error if isinstance(error, dict) else body
    message = _message_of(fields)
    if not message and isinstance(error, str):
        message = error.strip()
    return ErrorBody(message=message, codes=_codes_of(fields))


def _message_of(fields: dict[str, Any]) -> str:
    for key in ("message", "detail"):
        value = fields.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, (dict, list)) and value:
            # Mistral and FastAPI servers nest validation details here.
            return json.dumps(value, ensure_ascii=False)
    return ""


def _codes_of(fields: dict[str, Any]) -> tuple[str, ...]:
    codes: list[Any] = []
    innererror = fields.get("innererror")  # Azure OpenAI
    if isinstance(innererror, dict):
        codes.append(innererror.get("code"))
    details = fields.get("details")
    # Anthropic sends one object, Gemini a list of google.rpc detail objects.
    for detail in [details] if isinstance(details, dict) else details or []:
        if not isinstance(detail, dict):
            continue
        codes.extend((detail.get("error_code"), detail.get("reason")))
        for violation in detail.get("violations") or []:
            if isinstance(violation, dict):
                codes.append(violation.get("quotaId"))
    codes.extend(fields.get(key) for key in ("code", "type", "status", "error_type"))
    return tuple(
        code for code in codes if isinstance(code, str) and code and not code.isdigit()
    )


def classify_error(status: int, error: ErrorBody) -> ErrorKind:
    """Map an HTTP status and a parsed error body to an `ErrorKind`."""
    kind = kind_from_codes(error, status)
    if kind is not None:
        return kind
    return _refine_by_message(_kind_from_status(status), error.message)


def kind_from_status(status: int, body: object = "") -> ErrorKind:
    """Map an HTTP status and its error body, decoded or as text, to an `ErrorKind`."""
    return classify_error(status, parse_error_body(body))


def is_context_length_message(message: str) -> bool:
    """Return whether `message` is a known context-window overflow message of any provider."""
    return any(pattern.search(message) for pattern in _CONTEXT_LENGTH_MESSAGES)


def kind_from_codes(error: ErrorBody, status: int | None = None) -> ErrorKind | None:
    """Return the kind that the codes in `error` name, or None when none is known.

    This is the first step of `classify_error`, and on its own it classifies an
    error event inside a stream, which has no status of its own.
    """
    for code in error.codes:
        lowered = code.lower()
        # Gemini's daily quotas, such as GenerateRequestsPerDayPerProjectPerModel,
        # reset once a day, so retrying within the call cannot succeed.
        if "perday" in lowered:
            return ErrorKind.QUOTA_EXCEEDED
        kind = _CODE_KINDS.get(lowered)
        if kind is None:
            continue
        if kind is ErrorKind.RATE_LIMITED and (
            status == 413 or _OVER_RATE_LIMIT_MESSAGE.search(error.message)
        ):
            return ErrorKind.QUOTA_EXCEEDED
        return kind
    return None


def _kind_from_status(status: int) -> ErrorKind:
    if status in (401, 403):
        return ErrorKind.AUTH
    if status == 402:  # Payment Required: Anthropic's billing_error
        return ErrorKind.QUOTA_EXCEEDED
    if status == 404:
        return ErrorKind.NOT_FOUND
    if status in (408, 504):
        return ErrorKind.TIMEOUT
    if status == 409:
        # The `openai` 3.60 and `anthropic` 2.17 SDKs retry a 409 as a lock
        # timeout on the provider's side, and a completion has no other state.
        return ErrorKind.SERVER_ERROR
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status in (503, 529):
        return ErrorKind.OVERLOADED
    if status == 424 or status >= 500:
        # text-generation-inference sends 424 when generation fails on its side.
        return ErrorKind.SERVER_ERROR
    return ErrorKind.BAD_REQUEST


def _refine_by_message(kind: ErrorKind, message: str) -> ErrorKind:
    if not message:
        return kind
    # Server errors are included because some Ollama builds report an
    # over-long prompt with status 500.
    if kind in (ErrorKind.BAD_REQUEST, ErrorKind.SERVER_ERROR) and is_context_length_message(
        message
    ):
        return ErrorKind.CONTEXT_LENGTH
    if kind is ErrorKind.BAD_REQUEST and _CONTENT_FILTER_MESSAGES.search(message):
        return ErrorKind.CONTENT_FILTER
    if kind in (ErrorKind.BAD_REQUEST, ErrorKind.RATE_LIMITED) and _QUOTA_MESSAGES.search(
        message
    ):
        return ErrorKind.QUOTA_EXCEEDED
    if kind is ErrorKind.BAD_REQUEST and _AUTH_MESSAGES.search(message):
        return ErrorKind.AUTH
    return kind


def redact_secrets(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Replace API keys in `text`: each of `secrets`, every registered key and any known format."""
    return redact(text, tuple(secrets))


def translate_sdk_error(
    error: Exception,
    sdk: ModuleType,
    *,
    provider: str,
    model: str,
    body: Callable[[Any], object],
    secrets: Iterable[str | None] = (),
) -> ProviderError | None:
    """Translate the timeout, connection and status errors of the `openai` or `anthropic` SDK.

    Both SDKs name these classes alike. `body` reads a status error's body.
    Returns None for any other error, which the adapter translates itself.
    """
    if isinstance(error, sdk.APITimeoutError | sdk.APIConnectionError):
        cause = error.__cause__
        detail = f"{error.message} ({cause})" if cause is not None else error.message
        # The SDKs' timeout class is a subclass of their connection class.
        kind = ErrorKind.TIMEOUT if isinstance(error, sdk.APITimeoutError) else ErrorKind.CONNECTION
        return transport_error(
            provider=provider, model=model, kind=kind, detail=detail, secrets=secrets
        )
    if isinstance(error, sdk.APIStatusError):
        return http_error(
            provider=provider,
            model=model,
            status=error.status_code,
            body=body(error),
            headers=dict(error.response.headers),
            secrets=secrets,
        )
    return None


def http_error(
    *,
    provider: str,
    model: str,
    status: int,
    body: object,
    headers: Mapping[str, str] | None = None,
    secrets: Iterable[str | None] = (),
) -> ProviderError:
    """Build the `ProviderError` for a response with an error status.

    The message names the provider, the model, the status, the provider's
    error code and its own message, with API keys replaced.
    """
    error = parse_error_body(body)
    code = f" ({error.codes[0]})" if error.codes else ""
    detail = _shorten(error.message) or "the response body has no error message"
    message = f"{provider} request for model {model!r} failed with HTTP {status}{code}: {detail}"
    return ProviderError(
        redact_secrets(message, secrets),
        kind=classify_error(status, error),
        provider=provider,
        model=model,
        status_code=status,
        retry_after_s=parse_retry_after(headers),
    )


def transport_error(
    *,
    provider: str,
    model: str,
    kind: ErrorKind,
    detail: str,
    secrets: Iterable[str | None] = (),
) -> ProviderError:
    """Build the `ProviderError` for an attempt that got no response.

    `kind` is timeout or connection, and `detail` is the transport's own message.
    """
    failure = "timed out" if kind is ErrorKind.TIMEOUT else "could not reach the server"
    message = f"{provider} request for model {model!r} {failure}: {_shorten(detail)}"
    return ProviderError(
        redact_secrets(message, secrets), kind=kind, provider=provider, model=model
    )


def _shorten(text: str) -> str:
    """Collapse whitespace, such as in an HTML error page, and cut long text."""
    collapsed = " ".join(text.split())
    if len(collapsed) <= _MAX_DETAIL_CHARS:
        return collapsed
    return collapsed[: _MAX_DETAIL_CHARS - 3] + "..."
