"""The dashboard's pages on a real server: sign-in, roles, and figures checked against the store."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from conftest import STORE_BACKENDS
from fakeserver import FakeServer
from pgserver import store_url_for
from gateway.harness import GatewayServer, gateway_settings, running_gateway
from trunkline.prompts import PromptContent, PromptRegistry
from trunkline.server.dashboard.overview import _windows
from trunkline.store.database import Store, as_utc
from trunkline.store.experiments import record_experiment
from trunkline.store.keys import Role, find_key
from trunkline.store.runs import create_run
from trunkline.store.tables import LATENCY_BOUNDS_MS, calls, experiment_rows, experiments, runs
from trunkline.store.writer import API_KEY_TAG, StoreWriter
from trunkline.types import CallRecord, Cost, FallbackHop, Message, Usage
from trunkline.types.calls import Attempt, Validation
from trunkline.types.spans import SpanRecord

PAGES = ("/", "/cost", "/quality", "/traces", "/prompts")
HOSTILE = "<script>alert('x')</script>"


@dataclass
class Dashboard:
    """A server over a store seeded with known calls, experiments and prompts, and its keys."""

    server: GatewayServer
    viewer: str
    developer: str
    developer_id: str
    admin: str
    metrics: str
    records: list[CallRecord]

    @property
    def store(self) -> Store:
        return self.server.store

    def client(self, key: str | None = None) -> httpx.Client:
        return self.server.client(key)


def trace_id(index: int) -> str:
    return hashlib.sha256(f"trace {index}".encode()).hexdigest()[:32]


def make_call(index: int, now: datetime, *, developer_id: str) -> CallRecord:
    """Build call `index` of the seeded set; each field follows from the index, as tests expect."""
    started = now - timedelta(hours=index * 13, minutes=index % 50)
    unpriced = index % 6 == 2
    failed = index % 7 == 3
    latency = 50.0 + 37.0 * index
    key_id = {0: developer_id, 1: "gone-key"}.get(index % 4)
    run_id = {0: "run-a", 1: "run-b"}.get(index % 5)
    attempts = [
        Attempt(
            attempt_number=1,
            deployment="primary",
            provider="openai",
            model="m-alpha",
            outcome="error" if failed else "ok",
            error_kind="server_error" if failed else None,
            started_at=started,
            latency_ms=latency,
        )
    ]
    return CallRecord(
        call_id=f"{index:032x}",
        trace_id=trace_id(index),
        span_id=f"{index:016x}",
        run_id=run_id,
        session_id="sess-1" if index < 5 else None,
        tags={API_KEY_TAG: key_id} if key_id else {},
        route=("chat", "summarise")[index % 2],
        provider="openai",
        deployment="primary",
        model_requested="m-alpha",
        model_served=None if failed else ("m-alpha", "m-beta", "m-gamma")[index % 3],
        messages=[Message.user(f"question {index}")],
        output_text=None if failed else f"answer {index}",
        usage=Usage(input_tokens=100 + index, output_tokens=0 if failed else 10 + index),
        cost=Cost.missing() if unpriced else Cost(total_usd=0.001 * (index + 1)),
        started_at=started,
        ended_at=started + timedelta(milliseconds=latency),
        latency_ms=latency,
        attempts=attempts,
        outcome="error" if failed else "ok",
        error_kind="server_error" if failed else None,
    )


def traced_call(now: datetime) -> tuple[CallRecord, list[SpanRecord]]:
    """A call with a retry, a fallback and a repair, inside a run span, with a hostile message."""
    started = now - timedelta(minutes=3)
    record = CallRecord(
        call_id="f" * 32,
        trace_id="e" * 32,
        span_id="d" * 16,
        parent_span_id="c" * 16,
        route="chat",
        provider="openai",
        deployment="backup",
        model_requested="m-alpha",
        model_served="m-beta",
        messages=[Message.system("You sort tickets."), Message.user(HOSTILE)],
        output_text='{"label": "<b>bold</b>"}',
        usage=Usage(input_tokens=40, output_tokens=8),
        cost=Cost(total_usd=0.0123),
        started_at=started,
        ended_at=started + timedelta(milliseconds=900),
        latency_ms=900.0,
        attempts=[
            Attempt(
                attempt_number=1,
                deployment="primary",
                provider="openai",
                model="m-alpha",
                outcome="error",
                error_kind="rate_limited",
                status_code=429,
                started_at=started,
                latency_ms=100.0,
                wait_s=0.5,
                wait_reason="retry-after",
            ),
            Attempt(
                attempt_number=2,
                deployment="backup",
                provider="openai",
                model="m-beta",
                outcome="ok",
                started_at=started + timedelta(milliseconds=600),
                latency_ms=300.0,
            ),
        ],
        fallbacks=[FallbackHop(deployment="primary", reason="rate_limited", detail="429 twice")],
        validation=Validation(output_schema={"type": "object"}, repairs=1, valid=True),
        outcome="ok",
    )
    run_span = SpanRecord(
        span_id="c" * 16,
        trace_id="e" * 32,
        name="run triage",
        kind="run",
        started_at=started - timedelta(milliseconds=50),
        ended_at=started + timedelta(seconds=1),
    )
    call_span = SpanRecord(
        span_id="d" * 16,
        trace_id="e" * 32,
        parent_span_id="c" * 16,
        name="chat chat",
        kind="call",
        started_at=started,
        ended_at=started + timedelta(milliseconds=900),
    )
    return record, [run_span, call_span]


def seed_prompts(store: Store) -> None:
    registry = PromptRegistry(store)
    for text in (
        "Sort {{ ticket }} into a queue.",
        "Sort {{ ticket }} into one queue. Say only its name.",
    ):
        registry.create_version(
            "support/triage", PromptContent(messages=[{"role": "user", "content": text}])
        )
    registry.set_label("support/triage", 1, "production", moved_by="ana")
    registry.set_label("support/triage", 2, "production", moved_by="ben")


def seed_experiments(store: Store, now: datetime) -> list[str]:
    ids = []
    for number, (version, mean) in enumerate((("1", 0.70), ("2", 0.78), ("2", 0.81))):
        ids.append(
            record_experiment(
                store,
                task="triage",
                deployment="primary",
                dataset_hash="d" * 64,
                row_count=3,
                mean_score=mean,
                golden=True,
                prompt_name="support/triage",
                prompt_version=version,
                ci_low=mean - 0.05,
                ci_high=mean + 0.04,
                cost_usd=0.02,
                latency_p50_ms=120.0,
                started_at=now - timedelta(days=3 - number),
                ended_at=now - timedelta(days=3 - number),
                name=f"triage v{version} #{number}",
            )
        )
    scores = {ids[0]: (1.0, 0.0, 1.0), ids[1]: (1.0, 1.0, 1.0)}
    with store.engine.begin() as connection:
        for experiment_id, values in scores.items():
            for row, score in enumerate(values):
                connection.execute(
                    experiment_rows.insert().values(
                        experiment_id=experiment_id,
                        row_key=f"row-{row}",
                        repeat=0,
                        inputs={"ticket": row},
                        output=f"queue {score}",
                        score=score,
                    )
                )
    return ids


def write_records(store: Store, records: list[CallRecord], spans: list[SpanRecord] = ()) -> None:
    writer = StoreWriter(store, batch_size=16, flush_interval_s=0.01)
    for record in records:
        writer.export_call(record)
    for span in spans:
        writer.export_span(span)
    writer.close()
    assert writer.failed_rows == 0


def start_dashboard(tmp_path: Path, store_url: str | None = None) -> Iterator[Dashboard]:
    fake = FakeServer()
    fake.start()
    try:
        with running_gateway(gateway_settings(fake.base_url), tmp_path, store_url=store_url) as server:
            developer = server.key(Role.DEVELOPER)
            store = server.store
            developer_id = find_key(store, developer).key_id
            for run_id, workflow in (("run-a", "triage"), ("run-b", "summary")):
                create_run(
                    store,
                    run_id=run_id,
                    workflow=workflow,
                    workflow_path=None,
                    data_path=None,
                    data_hash=None,
                    params={},
                    row_count=0,
                )
            now = datetime.now(UTC)
            records = [make_call(index, now, developer_id=developer_id) for index in range(60)]
            traced, spans = traced_call(now)
            write_records(store, [*records, traced], spans)
            seed_prompts(store)
            seed_experiments(store, now)
            yield Dashboard(
                server=server,
                viewer=server.key(Role.VIEWER),
                developer=developer,
                developer_id=developer_id,
                admin=server.key(Role.ADMIN),
                metrics=server.key(Role.METRICS),
                records=[*records, traced],
            )
    finally:
        fake.stop()


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def dashboard(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    folder = tmp_path_factory.mktemp("dashboard")
    with store_url_for(request.param, folder, request) as url:
        yield from start_dashboard(folder, url)


class Values(HTMLParser):
    """Every element with a data-value: its data attributes, its table's id and its row's key."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[dict[str, str]] = []
        self._table = ""
        self._row: dict[str, str] = {}
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name.removeprefix("data-"): value or "" for name, value in attrs}
        if tag == "table":
            self._table = attributes.get("id", "")
        elif tag == "tr":
            self._row = {"row": attributes.get("key", ""), "detail": attributes.get("detail", "")}
        if "value" in attributes and tag != "input" and tag != "option":
            self.found.append({"table": self._table, **self._row, **attributes})

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table, self._row = "", {}

    def pick(self, **wanted: str) -> str:
        """Return the data-value of the one element whose attributes match `wanted`."""
        wanted = {name.replace("_", "-"): value for name, value in wanted.items()}
        matches = [
            item
            for item in self.found
            if all(item.get(name) == value for name, value in wanted.items())
        ]
        assert len(matches) == 1, (wanted, matches)
        return matches[0]["value"]


def direct_totals(store: Store, start: datetime, end: datetime) -> dict[str, Any]:
    """Sum the calls started in [start, end) straight from the calls table."""
    with store.engine.connect() as connection:
        rows = (
            connection.execute(
                select(calls).where(calls.c.started_at >= start, calls.c.started_at < end)
            )
            .mappings()
            .all()
        )
    return {
        "calls": len(rows),
        "tokens": sum(row["input_tokens"] + row["output_tokens"] for row in rows),
        "cost_usd": sum(row["cost_usd"] or 0.0 for row in rows),
        "errors": sum(row["outcome"] == "error" for row in rows),
        "unpriced_calls": sum(bool(row["price_missing"]) for row in rows),
        "latencies": sorted(row["latency_ms"] for row in rows),
    }


def bucket_of(latency: float) -> tuple[float, float]:
    index = sum(1 for bound in LATENCY_BOUNDS_MS if latency > bound)
    low = LATENCY_BOUNDS_MS[index - 1] if index else 0.0
    return low, LATENCY_BOUNDS_MS[index] if index < len(LATENCY_BOUNDS_MS) else float("inf")


def overview_with_windows(dashboard: Dashboard) -> tuple[str, list]:
    """Fetch the overview with the windows it used, fetching again if the hour turned meanwhile."""
    with dashboard.client(dashboard.viewer) as client:
        for _ in range(3):
            before = _windows(datetime.now(UTC))
            page = client.get("/")
            if _windows(datetime.now(UTC)) == before:
                assert page.status_code == 200
                return page.text, before
    raise AssertionError("the hour turned during every request")


# Sign-in and roles


@pytest.mark.parametrize(
    "path", [*PAGES, "/audit", "/traces/" + "e" * 32, "/prompts/support/triage"]
)
def test_page_without_key_redirects_to_login(dashboard, path) -> None:
    with dashboard.client() as client:
        response = client.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next={path}"


def test_login_redirect_keeps_query(dashboard) -> None:
    with dashboard.client() as client:
        response = client.get("/traces?trace=agent&status=error", follow_redirects=False)
    assert response.headers["location"] == "/login?next=/traces%3Ftrace%3Dagent%26status%3Derror"
    with dashboard.client() as client:
        form = client.get(response.headers["location"])
    assert 'value="/traces?trace=agent&amp;status=error"' in form.text


def test_viewer_opens_every_page(dashboard) -> None:
    with dashboard.client(dashboard.viewer) as client:
        for path in (*PAGES, "/traces/" + "e" * 32, "/prompts/support/triage"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"].startswith("text/html")


def test_audit_needs_admin(dashboard) -> None:
    with dashboard.client(dashboard.viewer) as client:
        denied = client.get("/audit")
        assert 'href="/audit"' not in client.get("/").text
    assert denied.status_code == 403
    assert denied.headers["content-type"].startswith("text/html")
    assert "this endpoint needs role admin" in denied.text
    # The error page keeps the viewer's navigation, so the other pages stay one click away.
    assert 'href="/cost"' in denied.text
    with dashboard.client(dashboard.developer) as client:
        assert client.get("/audit").status_code == 403
    with dashboard.client(dashboard.admin) as client:
        page = client.get("/audit")
        assert 'href="/audit"' in client.get("/").text
    assert page.status_code == 200
    assert "key.created" in page.text


def test_unknown_page_html(dashboard) -> None:
    with dashboard.client(dashboard.viewer) as client:
        response = client.get("/nothing-here")
        api = client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "there is no page at /nothing-here" in response.text
    assert api.status_code == 404
    assert api.json()["error"]["code"] == "not_found"


def test_metrics_key_opens_no_page(dashboard) -> None:
    with dashboard.client(dashboard.metrics) as client:
        assert client.get("/").status_code == 403
        form = client.post(
            "/login", data={"key": dashboard.metrics, "next": "/"}, follow_redirects=False
        )
    assert form.status_code == 403
    assert "has role metrics" in form.text
    assert "set-cookie" not in form.headers


def test_sign_in_sets_strict_session_cookie(dashboard) -> None:
    with dashboard.client() as client:
        form = client.get("/login?next=/cost")
        assert form.status_code == 200
        assert 'name="next" value="/cost"' in form.text
        response = client.post(
            "/login", data={"key": dashboard.viewer, "next": "/cost"}, follow_redirects=False
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/cost"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("trunkline_session=")
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        # Served over http here, so the cookie must not be limited to https.
        assert "Secure" not in cookie
        assert client.get("/cost").status_code == 200


def test_wrong_key_shows_form_again(dashboard) -> None:
    with dashboard.client() as client:
        response = client.post(
            "/login", data={"key": "tk-nope-nope", "next": "/cost"}, follow_redirects=False
        )
        empty = client.post("/login", data={"key": "", "next": "/"}, follow_redirects=False)
    assert response.status_code == 401
    assert "not known to this gateway" in response.text
    assert 'name="next" value="/cost"' in response.text
    assert "set-cookie" not in response.headers
    assert empty.status_code == 401
    assert "Enter a key" in empty.text


@pytest.mark.parametrize(
    "target",
    [
        "https://elsewhere.example/",
        "//elsewhere.example/x",
        "/\\elsewhere.example",
        "javascript:alert(1)",
        "/login",
    ],
)
def test_sign_in_stays_on_this_site(dashboard, target) -> None:
    with dashboard.client() as client:
        response = client.post(
            "/login", data={"key": dashboard.viewer, "next": target}, follow_redirects=False
        )
    assert response.status_code == 303
    assert response.headers["location"] == "/"


def test_sign_in_keeps_local_next_with_query(dashboard) -> None:
    with dashboard.client() as client:
        response = client.post(
            "/login",
            data={"key": dashboard.viewer, "next": "/traces?outcome=error"},
            follow_redirects=False,
        )
    assert response.headers["location"] == "/traces?outcome=error"


def test_form_from_other_site_rejected(dashboard) -> None:
    with dashboard.client() as client:
        response = client.post(
            "/login",
            data={"key": dashboard.viewer, "next": "/"},
            headers={"origin": "http://elsewhere.example"},
            follow_redirects=False,
        )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


def test_sign_out_clears_cookie(dashboard) -> None:
    with dashboard.client() as client:
        client.post("/login", data={"key": dashboard.viewer, "next": "/"})
        assert client.get("/", follow_redirects=False).status_code == 200
        response = client.post("/logout", follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/login"
        assert 'trunkline_session=""' in response.headers["set-cookie"]
        assert client.get("/", follow_redirects=False).status_code == 303


def test_revoked_key_session_ends(dashboard) -> None:
    key = dashboard.server.key(Role.VIEWER)
    with dashboard.client() as client:
        client.post("/login", data={"key": key, "next": "/"})
        assert client.get("/").status_code == 200
        key_id = key.split("-")[1]
        with dashboard.client(dashboard.admin) as admin:
            assert admin.post(f"/admin/keys/{key_id}/revoke").status_code == 200
        assert client.get("/", follow_redirects=False).status_code == 303


# Figures against the store


def test_overview_figures_equal_store(dashboard) -> None:
    html, windows = overview_with_windows(dashboard)
    values = Values(html)
    for name, _, start, end, _, _ in windows:
        expected = direct_totals(dashboard.store, start, end)
        assert int(values.pick(metric="calls", period=name)) == expected["calls"]
        assert int(values.pick(metric="tokens", period=name)) == expected["tokens"]
        assert float(values.pick(metric="cost_usd", period=name)) == pytest.approx(
            expected["cost_usd"]
        )
        assert int(values.pick(metric="unpriced_calls", period=name)) == expected["unpriced_calls"]
        rate = values.pick(metric="error_rate", period=name)
        if expected["calls"]:
            assert float(rate) == pytest.approx(expected["errors"] / expected["calls"])
            for metric, quantile in (("p50_ms", 0.5), ("p95_ms", 0.95)):
                latencies = expected["latencies"]
                true = latencies[math.ceil(quantile * len(latencies)) - 1]
                low, high = bucket_of(true)
                assert low <= float(values.pick(metric=metric, period=name)) <= high
        else:
            assert rate == ""
    assert "estimate" in html


def test_overview_counts_seeded_calls(dashboard) -> None:
    html, _ = overview_with_windows(dashboard)
    # 61 calls were seeded, the oldest 32 days ago, so the 30-day window contains most of them.
    assert 50 <= int(Values(html).pick(metric="calls", period="30d")) <= 61


def test_cost_page_equals_store(dashboard) -> None:
    with dashboard.client(dashboard.viewer) as client:
        html = client.get("/cost", params={"from": "2000-01-01", "to": "2000-12-31"}).text
        assert Values(html).pick(id="total-calls") == "0"
        today = datetime.now(UTC).date()
        first = today - timedelta(days=40)
        html = client.get("/cost", params={"from": first.isoformat(), "to": today.isoformat()}).text
    values = Values(html)
    with dashboard.store.engine.connect() as connection:
        rows = (
            connection.execute(
                select(calls, runs.c.workflow).outerjoin(runs, runs.c.run_id == calls.c.run_id)
            )
            .mappings()
            .all()
        )
    rows = [row for row in rows if as_utc(row["started_at"]).date() >= first]
    assert int(values.pick(id="total-calls")) == len(rows)
    assert float(values.pick(id="total-cost")) == pytest.approx(
        sum(row["cost_usd"] or 0 for row in rows)
    )

    def check(table: str, key: str, selected: list, *, detail: str | None = None) -> None:
        wanted = {"table": table, "row": key}
        if detail is not None:
            wanted["detail"] = detail
        assert int(values.pick(**wanted, column="calls")) == len(selected)
        assert float(values.pick(**wanted, column="cost_usd")) == pytest.approx(
            sum(r["cost_usd"] or 0 for r in selected)
        )
        assert int(values.pick(**wanted, column="errors")) == sum(
            r["outcome"] == "error" for r in selected
        )
        assert int(values.pick(**wanted, column="input_tokens")) == sum(
            r["input_tokens"] for r in selected
        )
        assert int(values.pick(**wanted, column="unpriced_calls")) == sum(
            bool(r["price_missing"]) for r in selected
        )

    for model in {row["model_served"] or row["model_requested"] for row in rows}:
        check(
            "by-model",
            model,
            [r for r in rows if (r["model_served"] or r["model_requested"]) == model],
        )
    check("by-task", "triage", [r for r in rows if r["workflow"] == "triage"], detail="workflow")
    check(
        "by-task",
        "chat",
        [r for r in rows if r["workflow"] is None and r["route"] == "chat"],
        detail="route",
    )
    check(
        "by-key",
        dashboard.developer_id,
        [r for r in rows if r["api_key_id"] == dashboard.developer_id],
        detail="test developer",
    )
    check(
        "by-key",
        "gone-key",
        [r for r in rows if r["api_key_id"] == "gone-key"],
        detail="(deleted key)",
    )
    check(
        "by-key",
        "",
        [r for r in rows if r["api_key_id"] is None],
        detail="calls made outside the gateway",
    )


def test_cost_page_flags_unpriced_models(dashboard) -> None:
    with dashboard.client(dashboard.viewer) as client:
        html = client.get(
            "/cost", params={"from": (datetime.now(UTC).date() - timedelta(days=40)).isoformat()}
        ).text
    values = Values(html)
    expected = {}
    for record in dashboard.records:
        if record.cost.price_missing and record.started_at.date() >= datetime.now(
            UTC
        ).date() - timedelta(days=40):
            model = record.model_served or record.model_requested
            expected[model] = expected.get(model, 0) + 1
    assert 'id="unpriced-notice"' in html
    shown = {
        item["unpriced-model"]: int(item["value"])
        for item in values.found
        if "unpriced-model" in item
    }
    assert shown == expected
    assert int(values.pick(id="total-unpriced")) == sum(expected.values())


# Traces


def listed_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-call-id="([0-9a-f]+)">', html)


def expected_ids(dashboard: Dashboard, keep) -> list[str]:
    chosen = [record for record in dashboard.records if keep(record)]
    chosen.sort(key=lambda record: (record.started_at, record.call_id), reverse=True)
    return [record.call_id for record in chosen]


@pytest.mark.parametrize(
    ("query", "keep"),
    [
        ({"run": "run-a"}, lambda r: r.run_id == "run-a"),
        ({"session": "sess-1"}, lambda r: r.session_id == "sess-1"),
        ({"model": "m-beta"}, lambda r: (r.model_served or r.model_requested) == "m-beta"),
        ({"outcome": "error"}, lambda r: r.outcome == "error"),
        (
            {"route": "summarise", "outcome": "ok"},
            lambda r: r.route == "summarise" and r.outcome == "ok",
        ),
    ],
)
def test_trace_list_filters(dashboard, query, keep) -> None:
    with dashboard.client(dashboard.viewer) as client:
        html = client.get("/traces", params={**query, "limit": 200}).text
    assert listed_ids(html) == expected_ids(dashboard, keep)


def test_trace_list_time_range(dashboard) -> None:
    now = datetime.now(UTC)
    since, until = now - timedelta(days=10), now - timedelta(days=2)
    with dashboard.client(dashboard.viewer) as client:
        html = client.get(
            "/traces", params={"from": since.isoformat(), "to": until.isoformat(), "limit": 200}
        ).text
    assert listed_ids(html) == expected_ids(dashboard, lambda r: since <= r.started_at < until)
    assert len(listed_ids(html)) > 5


def test_trace_list_pages_forward_and_back(dashboard) -> None:
    everything = expected_ids(dashboard, lambda record: True)
    seen: list[str] = []
    pages: list[str] = []
    with dashboard.client(dashboard.viewer) as client:
        url = "/traces?limit=10"
        while url and len(pages) < 20:
            html = client.get(url).text
            pages.append(url)
            seen.extend(listed_ids(html))
            older = re.search(r'id="older-page" href="([^"]+)"', html)
            url = older.group(1).replace("&amp;", "&") if older else None
        assert seen == everything
        assert len(pages) == 7
        newer = re.search(r'id="newer-page" href="([^"]+)"', client.get(pages[-1]).text).group(1)
        assert listed_ids(client.get(newer.replace("&amp;", "&")).text) == everything[50:60]


def test_trace_page_shows_attempts_and_escapes_messages(dashboard) -> None:
    with dashboard.client(dashboard.viewer) as client:
        html = client.get("/traces/" + "e" * 32).text
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert html.count('class="row" data-span-id=') == 2
    attempts = html[html.index('class="attempts"') :]
    assert "rate_limited" in attempts
    assert "429" in attempts
    assert "retry-after" in attempts
    assert "left <strong>primary</strong>: rate_limited (429 twice)" in html
    assert "after 1 repair." in html


def test_trace_page_of_unknown_trace(dashboard) -> None:
    with dashboard.client(dashboard.viewer) as client:
        response = client.get("/traces/" + "0" * 31 + "z")
    assert response.status_code == 404
    assert "no trace with id" in response.text


def test_trace_of_call_without_spans(dashboard) -> None:
    # The seeded calls were stored without spans; each still shows as its own span.
    with dashboard.client(dashboard.viewer) as client:
        html = client.get(f"/traces/{trace_id(2)}").text
    assert html.count('class="row" data-span-id=') == 1
    assert "question 2" in html


# Invalid queries


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/traces?limit=0", "limit"),
        ("/traces?limit=201", "limit"),
        ("/traces?limit=ten", "limit"),
        ("/traces?outcome=maybe", "outcome"),
        ("/traces?from=yesterday", "from"),
        ("/traces?from=2026-12-02&to=2026-12-01", "from"),
        ("/traces?before=garbage", "before"),
        (
            "/traces?before=2026-12-01T00:00:00.000000Z,a&after=2026-12-01T00:00:00.000000Z,b",
            "after",
        ),
        ("/traces?run=" + "r" * 201, "run"),
        ("/cost?from=2026-02-30", "from"),
        ("/cost?from=2026-03-02&to=2026-03-01", "from"),
        ("/cost?from=2020-01-01&to=2026-01-01", "from"),
        ("/quality?a=x", "b"),
        ("/prompts/support/triage/diff?a=1", "b"),
        ("/prompts/support/triage/diff?a=one&b=2", "a"),
        ("/prompts/support/triage?version=0", "version"),
    ],
)
def test_invalid_query_answers_422(dashboard, path, param) -> None:
    with dashboard.client(dashboard.viewer) as client:
        response = client.get(path)
    assert response.status_code == 422
    assert f"query parameter &#39;{param}&#39;" in response.text


def test_invalid_audit_offset_answers_422(dashboard) -> None:
    with dashboard.client(dashboard.admin) as client:
        response = client.get("/audit?offset=-1")
    assert response.status_code == 422


# Prompts, quality, audit


def test_prompt_pages(dashboard) -> None:
    with dashboard.client(dashboard.viewer) as client:
        listing = client.get("/prompts").text
        page = client.get("/prompts/support/triage").text
        first = client.get("/prompts/support/triage?version=1").text
        diff = client.get("/prompts/support/triage/diff?a=1&b=2").text
        same = client.get("/prompts/support/triage/diff?a=2&b=2").text
        missing = client.get("/prompts/support/nothing")
        missing_version = client.get("/prompts/support/triage/diff?a=1&b=7")
    assert 'data-prompt="support/triage"' in listing
    assert "production → 2" in listing
    assert 'data-label="production" data-version="2"' in page
    assert page.count('<tr data-version="') == 2
    assert "Say only its name." in page
    assert "Say only its name." not in first
    moves = page[page.index('id="label-moves"') :]
    assert moves.index("ben") < moves.index("ana")
    assert '<span class="line remove">-  content: Sort {{ ticket }} into a queue.</span>' in diff
    added = "+  content: Sort {{ ticket }} into one queue. Say only its name."
    assert f'<span class="line add">{added}</span>' in diff
    assert 'id="diff-same"' in same
    assert missing.status_code == 404
    assert missing_version.status_code == 404


def test_prompt_version_missing(dashboard) -> None:
    with dashboard.client(dashboard.viewer) as client:
        response = client.get("/prompts/support/triage?version=99")
    assert response.status_code == 404
    assert "has no version 99; its versions are 1 to 2" in response.text


def test_quality_page_charts_scores_with_intervals(dashboard) -> None:
    with dashboard.client(dashboard.viewer) as client:
        html = client.get("/quality").text
    figure = json.loads(
        re.search(
            r'<script type="application/json" id="figure-task-1">(.*?)</script>', html, re.S
        ).group(1)
    )
    series = {trace["name"]: trace for trace in figure["data"]}
    assert set(series) == {"support/triage@1 on primary", "support/triage@2 on primary"}
    second = series["support/triage@2 on primary"]
    assert second["y"] == [0.78, 0.81]
    assert second["error_y"]["array"] == pytest.approx([0.04, 0.04])
    assert second["error_y"]["arrayminus"] == pytest.approx([0.05, 0.05])
    assert html.count("<tr data-experiment-id=") == 3


def test_quality_compares_two_experiments(dashboard) -> None:
    with dashboard.store.engine.connect() as connection:
        ids = dict(
            connection.execute(select(experiments.c.name, experiments.c.experiment_id)).all()
        )
    first, second = ids["triage v1 #0"], ids["triage v2 #1"]
    with dashboard.client(dashboard.viewer) as client:
        html = client.get("/quality", params={"a": first, "b": second}).text
        unknown = client.get("/quality", params={"a": first, "b": "nope"})
        unpaired = client.get("/quality", params={"a": first, "b": ids["triage v2 #2"]})
    section = html[html.index('id="comparison"') :]
    assert "B − A = +0.3333" in section
    assert "B wins 1, ties 2, loses 0" in section
    assert 'data-side="a" data-value="0.7"' in section
    assert unknown.status_code == 404
    assert unpaired.status_code == 422


def test_audit_page_paginates(dashboard) -> None:
    with dashboard.client(dashboard.admin) as client:
        first = client.get("/audit?limit=2").text
        second = client.get("/audit?limit=2&offset=2").text
    first_ids = re.findall(r'data-audit-id="(\d+)"', first)
    second_ids = re.findall(r'data-audit-id="(\d+)"', second)
    assert len(first_ids) == 2
    assert len(second_ids) == 2
    assert int(first_ids[-1]) > int(second_ids[0])
    assert 'id="older-page"' in first
    assert 'id="newer-page"' in second


# Assets and headers


def test_plotly_served_from_installed_package(dashboard) -> None:
    import plotly

    path = f"/static/plotly-{plotly.__version__}.min.js"
    bundled = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    with dashboard.client() as client:
        plain = client.get(path, headers={"accept-encoding": "identity"})
        compressed = client.get(path, headers={"accept-encoding": "gzip"})
        again = client.get(path, headers={"if-none-match": plain.headers["etag"]})
        stale = client.get("/static/plotly-0.0.1.min.js", follow_redirects=False)
    assert plain.status_code == 200
    assert plain.content == bundled
    assert "max-age=31536000" in plain.headers["cache-control"]
    assert compressed.headers["content-encoding"] == "gzip"
    assert compressed.content == bundled
    assert again.status_code == 304
    assert stale.status_code == 404


def test_pages_load_nothing_from_other_hosts(dashboard) -> None:
    with dashboard.client(dashboard.viewer) as client:
        for path in (*PAGES, "/login"):
            response = client.get(path)
            sources = re.findall(r'(?:src|href)="([^"]+)"', response.text)
            assert sources, path
            # "data:," is the empty icon that stops the browser asking for /favicon.ico.
            assert all(source.startswith(("/", "#")) or source == "data:," for source in sources), (
                path,
                sources,
            )
            policy = response.headers["content-security-policy"]
            assert "script-src 'self'" in policy
            assert response.headers["cache-control"] == "no-store"


def test_audit_page_compact(dashboard) -> None:
    with dashboard.client(dashboard.admin) as client:
        created = client.post("/admin/keys", json={"role": "viewer", "name": "wall screen"}).json()
        key_id = created["key_id"]
        client.put(f"/admin/keys/{key_id}/limits", json={"rpm": 5, "routes": ["chat"]})
        page = client.get("/audit", params={"action": "key.limits_changed", "limit": 1}).text
    cell = page[page.index('<td class="audit-details">') :]
    summary = cell[: cell.index("<details>")]
    assert "rpm: none -&gt; 5, routes: none -&gt; chat" in summary
    assert "budget_usd_per_day" not in summary
    # The full JSON stays one click away, folded inside the row.
    folded = cell[cell.index("<details>") : cell.index("</details>")]
    assert "&#34;before&#34;" in folded
