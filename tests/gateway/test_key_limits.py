"""Per-key rpm, tpm and daily budgets, in one gateway and shared by two through Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakeserver import FakeServer, PlannedReply, openai_error
from gateway.harness import GatewayServer, gateway_settings, running_gateway
from trunkline.config import Settings
from trunkline.store.keys import Role

USER = [{"role": "user", "content": "Hello"}]
#: The fake's default reply is 12 input and 5 output tokens; `priced` costs $0.001 a token.
CALL_COST_USD = 0.017


def chat(client: httpx.Client, model: str = "chat", **options: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": model, "messages": USER, **options})


def message(client: httpx.Client, model: str = "chat", **options: Any) -> httpx.Response:
    body = {"model": model, "max_tokens": 10, "messages": USER, **options}
    return client.post("/v1/messages", json=body)


def retry_after(response: httpx.Response) -> int:
    return int(response.headers["retry-after"])


def seconds_to_midnight() -> float:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


def test_rpm(gateway: GatewayServer, fake_server: FakeServer) -> None:
    with gateway.client(gateway.key(rpm=2)) as client:
        statuses = [chat(client).status_code for _ in range(2)]
        refused = chat(client)
    assert statuses == [200, 200]
    assert refused.status_code == 429
    assert 1 <= retry_after(refused) <= 60
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "2 requests per minute" in refused.json()["error"]["message"]
    assert len(fake_server.requests) == 2


def test_rpm_metrics(gateway: GatewayServer) -> None:
    with gateway.client(gateway.key(rpm=1, routes=("chat",))) as client:
        assert chat(client).status_code == 200
        assert chat(client).status_code == 429
        assert chat(client, "claude").status_code == 403
    with gateway.client(gateway.key(Role.METRICS)) as scraper:
        text = scraper.get("/metrics").text
    requests = 'trunkline_gateway_requests_total{endpoint="chat_completions",model="chat",status='
    assert f'{requests}"429"}} 1.0' in text
    assert 'trunkline_gateway_errors_total{kind="rate_limited"} 1.0' in text
    assert 'trunkline_gateway_errors_total{kind="permission"} 1.0' in text


def test_rpm_anthropic(gateway: GatewayServer, fake_server: FakeServer) -> None:
    with gateway.client(gateway.key(rpm=1)) as client:
        assert message(client).status_code == 200
        refused = message(client)
    assert refused.status_code == 429
    assert 1 <= retry_after(refused) <= 60
    assert refused.json()["type"] == "error"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert len(fake_server.requests) == 1


def test_rpm_per_key(gateway: GatewayServer) -> None:
    with gateway.client(gateway.key(rpm=1)) as first, gateway.client(gateway.key(rpm=1)) as second:
        assert chat(first).status_code == 200
        assert chat(first).status_code == 429
        assert chat(second).status_code == 200


def test_tpm(gateway: GatewayServer, fake_server: FakeServer) -> None:
    # A request reserves its prompt estimate (2 tokens) plus max_tokens, and
    # settles to the 17 tokens the reply used.
    with gateway.client(gateway.key(tpm=100)) as client:
        assert chat(client, max_tokens=80).status_code == 200
        refused = chat(client, max_tokens=90)
        fits = chat(client, max_tokens=70)
    assert refused.status_code == 429
    assert 1 <= retry_after(refused) <= 60
    assert "100 tokens per minute" in refused.json()["error"]["message"]
    assert fits.status_code == 200
    assert len(fake_server.requests) == 2


def test_tpm_never_fits(gateway: GatewayServer, fake_server: FakeServer) -> None:
    # No wait lets such a request through, so it is a bad request rather than a rate limit.
    with gateway.client(gateway.key(tpm=100)) as client:
        refused = chat(client, max_tokens=10**9)
        refused_anthropic = message(client, max_tokens=500)
    assert refused.status_code == 400
    assert "retry-after" not in refused.headers
    error = refused.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["param"] == "max_tokens"
    assert "can never be admitted" in error["message"]
    assert "lower max_tokens" in error["message"]
    assert refused_anthropic.status_code == 400
    assert refused_anthropic.json()["error"]["type"] == "invalid_request_error"
    assert fake_server.requests == []


def test_budget(gateway: GatewayServer, fake_server: FakeServer) -> None:
    # Each call reserves its worst case of (2 + 10) tokens and then costs 17.
    new = gateway.new_key(budget_usd_per_day=0.04)
    key_id = new.key.key_id
    with gateway.client(new.secret) as client:
        statuses = [chat(client, "priced", max_tokens=10).status_code for _ in range(2)]
        refused = chat(client, "priced", max_tokens=10)
        refused_anthropic = message(client, "priced")
    assert statuses == [200, 200]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert abs(retry_after(refused) - seconds_to_midnight()) < 60
    text = refused.json()["error"]["message"]
    assert text.startswith(f"the key {key_id} has used its daily budget of $0.04")
    assert f"ask an admin to raise the budget with `trunkline keys limits {key_id} --budget USD`" in text
    assert "raise that budget's limit" not in text
    assert refused_anthropic.status_code == 429
    assert refused_anthropic.json()["error"]["type"] == "rate_limit_error"
    assert len(fake_server.requests) == 2
    spent = sum(row["cost_usd"] or 0 for row in gateway.calls())
    assert spent == pytest.approx(2 * CALL_COST_USD)


def test_budget_per_key(gateway: GatewayServer) -> None:
    spender = gateway.key(budget_usd_per_day=0.02)
    other = gateway.key(budget_usd_per_day=0.02)
    with gateway.client(spender) as client:
        assert chat(client, "priced", max_tokens=10).status_code == 200
        assert chat(client, "priced", max_tokens=10).status_code == 429
    with gateway.client(other) as client:
        assert chat(client, "priced", max_tokens=10).status_code == 200


def test_budget_stream(gateway: GatewayServer, fake_server: FakeServer) -> None:
    with gateway.client(gateway.key(budget_usd_per_day=0.02)) as client:
        assert chat(client, "priced", max_tokens=10, stream=True).status_code == 200
        refused = chat(client, "priced", max_tokens=10, stream=True)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert len(fake_server.requests) == 1


def test_budget_after_fallback(fake_server: FakeServer, tmp_path: Path) -> None:
    # The first deployment fails, and the second one's worst case ($0.12) is over the budget.
    declared = gateway_settings(fake_server.base_url).model_dump(exclude_unset=True)
    dear = {"provider": "openai", "model": "dear-model", "base_url": fake_server.openai_base_url}
    declared["deployments"]["fake-dear"] = dear
    declared["routes"]["spill"] = {"deployments": ["fake-priced", "fake-dear"], "max_attempts": 1}
    declared["prices"]["dear-model"] = {"input_per_mtok": 10_000.0, "output_per_mtok": 10_000.0}
    settings = Settings.model_validate(declared)
    fake_server.plan(PlannedReply(status=500, body=openai_error("boom", error_type="server_error")))
    with running_gateway(settings, tmp_path) as server:
        with server.client(server.key(budget_usd_per_day=0.05)) as client:
            refused = chat(client, "spill", max_tokens=10)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert abs(retry_after(refused) - seconds_to_midnight()) < 60
    assert len(fake_server.requests) == 1


def test_limits_change(gateway: GatewayServer) -> None:
    new = gateway.new_key(rpm=1)
    admin = gateway.key(Role.ADMIN)
    with gateway.client(new.secret) as client, gateway.client(admin) as admin_client:
        assert chat(client).status_code == 200
        assert chat(client).status_code == 429
        changed = admin_client.put(f"/admin/keys/{new.key.key_id}/limits", json={"rpm": 3})
        assert changed.status_code == 200
        assert chat(client).status_code == 200


def test_revoked_at_once(gateway: GatewayServer, fake_server: FakeServer) -> None:
    new = gateway.new_key()
    admin = gateway.key(Role.ADMIN)
    with gateway.client(new.secret) as client, gateway.client(admin) as admin_client:
        assert chat(client).status_code == 200
        assert admin_client.post(f"/admin/keys/{new.key.key_id}/revoke").status_code == 200
        refused = chat(client)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "revoked_api_key"
    assert len(fake_server.requests) == 1


async def test_concurrent_requests(gateway: GatewayServer, fake_server: FakeServer) -> None:
    secret = gateway.key(rpm=100, tpm=100_000)
    headers = {"authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=30) as client:
        body = {"model": "chat", "messages": USER}
        sends = [client.post("/v1/chat/completions", json=body) for _ in range(8)]
        answers = await asyncio.gather(*sends)
    assert [answer.status_code for answer in answers] == [200] * 8


# Two gateways sharing one store and one Redis, as two processes behind a load balancer would.


@pytest.fixture
def shared_pair(
    fake_server: FakeServer, tmp_path: Path, redis_url: str
) -> Iterator[list[GatewayServer]]:
    settings = gateway_settings(fake_server.base_url).model_copy(update={"redis_url": redis_url})
    store_url = f"sqlite:///{tmp_path / 'shared.db'}"
    with (
        running_gateway(settings, tmp_path, store_url=store_url) as first,
        running_gateway(settings, tmp_path, store_url=store_url) as second,
    ):
        yield [first, second]


def test_shared_rpm(shared_pair: list[GatewayServer], fake_server: FakeServer) -> None:
    secret = shared_pair[0].key(rpm=4)
    statuses = []
    for index in range(10):
        with shared_pair[index % 2].client(secret) as client:
            statuses.append(chat(client).status_code)
    assert statuses.count(200) == 4
    assert statuses[:4] == [200] * 4
    assert statuses.count(429) == 6
    assert len(fake_server.requests) == 4


async def test_shared_rpm_concurrent(
    shared_pair: list[GatewayServer], fake_server: FakeServer
) -> None:
    secret = shared_pair[0].key(rpm=5)
    headers = {"authorization": f"Bearer {secret}"}
    body = {"model": "chat", "messages": USER}
    clients = [
        httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30)
        for server in shared_pair
    ]
    try:
        answers = await asyncio.gather(
            *(clients[index % 2].post("/v1/chat/completions", json=body) for index in range(12))
        )
    finally:
        for client in clients:
            await client.aclose()
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(200) == 5
    assert statuses.count(429) == 7
    assert len(fake_server.requests) == 5


async def test_shared_under_limit(shared_pair: list[GatewayServer]) -> None:
    # Requests that fit the key's rpm all pass, however they interleave.
    secret = shared_pair[0].key(rpm=100)
    headers = {"authorization": f"Bearer {secret}"}
    body = {"model": "chat", "messages": USER}
    clients = [
        httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30)
        for server in shared_pair
    ]
    try:
        answers = await asyncio.gather(
            *(clients[index % 2].post("/v1/chat/completions", json=body) for index in range(12))
        )
    finally:
        for client in clients:
            await client.aclose()
    assert [answer.status_code for answer in answers] == [200] * 12


def test_shared_budget(shared_pair: list[GatewayServer], fake_server: FakeServer) -> None:
    secret = shared_pair[0].key(budget_usd_per_day=0.04)
    statuses = []
    for index in range(6):
        with shared_pair[index % 2].client(secret) as client:
            statuses.append(chat(client, "priced", max_tokens=10).status_code)
    assert statuses == [200, 200, 429, 429, 429, 429]
    assert len(fake_server.requests) == 2
