"""Calls made through the gateway show on the dashboard under the key that made them."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from gateway.harness import GatewayServer
from gateway.test_dashboard import Values
from trunkline.store.keys import Role, find_key
from trunkline.store.tables import calls


def test_gateway_calls_counted_by_key(gateway: GatewayServer) -> None:
    key = gateway.key(Role.DEVELOPER)
    key_id = find_key(gateway.store, key).key_id
    with gateway.client(key) as client:
        for _ in range(3):
            response = client.post(
                "/v1/chat/completions",
                json={"model": "priced", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert response.status_code == 200
    gateway.flush()
    with gateway.store.engine.connect() as connection:
        stored = connection.execute(
            select(calls.c.api_key_id, calls.c.cost_usd, calls.c.route)
        ).all()
    with gateway.client(gateway.key(Role.VIEWER)) as client:
        cost = Values(client.get("/cost").text)
        overview = Values(client.get("/").text)
        listed = client.get("/api/calls", params={"key": key_id}).json()["data"]

    assert [row.api_key_id for row in stored] == [key_id] * 3
    total = sum(row.cost_usd for row in stored)
    assert total > 0
    assert int(cost.pick(table="by-key", row=key_id, column="calls")) == 3
    assert float(cost.pick(table="by-key", row=key_id, column="cost_usd")) == pytest.approx(total)
    assert cost.pick(table="by-key", row=key_id, column="calls", detail="test developer") == "3"
    assert int(cost.pick(table="by-task", row="priced", column="calls")) == 3
    assert int(overview.pick(metric="calls", period="today")) == 3
    assert float(overview.pick(metric="cost_usd", period="today")) == pytest.approx(total)
    assert [item["api_key_id"] for item in listed] == [key_id] * 3
