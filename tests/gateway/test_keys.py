"""Keys through the admin API and the store functions, and the audit log of every change."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from fakeserver import FakeServer
from gateway.harness import GatewayServer, gateway_settings, running_gateway
from trunkline.errors import ConfigError
from trunkline.prompts import ChatTemplate, PromptContent
from trunkline.prompts.registry import PromptRegistry
from trunkline.server import auth
from trunkline.store.audit import list_actions
from trunkline.store.keys import (
    KeyLimits,
    Role,
    create_key,
    expiry_after,
    get_key,
    revoke_key,
    rotate_key,
    set_limits,
)
from trunkline.store.tables import api_keys


@pytest.fixture
def gateway(fake_server: FakeServer, tmp_path: Path, store_url: str) -> Iterator[GatewayServer]:
    """A gateway whose keys and audit log are kept on SQLite, and again on PostgreSQL."""
    with running_gateway(gateway_settings(fake_server.base_url), tmp_path, store_url=store_url) as server:
        yield server


@pytest.fixture
def admin(gateway: GatewayServer) -> tuple[str, httpx.Client]:
    """An admin key's id and a client that sends it."""
    new = gateway.new_key(Role.ADMIN)
    with gateway.client(new.secret) as client:
        yield new.key.key_id, client


def key_rows(gateway: GatewayServer) -> list[dict[str, Any]]:
    with gateway.store.engine.connect() as connection:
        return [dict(row) for row in connection.execute(select(api_keys)).mappings()]


def audit(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/admin/audit", params=params)
    assert response.status_code == 200
    return response.json()["data"]


def status_with(gateway: GatewayServer, secret: str) -> httpx.Response:
    with gateway.client(secret) as client:
        return client.get("/v1/models")


def test_create_api(gateway: GatewayServer, admin: tuple[str, httpx.Client]) -> None:
    admin_id, client = admin
    body = {"role": "developer", "name": "search team", "rpm": 60, "tpm": 5000, "routes": ["chat"]}
    response = client.post("/admin/keys", json=body)
    assert response.status_code == 201
    created = response.json()
    secret = created["key"]
    assert secret.startswith(f"tk-{created['key_id']}-")
    assert created["role"] == "developer"
    assert created["state"] == "active"
    assert created["created_by"] == f"key:{admin_id}"
    assert (created["rpm"], created["tpm"], created["routes"]) == (60, 5000, ["chat"])
    assert status_with(gateway, secret).json()["data"] == [
        {"id": "chat", "object": "model", "created": 0, "owned_by": "trunkline"}
    ]


def test_list_and_get_api(gateway: GatewayServer, admin: tuple[str, httpx.Client]) -> None:
    admin_id, client = admin
    created = client.post("/admin/keys", json={"role": "viewer", "name": "dashboards"}).json()
    listed = client.get("/admin/keys").json()["data"]
    assert [item["key_id"] for item in listed] == [admin_id, created["key_id"]]
    assert all("key" not in item for item in listed)
    one = client.get(f"/admin/keys/{created['key_id']}").json()
    assert one["name"] == "dashboards"
    assert "key" not in one
    assert client.get("/admin/keys/000000000000").status_code == 404


def test_store_holds_hash(gateway: GatewayServer, admin: tuple[str, httpx.Client]) -> None:
    _, client = admin
    secret = client.post("/admin/keys", json={"role": "developer"}).json()["key"]
    # The secret part is URL-safe base64, which may itself contain "-".
    random_part = secret.split("-", 2)[2]
    rows = key_rows(gateway)
    assert len(rows) == 2
    for row in rows:
        for value in row.values():
            assert random_part not in str(value)
    hashes = {row["key_hash"] for row in rows}
    assert hashlib.sha256(secret.encode()).hexdigest() in hashes
    # The stored hash is not a key the gateway accepts.
    for digest in hashes:
        assert status_with(gateway, digest).status_code == 401


def test_revoke_api(gateway: GatewayServer, admin: tuple[str, httpx.Client]) -> None:
    _, client = admin
    created = client.post("/admin/keys", json={"role": "developer"}).json()
    # Used once, so the gateway's key cache contains it as active.
    assert status_with(gateway, created["key"]).status_code == 200
    response = client.post(f"/admin/keys/{created['key_id']}/revoke")
    assert response.status_code == 200
    assert response.json()["state"] == "revoked"
    refused = status_with(gateway, created["key"])
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "revoked_api_key"
    again = client.post(f"/admin/keys/{created['key_id']}/revoke")
    assert again.status_code == 200
    assert len(audit(client, action="key.revoked")) == 1


def test_rotate_api(gateway: GatewayServer, admin: tuple[str, httpx.Client]) -> None:
    _, client = admin
    limits = {"rpm": 30, "tpm": 9000, "budget_usd_per_day": 2.5, "routes": ["chat", "claude"]}
    old = client.post("/admin/keys", json={"role": "developer", "name": "batch", **limits}).json()
    assert status_with(gateway, old["key"]).status_code == 200
    response = client.post(f"/admin/keys/{old['key_id']}/rotate")
    assert response.status_code == 201
    new = response.json()
    assert new["key_id"] != old["key_id"]
    assert new["rotated_from"] == old["key_id"]
    assert (new["role"], new["name"]) == ("developer", "batch")
    assert {name: new[name] for name in limits} == limits
    assert status_with(gateway, old["key"]).status_code == 401
    assert status_with(gateway, new["key"]).status_code == 200
    again = client.post(f"/admin/keys/{old['key_id']}/rotate")
    assert again.status_code == 400
    assert "revoked" in again.json()["error"]["message"]


def test_limits_api(gateway: GatewayServer, admin: tuple[str, httpx.Client]) -> None:
    _, client = admin
    created = client.post("/admin/keys", json={"role": "developer", "rpm": 10}).json()
    body = {"tpm": 4000, "routes": ["priced"], "expires_in_days": 30}
    response = client.put(f"/admin/keys/{created['key_id']}/limits", json=body)
    assert response.status_code == 200
    changed = response.json()
    assert changed["rpm"] == 10
    assert changed["tpm"] == 4000
    assert changed["routes"] == ["priced"]
    expires = datetime.fromisoformat(changed["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    # The key's cached copy is dropped, so the new routes apply to its next request.
    models = status_with(gateway, created["key"]).json()["data"]
    assert [item["id"] for item in models] == ["priced"]


def test_limits_null_lifts(gateway: GatewayServer, admin: tuple[str, httpx.Client]) -> None:
    _, client = admin
    limits = {"rpm": 10, "tpm": 4000, "budget_usd_per_day": 3, "routes": ["chat"], "expires_in_days": 5}
    created = client.post("/admin/keys", json={"role": "developer", **limits}).json()
    body = {"rpm": None, "routes": None, "expires_in_days": None}
    changed = client.put(f"/admin/keys/{created['key_id']}/limits", json=body).json()
    assert changed["rpm"] is None
    assert changed["routes"] is None
    assert changed["expires_at"] is None
    assert changed["tpm"] == 4000
    assert changed["budget_usd_per_day"] == 3


@pytest.mark.parametrize(
    ("url", "body", "field", "meant"),
    [
        ("/admin/keys", {"role": "developer", "budget": 5}, "budget", "budget_usd_per_day"),
        ("/admin/keys", {"role": "developer", "expires_at": "2030-01-01"}, "expires_at", "expires_in_days"),
        ("/admin/keys/KEY/limits", {"budget": 5}, "budget", "budget_usd_per_day"),
        ("/admin/keys/KEY/limits", {"rpm": 5, "route": ["chat"]}, "route", "routes"),
        ("/admin/prompts/classify/labels/production", {"version": 1, "by": "x"}, "by", None),
    ],
)
def test_unknown_field(
    admin: tuple[str, httpx.Client], url: str, body: dict[str, Any], field: str, meant: str | None
) -> None:
    admin_id, client = admin
    method = "POST" if url == "/admin/keys" else "PUT"
    response = client.request(method, url.replace("KEY", admin_id), json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"] == field
    assert f"unknown field {field!r}" in error["message"]
    if meant is not None:
        assert f"did you mean {meant}?" in error["message"]
    assert audit(client, actor=f"key:{admin_id}") == []


def test_limits_empty_body(admin: tuple[str, httpx.Client]) -> None:
    admin_id, client = admin
    response = client.put(f"/admin/keys/{admin_id}/limits", json={})
    assert response.status_code == 422
    assert "the body names no limit" in response.json()["error"]["message"]
    assert audit(client, action="key.limits_changed") == []


def test_limits_unchanged_not_audited(admin: tuple[str, httpx.Client]) -> None:
    _, client = admin
    created = client.post("/admin/keys", json={"role": "developer", "rpm": 10}).json()
    response = client.put(f"/admin/keys/{created['key_id']}/limits", json={"rpm": 10})
    assert response.status_code == 200
    assert audit(client, action="key.limits_changed") == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"role": "owner"}, 422),
        ({"role": "developer", "rpm": 0}, 422),
        ({"role": "developer", "tpm": -5}, 422),
        ({"role": "developer", "budget_usd_per_day": 0}, 422),
        ({"role": "developer", "routes": []}, 422),
        ({"role": "developer", "expires_in_days": 0}, 422),
        ({"role": "developer", "routes": ["chat", ""]}, 422),
        ({"role": "developer", "rpm": 10**9 + 1}, 422),
        ({"role": "developer", "expires_in_days": 36_501}, 422),
        ({"role": "developer", "routes": ["chat", "gpt-9"]}, 400),
    ],
)
def test_create_invalid(admin: tuple[str, httpx.Client], body: dict[str, Any], status: int) -> None:
    admin_id, client = admin
    response = client.post("/admin/keys", json=body)
    assert response.status_code == status
    assert response.json()["error"]["message"]
    assert audit(client, actor=f"key:{admin_id}") == []


def test_unknown_route_named(admin: tuple[str, httpx.Client]) -> None:
    _, client = admin
    response = client.post("/admin/keys", json={"role": "developer", "routes": ["gpt-9"]})
    error = response.json()["error"]
    assert error["param"] == "routes"
    assert "gpt-9" in error["message"]
    assert "chat" in error["message"]


def test_audit_api(gateway: GatewayServer, admin: tuple[str, httpx.Client]) -> None:
    admin_id, client = admin
    before = datetime.now(UTC)
    created = client.post("/admin/keys", json={"role": "developer", "name": "ci"}).json()
    key_id = created["key_id"]
    client.put(f"/admin/keys/{key_id}/limits", json={"rpm": 5})
    rotated = client.post(f"/admin/keys/{key_id}/rotate").json()
    client.post(f"/admin/keys/{rotated['key_id']}/revoke")
    after = datetime.now(UTC)

    entries = audit(client, actor=f"key:{admin_id}")
    assert [(entry["action"], entry["target"]) for entry in entries] == [
        ("key.revoked", rotated["key_id"]),
        ("key.revoked", key_id),
        ("key.rotated", rotated["key_id"]),
        ("key.limits_changed", key_id),
        ("key.created", key_id),
    ]
    for entry in entries:
        assert entry["actor"] == f"key:{admin_id}"
        assert before <= datetime.fromisoformat(entry["at"]) <= after
    limits = entries[3]["details"]
    assert limits["before"]["rpm"] is None
    assert limits["after"]["rpm"] == 5
    assert entries[2]["details"]["from"] == key_id
    assert entries[2]["details"]["rpm"] == 5
    assert entries[4]["details"] == {
        "role": "developer",
        "name": "ci",
        "budget_usd_per_day": None,
        "rpm": None,
        "tpm": None,
        "routes": None,
        "expires_at": None,
    }


def test_created_audit_limits(admin: tuple[str, httpx.Client]) -> None:
    _, client = admin
    limits = {"budget_usd_per_day": 2.5, "rpm": 30, "tpm": 900, "routes": ["chat"], "expires_in_days": 7}
    body = {"role": "viewer", **limits}
    created = client.post("/admin/keys", json=body).json()
    details = audit(client, action="key.created")[0]["details"]
    assert details["budget_usd_per_day"] == 2.5
    assert (details["rpm"], details["tpm"], details["routes"]) == (30, 900, ["chat"])
    assert details["expires_at"] == created["expires_at"]


def test_audit_pages(admin: tuple[str, httpx.Client]) -> None:
    admin_id, client = admin
    for index in range(3):
        client.post("/admin/keys", json={"role": "viewer", "name": f"reader {index}"})
    params = {"limit": 2, "offset": 1, "actor": f"key:{admin_id}"}
    page = client.get("/admin/audit", params=params).json()
    assert page["total"] == 3
    assert [entry["details"]["name"] for entry in page["data"]] == ["reader 1", "reader 0"]
    assert client.get("/admin/audit", params={"actor": "cli:nobody"}).json()["total"] == 0
    assert client.get("/admin/audit", params={"limit": 0}).status_code == 422


def test_label_move_audit(gateway: GatewayServer, admin: tuple[str, httpx.Client]) -> None:
    admin_id, client = admin
    registry = PromptRegistry(gateway.store)
    # A namespaced name: the slash stays part of the name in the URL.
    for text in ("Summarise: {{ text }}", "Summarise briefly: {{ text }}"):
        content = PromptContent(messages=[ChatTemplate(role="user", content=text)])
        registry.create_version("support/summary", content, author="test")

    moved = client.put("/admin/prompts/support/summary/labels/production", json={"version": 1})
    assert moved.status_code == 200
    assert moved.json()["name"] == "support/summary"
    assert moved.json()["moved_by"] == f"key:{admin_id}"
    moved = client.put("/admin/prompts/support/summary/labels/production", json={"version": 2})
    assert moved.json()["from_version"] == 1

    entries = audit(client, action="label.moved")
    assert [entry["details"]["to"] for entry in entries] == [2, 1]
    assert entries[0]["details"]["from"] == 1
    assert entries[0]["target"] == "support/summary:production"
    assert entries[0]["actor"] == f"key:{admin_id}"
    assert registry.get("support/summary:production").version == 2


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/admin/prompts/classify/labels/production", {"version": 10**30}),
        ("/admin/prompts/classify/labels/production", {"version": 0}),
        ("/admin/keys", {"role": "developer", "rpm": 10**30}),
    ],
)
def test_huge_numbers(admin: tuple[str, httpx.Client], url: str, body: dict[str, Any]) -> None:
    _, client = admin
    response = client.request("PUT" if "labels" in url else "POST", url, json=body)
    assert response.status_code == 422


def test_label_unknown_prompt(gateway: GatewayServer, admin: tuple[str, httpx.Client]) -> None:
    _, client = admin
    response = client.put("/admin/prompts/nothing/labels/production", json={"version": 1})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "nothing" in response.json()["error"]["message"]
    content = PromptContent(messages=[ChatTemplate(role="user", content="Hi {{ name }}")])
    PromptRegistry(gateway.store).create_version("greet", content, author="test")
    missing_version = client.put("/admin/prompts/greet/labels/production", json={"version": 4})
    assert missing_version.status_code == 404
    assert "its versions are 1 to 1" in missing_version.json()["error"]["message"]
    bad_label = client.put("/admin/prompts/greet/labels/no%20spaces", json={"version": 1})
    assert bad_label.status_code == 400


def test_store_functions(gateway: GatewayServer) -> None:
    store = gateway.store
    limits = KeyLimits(rpm=20, routes=("chat",))
    new = create_key(store, Role.DEVELOPER, name="nightly", limits=limits, actor="cli:ops")
    key_id = new.key.key_id
    assert get_key(store, key_id).rpm == 20

    changed = set_limits(store, key_id, KeyLimits(tpm=100), actor="cli:ops")
    assert (changed.rpm, changed.tpm, changed.routes) == (None, 100, None)
    rotated = rotate_key(store, key_id, actor="cli:ops")
    assert rotated.key.tpm == 100
    assert get_key(store, key_id).state() == "revoked"
    revoked = revoke_key(store, rotated.key.key_id, actor="cli:ops")
    assert revoked.state() == "revoked"
    with pytest.raises(ConfigError):
        rotate_key(store, key_id, actor="cli:ops")

    entries, total = list_actions(store, actor="cli:ops")
    assert total == 5
    assert [entry["action"] for entry in entries] == [
        "key.revoked", "key.revoked", "key.rotated", "key.limits_changed", "key.created",
    ]  # fmt: skip
    assert [row["key_hash"] for row in key_rows(gateway) if row["key_id"] == key_id] == [
        hashlib.sha256(new.secret.encode()).hexdigest()
    ]


@pytest.mark.parametrize(
    "limits",
    [
        {"rpm": 0},
        {"tpm": True},
        {"budget_usd_per_day": float("inf")},
        {"budget_usd_per_day": -1.0},
        {"budget_usd_per_day": 1e10},
        {"rpm": 10**20},
        {"tpm": 10**13},
        {"routes": ()},
        {"routes": ("chat", " ")},
    ],
)
def test_store_rejects_limits(limits: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        KeyLimits(**limits)


def test_expiry_bounds() -> None:
    with pytest.raises(ConfigError, match="at most 36500 days"):
        expiry_after(1e12)
    with pytest.raises(ConfigError):
        expiry_after(0)
    assert expiry_after(1) > datetime.now(UTC)


def test_expired_key(gateway: GatewayServer) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    limits = KeyLimits(expires_at=past)
    secret = create_key(gateway.store, Role.ADMIN, limits=limits, actor="test").secret
    response = status_with(gateway, secret)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "expired_api_key"


def test_prompt_version_api(gateway: GatewayServer, admin: tuple[str, httpx.Client]) -> None:
    admin_id, client = admin
    body = {"messages": [{"role": "user", "content": "Classify: {{ text }}"}], "metadata": {"purpose": "intents"}}

    created = client.post("/admin/prompts/support/classify/versions", json=body)
    assert created.status_code == 201
    assert created.json()["name"] == "support/classify"
    assert created.json()["version"] == 1
    assert created.json()["created"] is True

    again = client.post("/admin/prompts/support/classify/versions", json=body)
    assert again.status_code == 200
    assert again.json()["version"] == 1
    assert again.json()["created"] is False

    version = PromptRegistry(gateway.store).get("support/classify@1")
    assert version.author == f"key:{admin_id}"
    entries = audit(client, action="prompt.version_created")
    assert len(entries) == 1
    assert entries[0]["target"] == "support/classify@1"
    assert entries[0]["actor"] == f"key:{admin_id}"


def test_prompt_version_api_rejects(gateway: GatewayServer, admin: tuple[str, httpx.Client]) -> None:
    _, client = admin
    no_messages = client.post("/admin/prompts/classify/versions", json={"messages": []})
    assert no_messages.status_code == 422
    undeclared = client.post(
        "/admin/prompts/classify/versions",
        json={"messages": [{"role": "user", "content": "{{ text }}"}], "variables": {"other": "string"}},
    )
    assert undeclared.status_code == 422
    assert "text" in undeclared.json()["error"]["message"]

    # A list of variables must be names; anything else is a bad body, never a crash.
    listed = client.post(
        "/admin/prompts/classify/versions",
        json={"messages": [{"role": "user", "content": "Hi"}], "variables": [{"name": "text"}]},
    )
    assert listed.status_code == 422

    developer = gateway.key(Role.DEVELOPER)
    with gateway.client(developer) as client_of_developer:
        denied = client_of_developer.post(
            "/admin/prompts/classify/versions", json={"messages": [{"role": "user", "content": "Hi"}]}
        )
    assert denied.status_code == 403


def test_unseen_key_read_off_loop(gateway: GatewayServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # A cache miss reads the store in a worker thread, where no event loop runs.
    reads: list[bool] = []
    original = auth.find_key

    def recording_find_key(store, secret):  # noqa: ANN001, ANN202
        try:
            asyncio.get_running_loop()
            reads.append(True)
        except RuntimeError:
            reads.append(False)
        return original(store, secret)

    monkeypatch.setattr(auth, "find_key", recording_find_key)
    new = gateway.new_key(Role.VIEWER)
    with gateway.client(new.secret) as client:
        first = client.get("/v1/models")
        second = client.get("/v1/models")
    with gateway.client("tk-unknown-secret") as client:
        unknown = client.get("/v1/models")
    assert first.status_code == 200
    assert second.status_code == 200
    assert unknown.status_code == 401
    # One read for the new key (the second request hits the cache), one for the unknown key.
    assert reads == [False, False]
