"""Real provider error bodies through the real `openai` and `anthropic` SDKs.

Each case plans one reply on the fake server in the shape the provider sends
it, and checks the `ProviderError` the adapter raises: its kind, its status
and a message that carries the provider's own words and no API key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fakeserver import (
    FakeServer,
    PlannedReply,
    anthropic_error,
    anthropic_message,
    anthropic_text_block,
    openai_completion,
    openai_error,
    openai_tool_call,
)
from trunkline.errors import ErrorKind, ProviderError
from trunkline.providers.anthropic import AnthropicProvider
from trunkline.providers.openai import OpenAIProvider
from trunkline.types.calls import ModelRequest
from trunkline.types.messages import Message

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
OPENAI_KEY = "sk-proj-Abc123Def456Ghi789Jkl012Mno345Pqr678"
AZURE_KEY = "0123456789abcdef0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-api03-Abc123Def456Ghi789Jkl012Mno345"


def request_for(model: str) -> ModelRequest:
    return ModelRequest(model=model, messages=(Message.user("Where is the Louvre?"),))


@pytest.fixture
async def openai_provider(fake_server: FakeServer) -> AsyncIterator[OpenAIProvider]:
    adapter = OpenAIProvider.create(
        OPENAI_MODEL, api_key=OPENAI_KEY, base_url=fake_server.openai_base_url
    )
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def azure_provider(fake_server: FakeServer) -> AsyncIterator[OpenAIProvider]:
    adapter = OpenAIProvider.create(
        OPENAI_MODEL,
        api_key=AZURE_KEY,
        base_url=fake_server.base_url,
        azure_api_version="2024-10-21",
    )
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def anthropic_provider(fake_server: FakeServer) -> AsyncIterator[AnthropicProvider]:
    adapter = AnthropicProvider.create(
        ANTHROPIC_MODEL, api_key=ANTHROPIC_KEY, base_url=fake_server.base_url
    )
    yield adapter
    await adapter.aclose()


async def openai_failure(
    provider: OpenAIProvider, server: FakeServer, reply: PlannedReply
) -> ProviderError:
    server.plan(reply)
    with pytest.raises(ProviderError) as caught:
        await provider.complete(request_for(OPENAI_MODEL))
    return caught.value


async def anthropic_failure(
    provider: AnthropicProvider, server: FakeServer, reply: PlannedReply
) -> ProviderError:
    server.plan(reply)
    with pytest.raises(ProviderError) as caught:
        await provider.complete(request_for(ANTHROPIC_MODEL))
    return caught.value


# Error statuses through the `openai` SDK

OPENAI_CASES = [
    pytest.param(
        400,
        openai_error(
            "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in 130512 tokens. Please reduce the length of the messages.",
            param="messages",
            code="context_length_exceeded",
        ),
        ErrorKind.CONTEXT_LENGTH,
        "maximum context length is 128000 tokens",
        id="openai-context-length",
    ),
    pytest.param(
        429,
        openai_error(
            "You exceeded your current quota, please check your plan and billing details. For "
            "more information on this error, read the docs: "
            "https://platform.openai.com/docs/guides/error-codes/api-errors.",
            error_type="insufficient_quota",
            code="insufficient_quota",
        ),
        ErrorKind.QUOTA_EXCEEDED,
        "You exceeded your current quota",
        id="openai-insufficient-quota",
    ),
    pytest.param(
        400,
        openai_error(
            "Invalid prompt: your prompt was flagged as potentially violating our usage policy. "
            "Please try again with a different prompt: "
            "https://platform.openai.com/docs/guides/reasoning#advice-on-prompting",
            code="invalid_prompt",
        ),
        ErrorKind.CONTENT_FILTER,
        "flagged as potentially violating our usage policy",
        id="openai-invalid-prompt",
    ),
    pytest.param(
        413,
        openai_error(
            "Request too large for model `llama-3.1-8b-instant` in organization `org_01abc` "
            "service tier `on_demand` on tokens per minute (TPM): Limit 6000, Requested 12328, "
            "please reduce your message size and try again.",
            error_type="tokens",
            code="rate_limit_exceeded",
        ),
        ErrorKind.QUOTA_EXCEEDED,
        "Limit 6000, Requested 12328",
        id="groq-request-over-rate-limit",
    ),
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
        "exceeds the available context size",
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
        "you requested 19591 tokens",
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
        "`inputs` tokens + `max_new_tokens` must be <= 4096",
        id="tgi-context-length",
    ),
    pytest.param(
        429,
        {"error": "Model is overloaded", "error_type": "overloaded"},
        ErrorKind.OVERLOADED,
        "Model is overloaded",
        id="tgi-overloaded",
    ),
    pytest.param(
        500,
        openai_error("the input length exceeds the context length", error_type="api_error"),
        ErrorKind.CONTEXT_LENGTH,
        "the input length exceeds the context length",
        id="ollama-500",
    ),
    pytest.param(
        400,
        [
            {
                "error": {
                    "code": 400,
                    "message": "API key not valid. Please pass a valid API key.",
                    "status": "INVALID_ARGUMENT",
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID",
                        }
                    ],
                }
            }
        ],
        ErrorKind.AUTH,
        "API key not valid",
        id="gemini-api-key",
    ),
    pytest.param(
        429,
        [
            {
                "error": {
                    "code": 429,
                    "message": "You exceeded your current quota, please check your plan and "
                    "billing details.",
                    "status": "RESOURCE_EXHAUSTED",
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                            "violations": [
                                {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}
                            ],
                        }
                    ],
                }
            }
        ],
        ErrorKind.QUOTA_EXCEEDED,
        "You exceeded your current quota",
        id="gemini-per-day-quota",
    ),
    pytest.param(
        502,
        "<html><body><h1>502 Bad Gateway</h1></body></html>",
        ErrorKind.SERVER_ERROR,
        "502 Bad Gateway",
        id="proxy-html",
    ),
    pytest.param(
        409,
        openai_error("Conflict.", error_type="conflict"),
        ErrorKind.SERVER_ERROR,
        "Conflict.",
        id="conflict",
    ),
]


@pytest.mark.parametrize(("status", "body", "kind", "quoted"), OPENAI_CASES)
async def test_openai_error_kind(
    openai_provider: OpenAIProvider,
    fake_server: FakeServer,
    status: int,
    body: object,
    kind: ErrorKind,
    quoted: str,
) -> None:
    reply = PlannedReply(status=status, body=body)

    error = await openai_failure(openai_provider, fake_server, reply)

    assert error.kind is kind
    assert error.status_code == status
    assert error.provider == "openai"


@pytest.mark.parametrize(("status", "body", "kind", "quoted"), OPENAI_CASES)
async def test_openai_error_message(
    openai_provider: OpenAIProvider,
    fake_server: FakeServer,
    status: int,
    body: object,
    kind: ErrorKind,
    quoted: str,
) -> None:
    reply = PlannedReply(status=status, body=body)

    error = await openai_failure(openai_provider, fake_server, reply)

    message = str(error)
    prefix = f"openai request for model {OPENAI_MODEL!r} failed with HTTP {status}"
    assert message.startswith(prefix)
    assert quoted in message
    assert OPENAI_KEY not in message


async def test_openai_quota_keeps_retry_after(
    openai_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    body = openai_error(
        "You exceeded your current quota.",
        error_type="insufficient_quota",
        code="insufficient_quota",
    )
    reply = PlannedReply(status=429, body=body, headers={"retry-after": "20"})

    error = await openai_failure(openai_provider, fake_server, reply)

    assert error.kind is ErrorKind.QUOTA_EXCEEDED
    assert error.kind.retryable is False
    assert error.retry_after_s == 20.0


async def test_openai_key_in_message_redacted(
    openai_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    body = openai_error(
        f"Incorrect API key provided: {OPENAI_KEY}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )

    error = await openai_failure(openai_provider, fake_server, PlannedReply(status=401, body=body))

    assert error.kind is ErrorKind.AUTH
    assert OPENAI_KEY not in str(error)
    assert "Incorrect API key provided: [REDACTED]" in str(error)
    assert "(invalid_api_key)" in str(error)


# Azure OpenAI


async def test_azure_content_filter_400(
    azure_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    body = {
        "error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
            "content management policy. Please modify your prompt and retry. To learn more about "
            "our content filtering policies please read our documentation: "
            "https://go.microsoft.com/fwlink/?linkid=2198766",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {
                    "hate": {"filtered": False, "severity": "safe"},
                    "violence": {"filtered": True, "severity": "high"},
                },
            },
        }
    }

    error = await openai_failure(azure_provider, fake_server, PlannedReply(status=400, body=body))

    assert error.kind is ErrorKind.CONTENT_FILTER
    assert error.provider == "azure"
    assert "content management policy" in str(error)
    assert "(ResponsibleAIPolicyViolation)" in str(error)


async def test_azure_key_in_message_redacted(
    azure_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    body = {"error": {"code": "401", "message": f"Access denied for key {AZURE_KEY}."}}

    error = await openai_failure(azure_provider, fake_server, PlannedReply(status=401, body=body))

    assert error.kind is ErrorKind.AUTH
    assert AZURE_KEY not in str(error)
    assert "Access denied for key [REDACTED]." in str(error)


async def test_azure_deployment_not_found(
    azure_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    body = {
        "error": {
            "code": "DeploymentNotFound",
            "message": "The API deployment for this resource does not exist. If you created the "
            "deployment within the last 5 minutes, please wait a moment and try again.",
        }
    }

    error = await openai_failure(azure_provider, fake_server, PlannedReply(status=404, body=body))

    assert error.kind is ErrorKind.NOT_FOUND
    assert "(DeploymentNotFound)" in str(error)


# Filtered 200 replies through the `openai` SDK


async def test_openai_content_filter_finish(
    openai_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    body = openai_completion(None, finish_reason="content_filter")

    error = await openai_failure(openai_provider, fake_server, PlannedReply(body=body))

    assert error.kind is ErrorKind.CONTENT_FILTER
    assert error.status_code == 200
    assert "finish_reason content_filter" in str(error)


async def test_azure_content_filter_finish(
    azure_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    body = openai_completion(None, finish_reason="content_filter")
    choice = body["choices"][0]
    # Azure leaves out the content and names the categories it filtered.
    choice["message"] = {"role": "assistant"}
    choice["content_filter_results"] = {
        "hate": {"filtered": False, "severity": "safe"},
        "sexual": {"filtered": True, "severity": "medium"},
        "violence": {"filtered": True, "severity": "high"},
    }

    error = await openai_failure(azure_provider, fake_server, PlannedReply(body=body))

    assert error.kind is ErrorKind.CONTENT_FILTER
    assert error.provider == "azure"
    assert "filtered categories: sexual, violence" in str(error)


async def test_openai_partial_filtered_text_kept(
    openai_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    body = openai_completion("The Louvre is", finish_reason="content_filter")
    fake_server.plan(PlannedReply(body=body))

    response = await openai_provider.complete(request_for(OPENAI_MODEL))

    assert response.text == "The Louvre is"
    assert response.finish_reason == "content_filter"


async def test_openai_filtered_tool_call_kept(
    openai_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    call = openai_tool_call("get_weather", '{"city": "Paris"}')
    body = openai_completion(None, tool_calls=[call], finish_reason="content_filter")
    fake_server.plan(PlannedReply(body=body))

    response = await openai_provider.complete(request_for(OPENAI_MODEL))

    assert len(response.tool_calls) == 1
    assert response.finish_reason == "content_filter"


async def test_openai_refusal_field(
    openai_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    body = openai_completion(None)
    body["choices"][0]["message"]["refusal"] = "I'm sorry, I can't help with that request."

    error = await openai_failure(openai_provider, fake_server, PlannedReply(body=body))

    assert error.kind is ErrorKind.CONTENT_FILTER
    assert "the model refused: I'm sorry, I can't help with that request." in str(error)


async def test_openai_empty_stop_reply_returned(
    openai_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    # An empty reply that no filter touched is the router's to judge, not an error here.
    fake_server.plan(PlannedReply(body=openai_completion("")))

    response = await openai_provider.complete(request_for(OPENAI_MODEL))

    assert response.text == ""
    assert response.finish_reason == "stop"


# Error statuses through the `anthropic` SDK

ANTHROPIC_CASES = [
    pytest.param(
        400,
        anthropic_error(
            "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"
        ),
        ErrorKind.CONTEXT_LENGTH,
        "prompt is too long",
        id="prompt-too-long",
    ),
    pytest.param(
        400,
        anthropic_error(
            "invalid_request_error",
            "input length and `max_tokens` exceed context limit: 188059 + 20000 > 200000, "
            "decrease input length or `max_tokens` and try again",
        ),
        ErrorKind.CONTEXT_LENGTH,
        "exceed context limit",
        id="max-tokens-over-context",
    ),
    pytest.param(
        400,
        anthropic_error(
            "invalid_request_error",
            "You have reached your specified API usage limits. You will regain access on "
            "2025-09-01 at 00:00 UTC.",
        ),
        ErrorKind.QUOTA_EXCEEDED,
        "specified API usage limits",
        id="spend-limit",
    ),
    pytest.param(
        400,
        anthropic_error("invalid_request_error", "max_tokens: Field required"),
        ErrorKind.BAD_REQUEST,
        "max_tokens: Field required",
        id="invalid-request",
    ),
    pytest.param(
        402,
        anthropic_error("billing_error", "Your credit card was declined."),
        ErrorKind.QUOTA_EXCEEDED,
        "credit card was declined",
        id="billing",
    ),
    pytest.param(
        413,
        anthropic_error(
            "request_too_large", "Request exceeds the maximum allowed number of bytes."
        ),
        ErrorKind.BAD_REQUEST,
        "maximum allowed number of bytes",
        id="request-too-large",
    ),
    pytest.param(
        429,
        {
            "type": "error",
            "error": {
                "type": "rate_limit_error",
                "message": "Your organization has reached its monthly usage limit.",
                "details": {"error_code": "enforced_spend_limit_reached"},
            },
        },
        ErrorKind.QUOTA_EXCEEDED,
        "monthly usage limit",
        id="tier-spend-cap",
    ),
    pytest.param(
        429,
        anthropic_error(
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50,000 input "
            "tokens per minute.",
        ),
        ErrorKind.RATE_LIMITED,
        "50,000 input tokens per minute",
        id="rate-limit",
    ),
    pytest.param(
        500,
        anthropic_error("api_error", "Internal server error"),
        ErrorKind.SERVER_ERROR,
        "Internal server error",
        id="api-error",
    ),
    pytest.param(
        504,
        anthropic_error("timeout_error", "Request timeout"),
        ErrorKind.TIMEOUT,
        "Request timeout",
        id="timeout",
    ),
    pytest.param(
        529,
        anthropic_error("overloaded_error", "Overloaded"),
        ErrorKind.OVERLOADED,
        "Overloaded",
        id="overloaded",
    ),
]


@pytest.mark.parametrize(("status", "body", "kind", "quoted"), ANTHROPIC_CASES)
async def test_anthropic_error_kind(
    anthropic_provider: AnthropicProvider,
    fake_server: FakeServer,
    status: int,
    body: object,
    kind: ErrorKind,
    quoted: str,
) -> None:
    reply = PlannedReply(status=status, body=body)

    error = await anthropic_failure(anthropic_provider, fake_server, reply)

    assert error.kind is kind
    assert error.status_code == status
    assert error.provider == "anthropic"


@pytest.mark.parametrize(("status", "body", "kind", "quoted"), ANTHROPIC_CASES)
async def test_anthropic_error_message(
    anthropic_provider: AnthropicProvider,
    fake_server: FakeServer,
    status: int,
    body: object,
    kind: ErrorKind,
    quoted: str,
) -> None:
    reply = PlannedReply(status=status, body=body)

    error = await anthropic_failure(anthropic_provider, fake_server, reply)

    message = str(error)
    prefix = f"anthropic request for model {ANTHROPIC_MODEL!r} failed with HTTP {status}"
    assert message.startswith(prefix)
    assert quoted in message
    assert ANTHROPIC_KEY not in message


async def test_anthropic_key_in_message_redacted(
    anthropic_provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    body = anthropic_error("authentication_error", f"invalid x-api-key {ANTHROPIC_KEY}")

    reply = PlannedReply(status=401, body=body)

    error = await anthropic_failure(anthropic_provider, fake_server, reply)

    assert error.kind is ErrorKind.AUTH
    assert ANTHROPIC_KEY not in str(error)
    assert "invalid x-api-key [REDACTED]" in str(error)


async def test_anthropic_connection_refused(closed_port_url: str) -> None:
    adapter = AnthropicProvider.create(
        ANTHROPIC_MODEL, api_key=ANTHROPIC_KEY, base_url=closed_port_url
    )

    with pytest.raises(ProviderError) as caught:
        await adapter.complete(request_for(ANTHROPIC_MODEL))
    await adapter.aclose()

    assert caught.value.kind is ErrorKind.CONNECTION
    assert str(caught.value).startswith(
        f"anthropic request for model {ANTHROPIC_MODEL!r} could not reach the server: "
    )


# Filtered 200 replies through the `anthropic` SDK


async def test_anthropic_refusal_stop_reason(
    anthropic_provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    # Anthropic's streaming classifiers stop a reply and keep what was written before.
    body = anthropic_message([anthropic_text_block("Hello..")], stop_reason="refusal")

    error = await anthropic_failure(anthropic_provider, fake_server, PlannedReply(body=body))

    assert error.kind is ErrorKind.CONTENT_FILTER
    assert error.status_code == 200
    assert "stop_reason refusal" in str(error)
    assert "after 7 characters of text" in str(error)


async def test_anthropic_refusal_without_text(
    anthropic_provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    body = anthropic_message([], stop_reason="refusal")

    error = await anthropic_failure(anthropic_provider, fake_server, PlannedReply(body=body))

    assert error.kind is ErrorKind.CONTENT_FILTER


async def test_anthropic_context_window_stop_reason(
    anthropic_provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    body = anthropic_message(
        [anthropic_text_block("The Louvre is in")], stop_reason="model_context_window_exceeded"
    )
    fake_server.plan(PlannedReply(body=body))

    response = await anthropic_provider.complete(request_for(ANTHROPIC_MODEL))

    assert response.text == "The Louvre is in"
    assert response.finish_reason == "length"
