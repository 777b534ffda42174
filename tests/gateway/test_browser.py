"""The dashboard in a real browser: Chromium signs in, opens every page and checks its figures.

Screenshots of each page are saved under test-output/browser/ at the
repository's root. Nothing is downloaded: Playwright drives /usr/bin/chromium.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.agent_trace import LONG_NOTE, agent_gateway
from gateway.test_dashboard import Dashboard, direct_totals, start_dashboard
from trunkline.server.dashboard.overview import _windows
from trunkline.server.dashboard.rendering import format_count, format_usd
from trunkline.store.keys import Role
from trunkline.store.tables import experiments

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "browser"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"browser tests need the system Chromium at {CHROMIUM}, which is missing",
)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    yield from start_dashboard(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    # Chromium's sandbox cannot start as root, as in containers.
    arguments = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=arguments
        )
        yield browser
        browser.close()


class Session:
    """A browser page on the dashboard; a script error or a request elsewhere fails the test."""

    def __init__(self, browser, base_url: str) -> None:  # noqa: ANN001
        self.base_url = base_url
        self.context = browser.new_context(
            viewport={"width": 1400, "height": 900}, base_url=base_url
        )
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", self._check_console)
        self.page.on("pageerror", lambda error: self.problems.append(str(error)))
        self.page.on(
            "dialog",
            lambda dialog: (self.problems.append(f"dialog: {dialog.message}"), dialog.dismiss()),
        )
        self.page.on("request", self._check_request)
        self.page.on("response", self._check_response)

    def _check_console(self, message) -> None:  # noqa: ANN001
        # Chromium logs every response of 400 or more, pages included, and
        # the tests expect some, such as for a rejected key. Failed scripts
        # and styles are caught by _check_response instead.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(message.text)

    def _check_request(self, request) -> None:  # noqa: ANN001
        if not request.url.startswith(self.base_url):
            self.problems.append(f"request to another host: {request.url}")

    def _check_response(self, response) -> None:  # noqa: ANN001
        if response.request.resource_type != "document" and response.status >= 400:
            self.problems.append(f"{response.status} for {response.url}")

    def sign_in(self, key: str, path: str = "/") -> None:
        self.page.goto(path)
        assert "/login" in self.page.url
        self.page.fill("#key", key)
        self.page.click("button[type=submit]")
        self.page.wait_for_load_state("load")

    def open(self, path: str, screenshot: str) -> None:
        response = self.page.goto(path)
        assert response is not None
        assert response.status == 200, path
        self.wait_for_charts()
        self.shot(screenshot)

    def wait_for_charts(self) -> None:
        charts = self.page.locator("[data-figure]")
        for index in range(charts.count()):
            charts.nth(index).locator(".main-svg").first.wait_for(state="attached", timeout=15_000)

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        assert self.problems == []


@pytest.fixture
def session(browser, dashboard) -> Iterator[Session]:
    session = Session(browser, dashboard.server.url)
    yield session
    session.close()


def test_sign_in_and_overview(session, dashboard) -> None:
    session.page.goto("/cost")
    assert "/login?next=/cost" in session.page.url
    session.shot("login")
    session.sign_in(dashboard.admin, "/")
    for _ in range(3):
        windows = _windows(datetime.now(UTC))
        session.open("/", "overview")
        if _windows(datetime.now(UTC)) == windows:
            break
    for name, _, start, end, _, _ in windows:
        expected = direct_totals(dashboard.store, start, end)
        cell = session.page.locator(f'td[data-metric="calls"][data-period="{name}"]')
        assert cell.inner_text().split()[0] == format_count(expected["calls"])
        cost = session.page.locator(f'td[data-metric="cost_usd"][data-period="{name}"]')
        assert cost.inner_text().split()[0] == format_usd(expected["cost_usd"])
    assert session.page.locator(".js-plotly-plot").count() == 3


def test_cost_page_figures(session, dashboard) -> None:
    session.sign_in(dashboard.viewer, "/cost")
    first = datetime.now(UTC).date() - timedelta(days=29)
    start = datetime.combine(first, datetime.min.time(), UTC)
    expected = direct_totals(dashboard.store, start, datetime.now(UTC) + timedelta(hours=1))
    session.open("/cost", "cost")
    assert session.page.locator("#total-cost").inner_text() == format_usd(expected["cost_usd"])
    assert session.page.locator("#total-calls").inner_text() == format_count(expected["calls"])
    assert session.page.locator("#unpriced-notice").is_visible()
    assert session.page.locator(".js-plotly-plot").count() == 4


def test_traces_and_trace_pages(session, dashboard) -> None:
    session.sign_in(dashboard.viewer, "/traces")
    session.open("/traces?limit=20", "traces")
    rows = session.page.locator("#calls tbody tr[data-call-id]")
    assert rows.count() == 20
    newest = max(dashboard.records, key=lambda record: (record.started_at, record.call_id))
    assert rows.first.get_attribute("data-call-id") == newest.call_id
    session.page.click("#older-page")
    session.page.wait_for_load_state("load")
    assert session.page.locator("#calls tbody tr[data-call-id]").count() == 20
    session.page.select_option("select[name=outcome]", "error")
    session.page.click("#call-filters button[type=submit]")
    session.page.wait_for_load_state("load")
    errors = sum(record.outcome == "error" for record in dashboard.records)
    assert session.page.locator("#calls tbody tr[data-call-id]").count() == errors
    session.open("/traces/" + "e" * 32, "trace")
    assert session.page.locator("#waterfall .row").count() == 2
    message = session.page.locator(".messages pre").nth(1).inner_text()
    assert message == "<script>alert('x')</script>"


def test_agent_trace_expands_tool_result(browser, tmp_path) -> None:
    # A gateway of its own, so the agent's calls leave the other tests' lists as they are.
    with agent_gateway(tmp_path, f"sqlite:///{tmp_path / 'agent.db'}") as (server, trace):
        session = Session(browser, server.url)
        try:
            session.sign_in(server.key(Role.VIEWER), f"/traces/{trace.trace_id}")
            session.open(f"/traces/{trace.trace_id}", "agent-trace")
            assert session.page.locator(".agent-tree > li.step").count() == 3
            assert session.page.locator(".agent-tree li.tool-call.failed").count() == 2
            describe = session.page.locator('li.tool-call[data-tool="describe"]')
            result = describe.locator("details").nth(1)
            full_text = result.locator("pre")
            assert not full_text.is_visible()
            result.locator("summary").click()
            assert full_text.is_visible()
            assert LONG_NOTE.strip() in full_text.inner_text()
            session.shot("agent-trace-expanded")
        finally:
            session.close()


def test_quality_prompts_and_audit_pages(session, dashboard) -> None:
    session.sign_in(dashboard.admin, "/quality")
    session.open("/quality", "quality")
    assert session.page.locator("#experiments tbody tr[data-experiment-id]").count() == 3
    assert session.page.locator(".js-plotly-plot").count() == 1
    with dashboard.store.engine.connect() as connection:
        ids = dict(
            connection.execute(select(experiments.c.name, experiments.c.experiment_id)).all()
        )
    session.page.select_option("#compare-form select[name=a]", ids["triage v1 #0"])
    session.page.select_option("#compare-form select[name=b]", ids["triage v2 #1"])
    session.page.click("#compare-form button[type=submit]")
    session.page.wait_for_load_state("load")
    session.shot("quality-comparison")
    assert "B − A = +0.3333" in session.page.locator("#comparison").inner_text()
    session.open("/prompts", "prompts")
    session.page.click("text=support/triage")
    session.page.wait_for_load_state("load")
    assert session.page.locator("#versions tbody tr").count() == 2
    session.shot("prompt")
    session.page.click("#diff-form button[type=submit]")
    session.page.wait_for_load_state("load")
    assert session.page.locator("#diff .add").count() == 1
    session.shot("prompt-diff")
    session.open("/audit", "audit")
    assert session.page.locator("#audit tbody tr[data-audit-id]").count() >= 5


def test_wrong_key_and_sign_out(session, dashboard) -> None:
    session.page.goto("/login")
    session.page.fill("#key", "tk-not-a-key")
    session.page.click("button[type=submit]")
    assert "not known to this gateway" in session.page.locator("#login-message").inner_text()
    session.shot("login-rejected")
    session.sign_in(dashboard.viewer, "/")
    assert session.page.url == dashboard.server.url + "/"
    session.page.click("header .who button")
    session.page.wait_for_load_state("load")
    assert session.page.url.endswith("/login")
    session.page.goto("/")
    assert "/login" in session.page.url
