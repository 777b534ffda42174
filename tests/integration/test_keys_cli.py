"""`trunkline keys`, `trunkline audit` and `trunkline serve`, end to end in subprocesses."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from datetime import UTC, datetime, timedelta

import httpx

from integration.cli import run_trunkline, start_serve
from trunkline.store.database import open_store
from trunkline.store.keys import KeyLimits, Role, create_key


#: The default width of a terminal; ids must stay whole in it.
NARROW = {"COLUMNS": "80"}


def _keys(folder: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return run_trunkline(folder, "keys", *arguments, env=NARROW)


def _create(folder: Path, *arguments: str) -> dict:
    result = _keys(folder, "create", *arguments, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_keys_create_prints_key_once(tmp_path: Path) -> None:
    created = _create(tmp_path, "--role", "developer", "--name", "search", "--rpm", "60", "--routes", "local")
    assert created["key"].startswith(f"tk-{created['key_id']}-")
    assert created["role"] == "developer"
    assert created["rpm"] == 60
    assert created["routes"] == ["local"]

    listed = _keys(tmp_path, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert created["key"] not in listed.stdout
    assert json.loads(listed.stdout)[0]["key_id"] == created["key_id"]

    with sqlite3.connect(tmp_path / ".trunkline" / "trunkline.db") as connection:
        dump = "\n".join(connection.iterdump())
    assert created["key"] not in dump
    assert created["key"].split("-", 2)[2] not in dump


def test_keys_rotate_and_revoke(tmp_path: Path) -> None:
    old = _create(tmp_path, "--role", "viewer", "--budget", "2.5")
    rotated = _keys(tmp_path, "rotate", old["key_id"], "--json")
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)
    assert new["rotated_from"] == old["key_id"]
    assert new["budget_usd_per_day"] == 2.5

    states = {item["key_id"]: item["state"] for item in json.loads(_keys(tmp_path, "list", "--json").stdout)}
    assert states == {old["key_id"]: "revoked", new["key_id"]: "active"}

    again = _keys(tmp_path, "rotate", old["key_id"])
    assert again.returncode == 2
    assert "revoked" in again.stderr

    revoked = _keys(tmp_path, "revoke", new["key_id"])
    assert revoked.returncode == 0, revoked.stderr
    active = json.loads(_keys(tmp_path, "list", "--active", "--json").stdout)
    assert active == []


def test_keys_limits_change_named_only(tmp_path: Path) -> None:
    key = _create(tmp_path, "--role", "developer", "--rpm", "60", "--tpm", "1000", "--routes", "local")
    changed = _keys(tmp_path, "limits", key["key_id"], "--rpm", "120", "--remove", "routes")
    assert changed.returncode == 0, changed.stderr
    listed = json.loads(_keys(tmp_path, "list", "--json").stdout)[0]
    assert listed["rpm"] == 120
    assert listed["tpm"] == 1000
    assert listed["routes"] is None


def test_keys_bad_input_is_explained(tmp_path: Path) -> None:
    role = _keys(tmp_path, "create", "--role", "owner")
    assert role.returncode == 2
    assert "unknown role 'owner'" in role.stderr
    assert "viewer, developer, admin, metrics" in role.stderr

    _create(tmp_path, "--role", "admin")
    missing = _keys(tmp_path, "revoke", "0123456789ab")
    assert missing.returncode == 2
    assert "no key with id '0123456789ab'" in missing.stderr

    remove = _keys(tmp_path, "limits", "0123456789ab", "--remove", "colour")
    assert remove.returncode == 2
    assert "cannot remove colour" in remove.stderr


def test_keys_routes_checked(tmp_path: Path) -> None:
    unknown = _keys(tmp_path, "create", "--role", "developer", "--routes", "local,chat")
    assert unknown.returncode == 2
    assert "no route or deployment named 'chat'; choose from local" in " ".join(unknown.stderr.split())

    empty = _keys(tmp_path, "create", "--role", "developer", "--routes", "local,,local")
    assert empty.returncode == 2
    assert "'local,,local' has an empty item" in empty.stderr

    key = _create(tmp_path, "--role", "developer")
    changed = _keys(tmp_path, "limits", key["key_id"], "--routes", "claude")
    assert changed.returncode == 2
    assert "no route or deployment named 'claude'" in changed.stderr
    assert [item["routes"] for item in json.loads(_keys(tmp_path, "list", "--json").stdout)] == [None]


def test_keys_out_of_range(tmp_path: Path) -> None:
    cases = [
        (("--rpm", "99999999999999999999"), "rpm must be a whole number from 1 to 1000000000"),
        (("--tpm", "0"), "tpm must be a whole number from 1 to 1000000000000"),
        (("--budget", "1e12"), "at most 1e+09 USD per day"),
        (("--expires-in-days", "1e12"), "at most 36500 days"),
    ]
    for options, message in cases:
        result = _keys(tmp_path, "create", "--role", "developer", *options)
        assert result.returncode == 2, options
        assert message in " ".join(result.stderr.split()), options
        assert "Traceback" not in result.stderr
    # Each was rejected before the store was opened, so none was created.
    assert not (tmp_path / ".trunkline" / "trunkline.db").exists()


def test_keys_limits_rejects_nothing(tmp_path: Path) -> None:
    key = _create(tmp_path, "--role", "developer", "--rpm", "60")
    nothing = _keys(tmp_path, "limits", key["key_id"])
    assert nothing.returncode == 2
    assert "no limit was given" in nothing.stderr

    both = _keys(tmp_path, "limits", key["key_id"], "--remove", "rpm", "--rpm", "5")
    assert both.returncode == 2
    assert "--rpm with --remove rpm contradict each other" in " ".join(both.stderr.split())

    same = _keys(tmp_path, "limits", key["key_id"], "--rpm", "60")
    assert same.returncode == 0, same.stderr
    actions = [entry["action"] for entry in json.loads(run_trunkline(tmp_path, "audit", "--json").stdout)]
    assert actions == ["key.created"]
    assert json.loads(_keys(tmp_path, "list", "--json").stdout)[0]["rpm"] == 60


def test_keys_limits_summary(tmp_path: Path) -> None:
    key = _create(tmp_path, "--role", "developer")
    changed = _keys(tmp_path, "limits", key["key_id"], "--rpm", "30", "--expires-in-days", "10")
    assert changed.returncode == 0, changed.stderr
    expires = (datetime.now(UTC) + timedelta(days=10)).strftime("%Y-%m-%d")
    assert changed.stdout.startswith(f"key {key['key_id']}: 30 rpm; routes all; expires {expires} ")
    lifted = _keys(tmp_path, "limits", key["key_id"], "--remove", "expiry")
    assert lifted.stdout.strip().endswith("expires never")


def test_keys_list_narrow(tmp_path: Path) -> None:
    long_name = "the nightly batch of the search relevance team"
    active_key = _create(
        tmp_path, "--role", "developer", "--name", long_name, "--routes", "local", "--expires-in-days", "30"
    )
    revoked = _create(tmp_path, "--role", "viewer")
    assert _keys(tmp_path, "revoke", revoked["key_id"]).returncode == 0
    store = open_store(f"sqlite:///{tmp_path / '.trunkline' / 'trunkline.db'}")
    try:
        past = KeyLimits(expires_at=datetime.now(UTC) - timedelta(days=1))
        expired = create_key(store, Role.VIEWER, limits=past, actor="test").key
    finally:
        store.dispose()

    table = _keys(tmp_path, "list")
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[1].split()
    assert header[:5] == ["id", "name", "role", "state", "expires"]
    for key_id in (active_key["key_id"], revoked["key_id"], expired.key_id):
        assert key_id in table.stdout
    assert active_key["expires_at"][:10] in table.stdout
    assert "expired" in table.stdout
    assert "…" not in table.stdout

    active = _keys(tmp_path, "list", "--active", "--json")
    assert [item["key_id"] for item in json.loads(active.stdout)] == [active_key["key_id"]]
    active_table = _keys(tmp_path, "list", "--active")
    assert active_key["key_id"] in active_table.stdout
    assert expired.key_id not in active_table.stdout


def test_label_move_actor(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    text = "messages:\n  - role: user\n    content: Summarise {{ text }}\nvariables:\n  text: string\n"
    (tmp_path / "prompts" / "summary.yaml").write_text(text)
    assert run_trunkline(tmp_path, "prompts", "push", "prompts").returncode == 0
    moved = run_trunkline(tmp_path, "prompts", "label", "summary@1", "production")
    assert moved.returncode == 0, moved.stderr
    key = _create(tmp_path, "--role", "viewer")

    entries = json.loads(run_trunkline(tmp_path, "audit", "--json").stdout)
    actors = {entry["action"]: entry["actor"] for entry in entries}
    assert actors["label.moved"] == actors["key.created"]
    assert actors["label.moved"].startswith("cli:")
    shown = json.loads(run_trunkline(tmp_path, "prompts", "show", "summary", "--json").stdout)
    assert shown["author"] == actors["label.moved"].removeprefix("cli:")

    table = run_trunkline(tmp_path, "audit", env=NARROW)
    assert table.returncode == 0, table.stderr
    assert "summary:production" in table.stdout
    assert key["key_id"] in table.stdout
    assert actors["label.moved"] in table.stdout
    assert "key.created" in table.stdout
    assert "label.moved" in table.stdout


def test_audit_lists_key_actions(tmp_path: Path) -> None:
    key = _create(tmp_path, "--role", "developer", "--rpm", "60")
    _keys(tmp_path, "limits", key["key_id"], "--rpm", "30")
    _keys(tmp_path, "revoke", key["key_id"])

    result = run_trunkline(tmp_path, "audit", "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert [entry["action"] for entry in entries] == ["key.revoked", "key.limits_changed", "key.created"]
    assert {entry["target"] for entry in entries} == {key["key_id"]}
    assert all(entry["actor"].startswith("cli:") for entry in entries)
    assert entries[1]["details"]["before"]["rpm"] == 60
    assert entries[1]["details"]["after"]["rpm"] == 30
    assert entries[2]["details"]["rpm"] == 60
    assert entries[2]["details"]["role"] == "developer"

    table = run_trunkline(tmp_path, "audit", "--action", "key.limits_changed")
    assert table.returncode == 0, table.stderr
    assert "rpm: 60 -> 30" in table.stdout


def test_serve_answers_health_and_keys(tmp_path: Path) -> None:
    key = _create(tmp_path, "--role", "viewer")["key"]
    server, base = start_serve(tmp_path)
    try:
        health = httpx.get(f"{base}/healthz", timeout=10)
        assert health.json() == {"status": "ok"}

        models = httpx.get(f"{base}/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=10)
        assert models.status_code == 200
        assert [item["id"] for item in models.json()["data"]] == ["local"]

        refused = httpx.get(f"{base}/v1/models", headers={"authorization": "Bearer tk-nope"}, timeout=10)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
    finally:
        server.terminate()
        server.wait(timeout=30)
