"""The Router over the real openai SDK and a local fake server: faults a server can produce."""

from __future__ import annotations

import pytest

from fakeserver import FakeServer, PlannedReply, openai_completion
from trunkline.config import Settings
from trunkline.errors import ErrorKind, ProviderError
from trunkline.routing import Router


def router_for(server: FakeServer, model: str = "gpt-4o-mini") -> Router:
    settings = Settings.model_validate(
        {
            "deployments": {
                "remote": {"provider": "openai", "model": model, "base_url": server.openai_base_url}
            },
            "routes": {
                "main": {"deployments": ["remote"], "max_attempts": 2, "backoff_base_s": 0.001}
            },
            "default_route": "main",
        }
    )
    return Router(settings)


@pytest.mark.parametrize(
    "body",
    ["<html>Bad gateway</html>", {"id": "x", "object": "chat.completion", "choices": []}],
)
async def test_malformed_response_is_recorded_and_retried(fake_server: FakeServer, body) -> None:
    fake_server.plan(PlannedReply(status=200, body=body), PlannedReply(status=200, body=body))
    router = router_for(fake_server)
    with pytest.raises(ProviderError) as caught:
        await router.complete("hi")
    record = caught.value.record
    assert caught.value.kind == ErrorKind.SERVER_ERROR
    assert "malformed response" in str(caught.value)
    assert len(record.attempts) == 2
    assert record.outcome == "error"
    await router.aclose()


async def test_missing_usage_is_estimated(fake_server: FakeServer) -> None:
    body = openai_completion(content="Paris is in France.")
    del body["usage"]
    fake_server.plan(PlannedReply(status=200, body=body))
    router = router_for(fake_server)
    record = (await router.complete("Where is Paris?")).record
    assert record.usage.estimated
    assert record.usage.input_tokens > 0
    assert record.usage.output_tokens > 0
    assert record.cost.total_usd > 0
    await router.aclose()
