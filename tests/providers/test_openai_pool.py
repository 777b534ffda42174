"""The OpenAI adapter's `HttpPool` path against its SDK path: same requests, same errors.

The adapter sends plain non-streamed completions through `HttpPool` when it
built the SDK client itself. A client built with an HTTP client of its own
keeps the SDK transport, which gives the reference each case is compared with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from fakeserver import FakeServer, PlannedReply, openai_completion, openai_error
from trunkline.errors import ProviderError
from trunkline.providers.http_pool import HttpPool
from trunkline.providers.openai import OpenAIProvider
from trunkline.types.calls import ModelRequest
from trunkline.types.messages import Message

MODEL = "gpt-4o-mini"
API_KEY = "sk-proj-Abc123Def456Ghi789Jkl012"


def user_request() -> ModelRequest:
    return ModelRequest(
        model=MODEL, messages=(Message.user("Où est le Louvre ?"),), temperature=0.5, max_tokens=20
    )


@pytest.fixture
async def pooled(fake_server: FakeServer) -> AsyncIterator[OpenAIProvider]:
    adapter = OpenAIProvider.create(MODEL, api_key=API_KEY, base_url=fake_server.openai_base_url)
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def through_sdk(fake_server: FakeServer) -> AsyncIterator[OpenAIProvider]:
    client = openai.AsyncOpenAI(
        api_key=API_KEY,
        base_url=fake_server.openai_base_url,
        max_retries=0,
        timeout=None,
        http_client=openai.DefaultAsyncHttpxClient(),
    )
    adapter = OpenAIProvider(client, MODEL)
    yield adapter
    await adapter.aclose()


async def test_plain_client_uses_pool(pooled: OpenAIProvider) -> None:
    await pooled.complete(user_request())

    assert isinstance(pooled._pool, HttpPool)


async def test_caller_http_client_keeps_sdk(through_sdk: OpenAIProvider) -> None:
    await through_sdk.complete(user_request())

    assert through_sdk._pool is None


async def test_azure_keeps_sdk(fake_server: FakeServer) -> None:
    adapter = OpenAIProvider.create(
        MODEL, api_key=API_KEY, base_url=fake_server.base_url, azure_api_version="2024-10-21"
    )
    await adapter.complete(user_request())
    await adapter.aclose()

    assert adapter._pool is None


async def test_pool_sends_what_sdk_sends(
    pooled: OpenAIProvider, through_sdk: OpenAIProvider, fake_server: FakeServer
) -> None:
    await pooled.complete(user_request())
    await through_sdk.complete(user_request())

    from_pool, from_sdk = fake_server.requests
    assert from_pool.path == from_sdk.path
    assert from_pool.headers == from_sdk.headers
    assert from_pool.body == from_sdk.body


async def test_pool_reads_what_sdk_reads(
    pooled: OpenAIProvider, through_sdk: OpenAIProvider, fake_server: FakeServer
) -> None:
    body = openai_completion("Paris.", prompt_tokens=40, completion_tokens=3, cached_tokens=32)
    fake_server.plan(PlannedReply(body=body), PlannedReply(body=body))

    assert await pooled.complete(user_request()) == await through_sdk.complete(user_request())


ERROR_REPLIES = [
    pytest.param(
        PlannedReply(
            status=429,
            body=openai_error("Rate limit reached.", error_type="requests", code="rate_limit_exceeded"),
            headers={"retry-after-ms": "1500"},
        ),
        id="rate-limit",
    ),
    pytest.param(
        PlannedReply(
            status=400,
            body=openai_error(
                "This model's maximum context length is 128000 tokens.",
                code="context_length_exceeded",
            ),
        ),
        id="context-length",
    ),
    pytest.param(
        PlannedReply(status=401, body=openai_error(f"Incorrect API key provided: {API_KEY}.")),
        id="key-in-message",
    ),
    pytest.param(PlannedReply(status=502, body="<html><body>Bad Gateway</body></html>"), id="html"),
    pytest.param(PlannedReply(status=500, body=""), id="empty"),
    pytest.param(PlannedReply(status=400, body={"error": None, "message": "ignored"}), id="null-error"),
    pytest.param(
        PlannedReply(status=429, body=[{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}]),
        id="list",
    ),
    pytest.param(PlannedReply(status=418, body="I'm a teapot"), id="unknown-status"),
]


@pytest.mark.parametrize("planned", ERROR_REPLIES)
async def test_errors_match_sdk(
    pooled: OpenAIProvider,
    through_sdk: OpenAIProvider,
    fake_server: FakeServer,
    planned: PlannedReply,
) -> None:
    fake_server.plan(planned, planned)

    with pytest.raises(ProviderError) as from_pool:
        await pooled.complete(user_request())
    with pytest.raises(ProviderError) as from_sdk:
        await through_sdk.complete(user_request())

    assert from_pool.value.kind is from_sdk.value.kind
    assert from_pool.value.status_code == from_sdk.value.status_code
    assert from_pool.value.retry_after_s == from_sdk.value.retry_after_s
    assert str(from_pool.value) == str(from_sdk.value)


async def test_redirect_followed_by_sdk(pooled: OpenAIProvider, fake_server: FakeServer) -> None:
    target = fake_server.openai_base_url + "/chat/completions"
    fake_server.plan(PlannedReply(status=307, body="", headers={"location": target}))

    response = await pooled.complete(user_request())

    assert response.text == "Hello from the fake server."
    assert len(fake_server.requests) == 2


async def test_connection_refused_matches_sdk(closed_port_url: str) -> None:
    pooled = OpenAIProvider.create(MODEL, api_key=API_KEY, base_url=f"{closed_port_url}/v1")
    client = openai.AsyncOpenAI(
        api_key=API_KEY,
        base_url=f"{closed_port_url}/v1",
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(),
    )
    through_sdk = OpenAIProvider(client, MODEL)

    with pytest.raises(ProviderError) as from_pool:
        await pooled.complete(user_request())
    with pytest.raises(ProviderError) as from_sdk:
        await through_sdk.complete(user_request())
    await pooled.aclose()
    await through_sdk.aclose()

    assert from_pool.value.kind is from_sdk.value.kind
    assert from_pool.value.status_code is None
    assert str(from_pool.value).startswith("openai request for model 'gpt-4o-mini' could not reach")
