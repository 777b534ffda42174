"""`trunkline keys`, `trunkline audit` and `trunkline serve`, end to end in subprocesses."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from integration.cli import run_trunkline


def _keys(folder: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return run_trunkline(folder, "keys", *arguments)


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

    table = run_trunkline(tmp_path, "audit", "--action", "key.limits_changed")
    assert table.returncode == 0, table.stderr
    assert "rpm: 60 -> 30" in table.stdout


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_answers_health_and_keys(tmp_path: Path) -> None:
    key = _create(tmp_path, "--role", "viewer")["key"]
    port = _free_port()
    environment = {name: value for name, value in os.environ.items() if not name.startswith("TRUNKLINE_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "trunkline", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "trunkline serve did not answer within 60 s"
                time.sleep(0.2)
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
