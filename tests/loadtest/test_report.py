"""The report: its HTML with embedded chart data, and the command that prints and writes it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trunkline.cli.app import app
from trunkline.loadtest.engine import LoadTestOptions, run_loadtest
from trunkline.loadtest.html import render_html
from trunkline.loadtest.report import build_report
from loadtest.test_counts import profile_for, settings_for

CHROMIUM = Path("/usr/bin/chromium")

CONFIG = """
[deployments.main]
provider = "openai"
model = "gpt-4o-mini"
rpm = 30

[deployments.spare]
provider = "openai"
model = "gpt-4o"

[routes.chat]
deployments = ["main", "spare"]
backoff_base_s = 0.001
limit_wait_max_s = 0
breaker_failures = 1000

[loadtest.default_upstream]
latency_ms = 3
"""

PROFILE = """
rate_rps = 20
seed = 2

[[tasks]]
route = "chat"
input_tokens = { median = 300 }
output_tokens = { samples = [20, 60] }

[upstreams.main]
latency_ms = 2
rate_limit_rate = 0.1
retry_after_s = 0.01
"""


def embedded(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="loadtest-data">(.*?)</script>', page, re.S)
    assert match is not None
    return json.loads(match.group(1))


async def test_html_embeds_figures_and_plotly() -> None:
    result = await run_loadtest(
        settings_for(), profile_for(30.0), LoadTestOptions(duration_s=1.0, drain_s=10.0)
    )
    figures = build_report(result).public()

    page = render_html(figures)

    assert embedded(page) == json.loads(json.dumps(figures))
    assert "Plotly.newPlot" in page
    assert page.count('data-chart="') == 4
    assert re.search(r"<script[^>]+src=", page) is None
    assert "https://" not in page.split("<script>", 1)[0]
    assert "Requests as the simulated providers received them" in page
    assert "Calls by route" in page


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with trunkline.toml, profile.toml and its own store URL."""
    (tmp_path / "trunkline.toml").write_text(CONFIG)
    (tmp_path / "profile.toml").write_text(PROFILE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRUNKLINE_CONFIG", raising=False)
    monkeypatch.delenv("TRUNKLINE_API_KEY", raising=False)
    monkeypatch.setenv("TRUNKLINE_DATABASE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    return tmp_path


def test_command_prints_json_and_writes_report(project: Path) -> None:
    outcome = CliRunner().invoke(
        app,
        ["loadtest", "--profile", "profile.toml", "--scale", "3", "--duration", "2s",
         "--drain", "10s", "--json", "--report", "report.html"],
    )

    assert outcome.exit_code == 0, outcome.output
    figures = json.loads(outcome.stdout.strip().splitlines()[-1])
    assert figures["scale"] == 3
    assert figures["throughput"]["profile_rps"] == 20
    assert figures["limits"]["binds_first"] == "rpm"
    assert figures["upstreams"]["main"]["requests"] == 30
    chat = figures["by_route"]["chat"]
    assert chat["calls"] == figures["requests"]["finished"]
    assert chat["ok"] == figures["requests"]["ok"]
    assert abs(chat["cost_usd"] - figures["cost"]["total_usd"]) < 1e-12
    assert figures["cost"]["unpriced_calls"] == 0
    assert figures["cost"]["per_hour_usd"] > 0
    assert embedded((project / "report.html").read_text()) == figures
    assert not (project / "store.db").exists()


def test_command_records_when_asked(project: Path) -> None:
    outcome = CliRunner().invoke(
        app, ["loadtest", "--profile", "profile.toml", "--duration", "1s", "--record", "--json"]
    )
    assert outcome.exit_code == 0, outcome.output
    figures = json.loads(outcome.stdout.strip().splitlines()[-1])

    replay = CliRunner().invoke(
        app, ["loadtest", "--profile", figures["run_id"], "--duration", "1s", "--json"]
    )
    assert replay.exit_code == 0, replay.output
    again = json.loads(replay.stdout.strip().splitlines()[-1])
    assert again["profile"].startswith(f"run {figures['run_id']} ({figures['requests']['finished']} calls")


def test_command_rejects_bad_input(project: Path) -> None:
    (project / "profile.toml").write_text(PROFILE.replace('route = "chat"', 'route = "chta"'))
    runner = CliRunner()

    unknown = runner.invoke(app, ["loadtest", "--profile", "profile.toml", "--duration", "1s"])
    assert "unknown route or deployment 'chta'" in str(unknown.exception)

    duration = runner.invoke(app, ["loadtest", "--profile", "profile.toml", "--duration", "1 minute"])
    assert "invalid duration '1 minute'" in str(duration.exception)

    storeless = runner.invoke(app, ["loadtest", "--profile", "recent:2h", "--duration", "1s"])
    assert "--profile recent:2h reads recorded calls, but no store at" in str(storeless.exception)

    keyless = runner.invoke(
        app, ["loadtest", "--profile", "profile.toml", "--target", "http://127.0.0.1:9"]
    )
    assert "environment variable TRUNKLINE_API_KEY, which is not set" in str(keyless.exception)


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs the system Chromium at {CHROMIUM}")
async def test_report_renders_offline_in_chromium(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    result = await run_loadtest(
        settings_for(), profile_for(30.0), LoadTestOptions(duration_s=1.0, drain_s=10.0)
    )
    path = tmp_path / "report.html"
    path.write_text(render_html(build_report(result).public()))
    arguments = ["--no-sandbox"] if os.geteuid() == 0 else []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=arguments
        )
        page = await browser.new_page()
        requests: list[str] = []
        errors: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(path.as_uri())
        await page.wait_for_selector(".chart .main-svg")
        charts = await page.locator(".chart .main-svg").count()
        traces = await page.evaluate(
            "[...document.querySelectorAll('.chart')].map(element => element.data.length)"
        )
        await browser.close()

    assert errors == []
    assert [url for url in requests if not url.startswith("file://")] == []
    assert charts >= 4
    assert traces == [3, 3, 4, 2]
