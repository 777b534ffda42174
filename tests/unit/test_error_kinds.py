"""Error classification: one case for each real error form of each provider.

The bodies and messages are the providers' own wording as their servers send
it. Where a test drops a field, such as the code, it does so to check that the
next step of the classification still finds the kind.
"""

from __future__ import annotations

import json

import pytest

from trunkline.errors import ErrorKind, ProviderError
from trunkline.providers.base import (
    ErrorBody,
    http_error,
    is_context_length_message,
    kind_from_codes,
    kind_from_status,
    parse_error_body,
    redact_secrets,
    transport_error,
)
from trunkline.providers.local import LocalProvider, _rejected_request
from trunkline.types.calls import ModelRequest
from trunkline.types.messages import Message


def openai_body(message: str, *, error_type: str | None, code: str | None, **extra: object) -> dict:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code, **extra}}


def anthropic_body(error_type: str, message: str, **extra: object) -> dict:
    return {
        "type": "error",
        "error": {"type": error_type, "message": message, **extra},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }


def gemini_body(code: int, message: str, status: str, *details: dict) -> list:
    error: dict = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return [{"error": error}]


# Context-window overflow, one message per provider and server version.

CONTEXT_LENGTH_MESSAGES = [
    pytest.param(
        "This model's maximum context length is 128000 tokens. However, your messages resulted "
        "in 130512 tokens. Please reduce the length of the messages.",
        id="openai-messages",
    ),
    pytest.param(
        "This model's maximum context length is 4097 tokens. However, you requested 4295 tokens "
        "(3245 in the messages, 1050 in the completion). Please reduce the length of the "
        "messages or completion.",
        id="openai-messages-and-completion",
    ),
    pytest.param(
        "Your input exceeds the context window of this model. Please adjust your input and try "
        "again.",
        id="openai-responses",
    ),
    pytest.param("Please reduce the length of the messages or completion.", id="groq"),
    pytest.param(
        "Please reduce the length of the messages or completion. Current length is 42328 while "
        "limit is 40000",
        id="cerebras",
    ),
    pytest.param("prompt is too long: 210000 tokens > 200000 maximum", id="anthropic-prompt"),
    pytest.param(
        "input length and `max_tokens` exceed context limit: 188059 + 20000 > 200000, decrease "
        "input length or `max_tokens` and try again",
        id="anthropic-max-tokens",
    ),
    pytest.param(
        "request (4476 tokens) exceeds the available context size (4096 tokens), try increasing it",
        id="llama-cpp-server",
    ),
    pytest.param(
        "the request exceeds the available context size, try increasing it",
        id="llama-cpp-server-older",
    ),
    pytest.param(
        "input (9000 tokens) is larger than the max context size (8192 tokens). skipping",
        id="llama-cpp-server-unsplittable",
    ),
    pytest.param("Requested tokens (1031) exceed context window of 512", id="llama-cpp-python"),
    pytest.param(
        "This model's maximum context length is 131072 tokens. However, you requested 4096 "
        "output tokens and your prompt contains at least 126978 input tokens, for a total of at "
        "least 131074 tokens. Please reduce the length of the input prompt or the number of "
        "requested output tokens. (parameter=input_tokens, value=126978)",
        id="vllm",
    ),
    pytest.param(
        "This model's maximum context length is 16384 tokens. However, you requested 19591 "
        "tokens (9591 in the messages, 10000 in the completion). Please reduce the length of the "
        "messages or completion. None",
        id="vllm-older",
    ),
    pytest.param(
        "'max_tokens' or 'max_completion_tokens' is too large: 8000. This model's maximum context "
        "length is 4096 tokens and your request has 2778 input tokens (8000 > 4096 - 2778). None",
        id="vllm-max-tokens",
    ),
    pytest.param(
        "The decoder prompt (length 12324) is longer than the maximum model length of 8192. Make "
        "sure that `max_model_len` is no smaller than the number of text tokens.",
        id="vllm-engine",
    ),
    pytest.param(
        "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 5000 "
        "`inputs` tokens and 512 `max_new_tokens`",
        id="tgi-total",
    ),
    pytest.param(
        "Input validation error: `inputs` must have less than 4096 tokens. Given: 5000",
        id="tgi-inputs",
    ),
    pytest.param("the input length exceeds the context length", id="ollama"),
    pytest.param(
        "prompt too long; exceeded max context length by 100918 tokens", id="ollama-hosted"
    ),
    pytest.param(
        "Prompt contains 40000 tokens and 0 draft tokens, too large for model with 32768 maximum "
        "context length",
        id="mistral",
    ),
    pytest.param(
        "The input token count (1196265) exceeds the maximum number of tokens allowed (1048576).",
        id="gemini",
    ),
    pytest.param(
        "Error code: 400 - {'error': {'message': 'input is too large', 'code': "
        "'context_length_exceeded'}}",
        id="code-flattened-into-text",
    ),
]


@pytest.mark.parametrize("message", CONTEXT_LENGTH_MESSAGES)
def test_context_length_message_known(message: str) -> None:
    assert is_context_length_message(message)


@pytest.mark.parametrize("message", CONTEXT_LENGTH_MESSAGES)
def test_context_length_message_on_400(message: str) -> None:
    assert kind_from_status(400, message) is ErrorKind.CONTEXT_LENGTH


@pytest.mark.parametrize(
    "message",
    [
        "Invalid value for 'temperature': expected a number between 0 and 2.",
        "Requested tokens (600) exceed batch size of 512",
        "messages: roles must alternate between \"user\" and \"assistant\"",
        "Request exceeds the maximum allowed number of bytes.",
        "Rate limit reached for requests",
    ],
)
def test_other_message_not_context_length(message: str) -> None:
    assert not is_context_length_message(message)


# Whole bodies: the status, the body and the kind they must give.

BODY_CASES = [
    # OpenAI
    pytest.param(
        400,
        openai_body(
            "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in 130512 tokens. Please reduce the length of the messages.",
            error_type="invalid_request_error",
            code="context_length_exceeded",
        ),
        ErrorKind.CONTEXT_LENGTH,
        id="openai-context-length",
    ),
    pytest.param(
        429,
        openai_body(
            "You exceeded your current quota, please check your plan and billing details. For "
            "more information on this error, read the docs: "
            "https://platform.openai.com/docs/guides/error-codes/api-errors.",
            error_type="insufficient_quota",
            code="insufficient_quota",
        ),
        ErrorKind.QUOTA_EXCEEDED,
        id="openai-insufficient-quota",
    ),
    pytest.param(
        429,
        openai_body(
            "You exceeded your current quota, please check your plan and billing details.",
            error_type="insufficient_quota",
            code=None,
        ),
        ErrorKind.QUOTA_EXCEEDED,
        id="openai-insufficient-quota-type-only",
    ),
    pytest.param(
        429,
        openai_body("", error_type="insufficient_quota", code="project_spend_limit_exceeded"),
        ErrorKind.QUOTA_EXCEEDED,
        id="openai-project-spend-limit",
    ),
    pytest.param(
        429,
        openai_body(
            "Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): "
            "Limit 30000, Used 29000, Requested 2000. Please try again in 2s.",
            error_type="tokens",
            code="rate_limit_exceeded",
        ),
        ErrorKind.RATE_LIMITED,
        id="openai-rate-limit",
    ),
    pytest.param(
        429,
        openai_body(
            "Request too large for gpt-4o on tokens per min (TPM): Limit 30000, Requested "
            "342389. The input or output tokens must be reduced in order to run successfully.",
            error_type="tokens",
            code="rate_limit_exceeded",
        ),
        ErrorKind.QUOTA_EXCEEDED,
        id="openai-request-over-rate-limit",
    ),
    pytest.param(
        401,
        openai_body(
            "Incorrect API key provided: sk-proj-********************abcd. You can find your API "
            "key at https://platform.openai.com/account/api-keys.",
            error_type="invalid_request_error",
            code="invalid_api_key",
        ),
        ErrorKind.AUTH,
        id="openai-invalid-api-key",
    ),
    pytest.param(
        403,
        openai_body(
            "Country, region, or territory not supported",
            error_type="request_forbidden",
            code="unsupported_country_region_territory",
        ),
        ErrorKind.AUTH,
        id="openai-region",
    ),
    pytest.param(
        404,
        openai_body(
            "The model `gpt-9` does not exist or you do not have access to it.",
            error_type="invalid_request_error",
            code="model_not_found",
        ),
        ErrorKind.NOT_FOUND,
        id="openai-model-not-found",
    ),
    pytest.param(
        400,
        openai_body(
            "Invalid prompt: your prompt was flagged as potentially violating our usage policy. "
            "Please try again with a different prompt: "
            "https://platform.openai.com/docs/guides/reasoning#advice-on-prompting",
            error_type="invalid_request_error",
            code="invalid_prompt",
        ),
        ErrorKind.CONTENT_FILTER,
        id="openai-invalid-prompt",
    ),
    pytest.param(
        400,
        openai_body(
            "Your request was rejected as a result of our safety system. Your prompt may contain "
            "text that is not allowed by our safety system.",
            error_type="invalid_request_error",
            code="content_policy_violation",
        ),
        ErrorKind.CONTENT_FILTER,
        id="openai-content-policy",
    ),
    pytest.param(
        400,
        openai_body(
            "Invalid value for 'temperature': expected a number between 0 and 2.",
            error_type="invalid_request_error",
            code="invalid_value",
        ),
        ErrorKind.BAD_REQUEST,
        id="openai-invalid-value",
    ),
    pytest.param(
        500,
        openai_body(
            "The server had an error while processing your request. Sorry about that!",
            error_type="server_error",
            code=None,
        ),
        ErrorKind.SERVER_ERROR,
        id="openai-server-error",
    ),
    pytest.param(
        503,
        openai_body(
            "The engine is currently overloaded, please try again later.",
            error_type="server_error",
            code=None,
        ),
        ErrorKind.OVERLOADED,
        id="openai-engine-overloaded",
    ),
    # Azure OpenAI
    pytest.param(
        400,
        openai_body(
            "The response was filtered due to the prompt triggering Azure OpenAI's content "
            "management policy. Please modify your prompt and retry. To learn more about our "
            "content filtering policies please read our documentation: "
            "https://go.microsoft.com/fwlink/?linkid=2198766",
            error_type=None,
            code="content_filter",
            status=400,
            innererror={
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {"violence": {"filtered": True, "severity": "high"}},
            },
        ),
        ErrorKind.CONTENT_FILTER,
        id="azure-content-filter",
    ),
    pytest.param(
        400,
        openai_body(
            "The response was filtered due to the prompt triggering Azure OpenAI’s content "
            "management policy. Please modify your prompt and retry.",
            error_type=None,
            code=None,
        ),
        ErrorKind.CONTENT_FILTER,
        id="azure-content-filter-message-only",
    ),
    pytest.param(
        400,
        {
            "error": {
                "code": None,
                "message": "filtered",
                "innererror": {"code": "ResponsibleAIPolicyViolation"},
            }
        },
        ErrorKind.CONTENT_FILTER,
        id="azure-content-filter-innererror-only",
    ),
    pytest.param(
        429,
        {
            "error": {
                "code": "429",
                "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI "
                "API version 2024-02-01 have exceeded token rate limit of your current OpenAI S0 "
                "pricing tier. Please retry after 6 seconds.",
            }
        },
        ErrorKind.RATE_LIMITED,
        id="azure-rate-limit",
    ),
    pytest.param(
        401,
        {
            "error": {
                "code": "401",
                "message": "Access denied due to invalid subscription key or wrong API endpoint. "
                "Make sure to provide a valid key for an active subscription and use a correct "
                "regional API endpoint for your resource.",
            }
        },
        ErrorKind.AUTH,
        id="azure-access-denied",
    ),
    pytest.param(
        404,
        {
            "error": {
                "code": "DeploymentNotFound",
                "message": "The API deployment for this resource does not exist. If you created "
                "the deployment within the last 5 minutes, please wait a moment and try again.",
            }
        },
        ErrorKind.NOT_FOUND,
        id="azure-deployment-not-found",
    ),
    # Anthropic
    pytest.param(
        400,
        anthropic_body(
            "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"
        ),
        ErrorKind.CONTEXT_LENGTH,
        id="anthropic-prompt-too-long",
    ),
    pytest.param(
        400,
        anthropic_body(
            "invalid_request_error",
            "messages: roles must alternate between \"user\" and \"assistant\", but found "
            "multiple \"user\" roles in a row",
        ),
        ErrorKind.BAD_REQUEST,
        id="anthropic-invalid-request",
    ),
    pytest.param(
        400,
        anthropic_body(
            "invalid_request_error",
            "You have reached your specified API usage limits. You will regain access on "
            "2025-09-01 at 00:00 UTC.",
        ),
        ErrorKind.QUOTA_EXCEEDED,
        id="anthropic-spend-limit",
    ),
    pytest.param(
        400,
        anthropic_body(
            "invalid_request_error",
            "You have reached your specified workspace API usage limits. You will regain access "
            "on 2025-09-01 at 00:00 UTC.",
        ),
        ErrorKind.QUOTA_EXCEEDED,
        id="anthropic-workspace-spend-limit",
    ),
    pytest.param(
        400,
        anthropic_body(
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & "
            "Billing to upgrade or purchase credits.",
        ),
        ErrorKind.QUOTA_EXCEEDED,
        id="anthropic-credit-balance",
    ),
    pytest.param(
        401, anthropic_body("authentication_error", "invalid x-api-key"), ErrorKind.AUTH,
        id="anthropic-authentication",
    ),
    pytest.param(
        402, anthropic_body("billing_error", "Billing error"), ErrorKind.QUOTA_EXCEEDED,
        id="anthropic-billing",
    ),
    pytest.param(
        403,
        anthropic_body(
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        ErrorKind.AUTH,
        id="anthropic-permission",
    ),
    pytest.param(
        404, anthropic_body("not_found_error", "model: claude-9"), ErrorKind.NOT_FOUND,
        id="anthropic-not-found",
    ),
    pytest.param(
        409,
        anthropic_body(
            "conflict_error", "The request conflicts with the current state of a resource."
        ),
        ErrorKind.SERVER_ERROR,
        id="anthropic-conflict",
    ),
    pytest.param(
        413,
        anthropic_body("request_too_large", "Request exceeds the maximum allowed number of bytes."),
        ErrorKind.BAD_REQUEST,
        id="anthropic-request-too-large",
    ),
    pytest.param(
        429,
        anthropic_body(
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50,000 input "
            "tokens per minute.",
        ),
        ErrorKind.RATE_LIMITED,
        id="anthropic-rate-limit",
    ),
    pytest.param(
        429,
        anthropic_body(
            "rate_limit_error",
            "Your organization has reached its monthly usage limit.",
            details={"error_code": "enforced_spend_limit_reached"},
        ),
        ErrorKind.QUOTA_EXCEEDED,
        id="anthropic-tier-spend-cap",
    ),
    pytest.param(
        500, anthropic_body("api_error", "Internal server error"), ErrorKind.SERVER_ERROR,
        id="anthropic-api-error",
    ),
    pytest.param(
        503, anthropic_body("api_error", "Internal server error"), ErrorKind.OVERLOADED,
        id="anthropic-api-error-503",
    ),
    pytest.param(
        504, anthropic_body("timeout_error", "Request timeout"), ErrorKind.TIMEOUT,
        id="anthropic-timeout",
    ),
    pytest.param(
        529, anthropic_body("overloaded_error", "Overloaded"), ErrorKind.OVERLOADED,
        id="anthropic-overloaded",
    ),
    # Gemini's OpenAI-compatible endpoint
    pytest.param(
        400,
        gemini_body(
            400,
            "API key not valid. Please pass a valid API key.",
            "INVALID_ARGUMENT",
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"},
        ),
        ErrorKind.AUTH,
        id="gemini-api-key-invalid",
    ),
    pytest.param(
        400,
        gemini_body(400, "Please pass a valid API key", "INVALID_ARGUMENT"),
        ErrorKind.AUTH,
        id="gemini-api-key-message-only",
    ),
    pytest.param(
        400,
        gemini_body(400, "Request contains an invalid argument.", "INVALID_ARGUMENT"),
        ErrorKind.BAD_REQUEST,
        id="gemini-invalid-argument",
    ),
    pytest.param(
        400,
        gemini_body(
            400,
            "The input token count (1196265) exceeds the maximum number of tokens allowed "
            "(1048576).",
            "INVALID_ARGUMENT",
        ),
        ErrorKind.CONTEXT_LENGTH,
        id="gemini-context-length",
    ),
    pytest.param(
        429,
        gemini_body(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            "RESOURCE_EXHAUSTED",
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/"
                        "generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                    }
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "39s"},
        ),
        ErrorKind.RATE_LIMITED,
        id="gemini-per-minute-quota",
    ),
    pytest.param(
        429,
        gemini_body(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            "RESOURCE_EXHAUSTED",
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}
                ],
            },
        ),
        ErrorKind.QUOTA_EXCEEDED,
        id="gemini-per-day-quota",
    ),
    pytest.param(
        429,
        gemini_body(
            429,
            "Your project has exceeded its monthly spending cap. Please go to AI Studio at "
            "https://ai.studio/spend to manage your project spend cap.",
            "RESOURCE_EXHAUSTED",
        ),
        ErrorKind.QUOTA_EXCEEDED,
        id="gemini-spend-cap",
    ),
    # Groq
    pytest.param(
        400,
        openai_body(
            "Please reduce the length of the messages or completion.",
            error_type="invalid_request_error",
            code="context_length_exceeded",
        ),
        ErrorKind.CONTEXT_LENGTH,
        id="groq-context-length",
    ),
    pytest.param(
        413,
        openai_body(
            "Request too large for model `llama-3.1-8b-instant` in organization `org_01abc` "
            "service tier `on_demand` on tokens per minute (TPM): Limit 6000, Requested 12328, "
            "please reduce your message size and try again.",
            error_type="tokens",
            code="rate_limit_exceeded",
        ),
        ErrorKind.QUOTA_EXCEEDED,
        id="groq-request-over-rate-limit",
    ),
    pytest.param(
        400,
        openai_body(
            "Organization spend limit reached.", error_type=None, code="blocked_api_access"
        ),
        ErrorKind.QUOTA_EXCEEDED,
        id="groq-spend-limit",
    ),
    # Compatible servers
    pytest.param(
        400,
        {
            "error": {
                "code": 400,
                "message": "request (4476 tokens) exceeds the available context size (4096 "
                "tokens), try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": 4476,
                "n_ctx": 4096,
            }
        },
        ErrorKind.CONTEXT_LENGTH,
        id="llama-cpp-server",
    ),
    pytest.param(
        400,
        {
            "object": "error",
            "message": "This model's maximum context length is 16384 tokens. However, you "
            "requested 19591 tokens (9591 in the messages, 10000 in the completion). Please "
            "reduce the length of the messages or completion. None",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
        ErrorKind.CONTEXT_LENGTH,
        id="vllm-flat-body",
    ),
    pytest.param(
        422,
        {
            "error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= "
            "4096. Given: 5000 `inputs` tokens and 512 `max_new_tokens`",
            "error_type": "validation",
        },
        ErrorKind.CONTEXT_LENGTH,
        id="tgi-context-length",
    ),
    pytest.param(
        422,
        {
            "error": "Input validation error: `temperature` must be strictly positive",
            "error_type": "validation",
        },
        ErrorKind.BAD_REQUEST,
        id="tgi-validation",
    ),
    pytest.param(
        429,
        {"error": "Model is overloaded", "error_type": "overloaded"},
        ErrorKind.OVERLOADED,
        id="tgi-overloaded",
    ),
    pytest.param(
        424,
        {
            "error": "Request failed during generation: Server error: CUDA out of memory.",
            "error_type": "generation",
        },
        ErrorKind.SERVER_ERROR,
        id="tgi-generation",
    ),
    pytest.param(
        500,
        openai_body(
            "the input length exceeds the context length", error_type="api_error", code=None
        ),
        ErrorKind.CONTEXT_LENGTH,
        id="ollama-500-context-length",
    ),
    pytest.param(
        404,
        openai_body(
            'model "llama9" not found, try pulling it first',
            error_type="not_found_error",
            code=None,
        ),
        ErrorKind.NOT_FOUND,
        id="ollama-model-not-found",
    ),
    pytest.param(
        400,
        {
            "object": "error",
            "message": "Prompt contains 40000 tokens and 0 draft tokens, too large for model "
            "with 32768 maximum context length",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        },
        ErrorKind.CONTEXT_LENGTH,
        id="mistral-context-length",
    ),
    # Bodies that are not JSON, and no body at all
    pytest.param(
        502, "<html><body>502 Bad Gateway</body></html>", ErrorKind.SERVER_ERROR, id="html-502"
    ),
    pytest.param(400, "", ErrorKind.BAD_REQUEST, id="empty-400"),
    pytest.param(500, None, ErrorKind.SERVER_ERROR, id="none-500"),
]


@pytest.mark.parametrize(("status", "body", "kind"), BODY_CASES)
def test_body_kind(status: int, body: object, kind: ErrorKind) -> None:
    assert kind_from_status(status, body) is kind


@pytest.mark.parametrize(("status", "body", "kind"), BODY_CASES)
def test_body_kind_from_json_text(status: int, body: object, kind: ErrorKind) -> None:
    # Callers such as the fake provider hold the body as text.
    text = body if isinstance(body, str) or body is None else json.dumps(body)
    assert kind_from_status(status, text) is kind


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, ErrorKind.BAD_REQUEST),
        (401, ErrorKind.AUTH),
        (402, ErrorKind.QUOTA_EXCEEDED),
        (403, ErrorKind.AUTH),
        (404, ErrorKind.NOT_FOUND),
        (405, ErrorKind.BAD_REQUEST),
        (408, ErrorKind.TIMEOUT),
        (409, ErrorKind.SERVER_ERROR),
        (413, ErrorKind.BAD_REQUEST),
        (422, ErrorKind.BAD_REQUEST),
        (424, ErrorKind.SERVER_ERROR),
        (429, ErrorKind.RATE_LIMITED),
        (500, ErrorKind.SERVER_ERROR),
        (502, ErrorKind.SERVER_ERROR),
        (503, ErrorKind.OVERLOADED),
        (504, ErrorKind.TIMEOUT),
        (529, ErrorKind.OVERLOADED),
    ],
)
def test_status_without_body(status: int, kind: ErrorKind) -> None:
    assert kind_from_status(status) is kind


def test_quota_kind_not_retryable() -> None:
    body = openai_body("", error_type="insufficient_quota", code="insufficient_quota")

    kind = kind_from_status(429, body)

    assert kind.retryable is False
    assert kind.falls_back is True


def test_rate_limit_message_429_retryable() -> None:
    # Gemini sends "You exceeded your current quota" for per-minute limits too.
    kind = kind_from_status(429, "You exceeded your current quota, please check your plan.")

    assert kind is ErrorKind.RATE_LIMITED


def test_context_message_ignored_on_auth() -> None:
    message = "prompt is too long: 210000 tokens > 200000 maximum"

    assert kind_from_status(401, message) is ErrorKind.AUTH


# Parsing error bodies


def test_parse_openai_sdk_inner_body() -> None:
    # The `openai` SDK keeps only the object under "error" as `error.body`.
    error = parse_error_body(
        {
            "message": "Rate limit reached.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    )

    assert error.message == "Rate limit reached."
    assert error.codes == ("rate_limit_exceeded", "requests")


def test_parse_anthropic_details_first() -> None:
    error = parse_error_body(
        anthropic_body(
            "rate_limit_error",
            "Monthly limit.",
            details={"error_code": "enforced_spend_limit_reached"},
        )
    )

    assert error.message == "Monthly limit."
    assert error.codes == ("enforced_spend_limit_reached", "rate_limit_error")


def test_parse_azure_innererror_first() -> None:
    error = parse_error_body(
        {
            "error": {
                "message": "filtered",
                "code": "content_filter",
                "innererror": {"code": "ResponsibleAIPolicyViolation"},
            }
        }
    )

    assert error.codes == ("ResponsibleAIPolicyViolation", "content_filter")


def test_parse_gemini_list() -> None:
    error = parse_error_body(
        gemini_body(
            400,
            "API key not valid. Please pass a valid API key.",
            "INVALID_ARGUMENT",
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"},
        )
    )

    assert error.message == "API key not valid. Please pass a valid API key."
    assert error.codes == ("API_KEY_INVALID", "INVALID_ARGUMENT")


def test_parse_tgi_string_error() -> None:
    error = parse_error_body({"error": "Model is overloaded", "error_type": "overloaded"})

    assert error.message == "Model is overloaded"
    assert error.codes == ("overloaded",)


def test_parse_numeric_code_dropped() -> None:
    body = {"error": {"code": 400, "message": "bad", "type": "invalid_request_error"}}

    error = parse_error_body(body)

    assert error.codes == ("invalid_request_error",)


def test_parse_plain_text() -> None:
    error = parse_error_body("  upstream connect error  ")

    assert error == ErrorBody(message="upstream connect error")


def test_parse_invalid_json_text() -> None:
    error = parse_error_body('{"error": ')

    assert error.message == '{"error":'
    assert error.codes == ()


def test_parse_mistral_detail_list() -> None:
    body = {
        "object": "error",
        "message": {"detail": [{"loc": ["body", "model"], "msg": "field required"}]},
        "type": "invalid_request_message_error",
    }

    error = parse_error_body(body)

    assert "field required" in error.message
    assert error.codes == ("invalid_request_message_error",)


def test_kind_from_codes_without_status() -> None:
    overloaded = parse_error_body(anthropic_body("overloaded_error", "Overloaded"))
    catch_all = parse_error_body(anthropic_body("api_error", "Internal server error"))

    assert kind_from_codes(overloaded) is ErrorKind.OVERLOADED
    assert kind_from_codes(catch_all) is None


# Messages and secrets

OPENAI_KEY = "sk-proj-Abc123Def456Ghi789Jkl012Mno345Pqr678"
AZURE_KEY = "0123456789abcdef0123456789abcdef"


def test_redact_key_formats() -> None:
    text = (
        f"key {OPENAI_KEY}, groq gsk_abcdefghijklmnop1234, "
        "google AIzaSyA1234567890abcdefghijklmnopqrs, header Bearer tok.en-123, "
        "url https://x.test/v1?alt=sse&key=secretvalue"
    )

    redacted = redact_secrets(text)

    assert OPENAI_KEY not in redacted
    assert "gsk_abcdefghijklmnop1234" not in redacted
    assert "AIzaSyA1234567890abcdefghijklmnopqrs" not in redacted
    assert "tok.en-123" not in redacted
    assert "secretvalue" not in redacted
    assert redacted.count("[REDACTED]") == 5


def test_redact_configured_key() -> None:
    redacted = redact_secrets(f"invalid subscription key {AZURE_KEY}.", [AZURE_KEY, None])

    assert redacted == "invalid subscription key [REDACTED]."


def test_redact_keeps_placeholder_and_words() -> None:
    text = "task-based risk-free not-needed"

    assert redact_secrets(text, ["not-needed"]) == text


def test_http_error_message() -> None:
    body = openai_body(
        f"Incorrect API key provided: {OPENAI_KEY}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        error_type="invalid_request_error",
        code="invalid_api_key",
    )

    error = http_error(
        provider="openai", model="gpt-4o-mini", status=401, body=body, headers={"retry-after": "3"}
    )

    assert str(error).startswith(
        "openai request for model 'gpt-4o-mini' failed with HTTP 401 (invalid_api_key): "
        "Incorrect API key provided: [REDACTED]"
    )
    assert OPENAI_KEY not in str(error)
    assert error.kind is ErrorKind.AUTH
    assert error.status_code == 401
    assert error.retry_after_s == 3.0


def test_http_error_without_message() -> None:
    error = http_error(provider="openai", model="m", status=503, body="")

    assert str(error) == (
        "openai request for model 'm' failed with HTTP 503: the response body has no error message"
    )


def test_http_error_long_html_shortened() -> None:
    page = "<html>\n<body>\n" + "x" * 2000 + "\n</body></html>"

    error = http_error(provider="openai", model="m", status=502, body=page)

    assert len(str(error)) < 600
    assert "\n" not in str(error)
    assert str(error).endswith("...")


def test_transport_error_message() -> None:
    error = transport_error(
        provider="anthropic",
        model="claude-sonnet-4-5",
        kind=ErrorKind.CONNECTION,
        detail="Connection error. ([Errno 111] Connection refused)",
    )

    assert str(error) == (
        "anthropic request for model 'claude-sonnet-4-5' could not reach the server: "
        "Connection error. ([Errno 111] Connection refused)"
    )
    assert error.status_code is None


# The local model


def test_local_context_overflow() -> None:
    # The message llama-cpp-python 0.3.36 raises, as seen from the bundled model with n_ctx=512.
    error = _rejected_request(
        ValueError("Requested tokens (1031) exceed context window of 512"), "local", "smollm2"
    )

    assert error.kind is ErrorKind.CONTEXT_LENGTH
    assert "exceed context window of 512" in str(error)
    assert "options.n_ctx" in str(error)
    assert error.provider == "local"
    assert error.model == "smollm2"


@pytest.mark.parametrize(
    "message",
    [
        "Requested tokens (600) exceed batch size of 512",
        "logprobs is not supported for models created with logits_all=False",
        # What llama-cpp-python 0.3.36 raises when n_ctx is below the model's minimum.
        "could not broadcast input array from shape (64,) into shape (0,)",
    ],
)
def test_local_other_value_error(message: str) -> None:
    error = _rejected_request(ValueError(message), "local", "smollm2")

    assert error.kind is ErrorKind.BAD_REQUEST
    assert message in str(error)


@pytest.mark.local_model
async def test_local_model_context_overflow() -> None:
    provider = LocalProvider("smollm2-135m-instruct", {"n_ctx": 256, "n_threads": 1})
    request = ModelRequest(
        model="smollm2-135m-instruct", messages=(Message.user("word " * 400),), max_tokens=8
    )

    with pytest.raises(ProviderError) as caught:
        await provider.complete(request)

    assert caught.value.kind is ErrorKind.CONTEXT_LENGTH
    assert "exceed context window of 256" in str(caught.value)
