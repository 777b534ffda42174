"""The read API under /api/: the same figures as the pages, as JSON, for viewer keys and above."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from conftest import STORE_BACKENDS
from pgserver import store_url_for
from gateway.test_dashboard import (
    Dashboard,
    Values,
    direct_totals,
    expected_ids,
    overview_with_windows,
    start_dashboard,
)

ROUTES = (
    "/api/overview",
    "/api/cost",
    "/api/calls",
    "/api/calls/" + "f" * 32,
    "/api/traces/" + "e" * 32,
    "/api/experiments",
    "/api/prompts",
    "/api/prompts/support/triage",
)


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def dashboard(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    folder = tmp_path_factory.mktemp("reads")
    with store_url_for(request.param, folder, request) as url:
        yield from start_dashboard(folder, url)


def test_reads_need_a_viewer_key(dashboard) -> None:
    with dashboard.client() as client:
        for path in ROUTES:
            response = client.get(path, follow_redirects=False)
            assert response.status_code == 401, path
            assert response.json()["error"]["code"] == "missing_api_key"
    with dashboard.client(dashboard.metrics) as client:
        assert client.get("/api/overview").status_code == 403
    with dashboard.client(dashboard.viewer) as client:
        for path in ROUTES:
            assert client.get(path).status_code == 200, path


def test_session_cookie_reads_api(dashboard) -> None:
    with dashboard.client() as client:
        client.post("/login", data={"key": dashboard.viewer, "next": "/"})
        assert client.get("/api/overview").status_code == 200


def test_overview_json_equals_page(dashboard) -> None:
    html, windows = overview_with_windows(dashboard)
    with dashboard.client(dashboard.viewer) as client:
        data = client.get("/api/overview").json()
    page = Values(html)
    for name, _, start, end, _, _ in windows:
        current = data["periods"][name]["current"]
        expected = direct_totals(dashboard.store, start, end)
        assert data["periods"][name]["start"] == start.isoformat()
        assert current["calls"] == expected["calls"]
        assert current["tokens"] == expected["tokens"]
        assert current["cost_usd"] == pytest.approx(expected["cost_usd"])
        assert current["calls"] == int(page.pick(metric="calls", period=name))
        estimate = page.pick(metric="p95_ms", period=name)
        assert current["p95_latency_ms_estimate"] == (float(estimate) if estimate else None)
    assert len(data["days"]) == 30
    first_day = datetime.fromisoformat(data["days"][0]["date"]).replace(tzinfo=UTC)
    charted = direct_totals(dashboard.store, first_day, datetime.now(UTC) + timedelta(hours=1))
    assert sum(day["calls"] for day in data["days"]) == charted["calls"]
    assert sum(day["cost_usd"] for day in data["days"]) == pytest.approx(charted["cost_usd"])


def test_cost_json_equals_page(dashboard) -> None:
    first = (datetime.now(UTC).date() - timedelta(days=40)).isoformat()
    with dashboard.client(dashboard.viewer) as client:
        data = client.get("/api/cost", params={"from": first}).json()
        page = Values(client.get("/cost", params={"from": first}).text)
    assert data["from"] == first
    assert data["total"]["calls"] == int(page.pick(id="total-calls"))
    for line in data["by_model"]:
        assert line["calls"] == int(page.pick(table="by-model", row=line["model"], column="calls"))
        assert line["cost_usd"] == pytest.approx(
            float(page.pick(table="by-model", row=line["model"], column="cost_usd"))
        )
    tasks = {(line["kind"], line["task"]) for line in data["by_task"]}
    assert {
        ("workflow", "triage"),
        ("workflow", "summary"),
        ("route", "chat"),
        ("route", "summarise"),
    } <= tasks
    unpriced = {item["model"]: item["calls"] for item in data["unpriced_models"]}
    assert sum(unpriced.values()) == data["total"]["unpriced_calls"] > 0


def test_calls_filters_and_pages(dashboard) -> None:
    wanted = expected_ids(
        dashboard, lambda record: record.outcome == "ok" and record.route == "chat"
    )
    pages: list[list[str]] = []
    with dashboard.client(dashboard.viewer) as client:
        query = {"outcome": "ok", "route": "chat", "limit": 7}
        for _ in range(20):
            data = client.get("/api/calls", params=query).json()
            pages.append([item["call_id"] for item in data["data"]])
            if data["older"] is None:
                break
            query["before"] = data["older"]
        del query["before"]
        back = client.get("/api/calls", params={**query, "after": data["newer"]}).json()
    assert [call_id for page in pages for call_id in page] == wanted
    assert len(pages) > 2
    assert [item["call_id"] for item in back["data"]] == pages[-2]


def test_calls_reject_invalid_parameters(dashboard) -> None:
    with dashboard.client(dashboard.viewer) as client:
        for query, param in (
            ({"limit": "0"}, "limit"),
            ({"outcome": "bad"}, "outcome"),
            ({"from": "soon"}, "from"),
            ({"before": "x"}, "before"),
        ):
            response = client.get("/api/calls", params=query)
            assert response.status_code == 422, query
            assert response.json()["error"]["param"] == param


def test_one_call_and_trace(dashboard) -> None:
    with dashboard.client(dashboard.viewer) as client:
        call = client.get("/api/calls/" + "f" * 32).json()
        trace = client.get("/api/traces/" + "e" * 32).json()
        missing_call = client.get("/api/calls/" + "0" * 31 + "x")
        missing_trace = client.get("/api/traces/nothing")
        short = client.get("/api/traces/" + "e" * 32, params={"max_spans": 1}).json()
    assert call["messages"][1]["content"] == "<script>alert('x')</script>"
    assert [attempt["outcome"] for attempt in call["attempts"]] == ["error", "ok"]
    assert [span["kind"] for span in trace["spans"]] == ["run", "call"]
    assert trace["spans"][1]["parent_span_id"] == "c" * 16
    assert trace["spans"][1]["call"]["call_id"] == "f" * 32
    assert short["omitted_spans"] == 1
    assert missing_call.status_code == 404
    assert missing_call.json()["error"]["code"] == "not_found"
    assert missing_trace.status_code == 404


def test_experiments_and_comparison(dashboard) -> None:
    with dashboard.client(dashboard.viewer) as client:
        listed = client.get("/api/experiments", params={"task": "triage"}).json()["data"]
        ids = {item["name"]: item["experiment_id"] for item in listed}
        compared = client.get(
            "/api/experiments/compare", params={"a": ids["triage v1 #0"], "b": ids["triage v2 #1"]}
        ).json()
        missing = client.get("/api/experiments/compare", params={"a": ids["triage v1 #0"]})
        other_task = client.get("/api/experiments", params={"task": "nothing"}).json()["data"]
    assert [item["name"] for item in listed] == ["triage v2 #2", "triage v2 #1", "triage v1 #0"]
    assert compared["difference"] == pytest.approx(1 / 3)
    assert compared["wins"] == 1
    assert missing.status_code == 422
    assert other_task == []


def test_prompts_json(dashboard) -> None:
    with dashboard.client(dashboard.viewer) as client:
        listed = client.get("/api/prompts").json()["data"]
        prompt = client.get("/api/prompts/support/triage").json()
        diff = client.get("/api/prompts/support/triage/diff", params={"a": 1, "b": 2}).json()
        missing = client.get("/api/prompts/support/none")
    assert listed[0]["name"] == "support/triage"
    assert listed[0]["labels"] == {"production": 2}
    assert [version["version"] for version in prompt["versions"]] == [1, 2]
    assert [move["to_version"] for move in prompt["label_moves"]] == [1, 2]
    assert "+  content: Sort {{ ticket }} into one queue. Say only its name." in diff["lines"]
    assert missing.status_code == 404
