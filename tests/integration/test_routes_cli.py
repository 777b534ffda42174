"""`trunkline routes` lists routes and replays recorded attempts into breaker states."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from integration.cli import run_trunkline
from trunkline.config import load_settings
from trunkline.errors import CallError
from trunkline.providers.fake import FakeFailure, FakeReply, ScriptedModel
from trunkline.recording import recording
from trunkline.routing import Router

CONFIG = """
default_route = "main"

[store]
url = "sqlite:///{db}"

[deployments.primary]
provider = "fake"
model = "primary-model"
rpm = 600

[deployments.backup]
provider = "fake"
model = "backup-model"

[routes.main]
deployments = ["primary", "backup"]
max_attempts = 1
breaker_failures = 3
breaker_cooldown_s = 3600
deadline_s = 20
"""


def test_routes_lists_policies_and_status(tmp_path: Path) -> None:
    (tmp_path / "trunkline.toml").write_text(CONFIG.format(db=tmp_path / "t.db"))
    settings = load_settings(tmp_path / "trunkline.toml")
    primary = ScriptedModel([FakeFailure(503)] * 3)
    backup = ScriptedModel(default=FakeReply("ok"))
    router = Router(settings, providers={"primary": primary, "backup": backup})

    async def calls() -> None:
        for _ in range(4):
            try:
                await router.complete("hi")
            except CallError:
                pass

    with recording(settings):
        asyncio.run(calls())
    live = {status.deployment: status.state.value for status in router.health()}
    assert live["primary"] == "open"

    listing = run_trunkline(tmp_path, "routes")
    assert listing.returncode == 0, listing.stderr
    assert "main" in listing.stdout
    assert "primary" in listing.stdout
    assert "600" in listing.stdout

    listed = run_trunkline(tmp_path, "routes", "--json")
    route = json.loads(listed.stdout)["main"]
    assert route["deployments"] == ["primary", "backup"]
    assert (route["breaker_failures"], route["deadline_s"]) == (3, 20)

    status = run_trunkline(tmp_path, "routes", "--status", "--json")
    assert status.returncode == 0, status.stderr
    rows = {row["deployment"]: row for row in json.loads(status.stdout)}
    assert rows["primary"]["state"] == live["primary"]
    assert rows["primary"]["consecutive_failures"] == 3
    assert rows["primary"]["attempts"] == 3
    assert rows["primary"]["errors"] == 3
    assert rows["backup"]["state"] == "closed"
    assert rows["backup"]["attempts"] == 4

    table = run_trunkline(tmp_path, "routes", "--status")
    assert table.returncode == 0, table.stderr
    assert "open" in table.stdout
    assert "closed" in table.stdout


def test_status_reports_a_broken_store(tmp_path: Path) -> None:
    (tmp_path / "t.db").write_text("this is not a database")
    (tmp_path / "trunkline.toml").write_text(CONFIG.format(db=tmp_path / "t.db"))
    result = run_trunkline(tmp_path, "routes", "--status")
    assert result.returncode == 2
    assert "error" in result.stderr


def test_status_without_a_store_says_so(tmp_path: Path) -> None:
    (tmp_path / "trunkline.toml").write_text(CONFIG.format(db=tmp_path / "missing.db"))
    result = run_trunkline(tmp_path, "routes", "--status", "--json")
    assert result.returncode == 0, result.stderr
    assert "no store" in result.stderr
    assert {row["state"] for row in json.loads(result.stdout)} == {"closed"}
