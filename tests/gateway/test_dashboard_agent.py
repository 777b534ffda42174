"""The trace page's agent view: a real agent run's loop read back from the store as a tree."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser

import pytest

from conftest import STORE_BACKENDS
from gateway.agent_trace import AGENT_NAME, HOSTILE, LONG_NOTE, SECRET, AgentTrace, agent_gateway
from gateway.harness import GatewayServer
from gateway.test_dashboard import make_call
from pgserver import store_url_for
from trunkline.redaction import REDACTED
from trunkline.server.dashboard.agents import PREVIEW_CHARS
from trunkline.server.dashboard.rendering import format_usd
from trunkline.store.keys import Role

# Elements that never have an end tag, so the parser must not wait for one.
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


@dataclass
class Element:
    """An HTML element with its attributes, children and the text directly inside it."""

    tag: str
    attributes: dict[str, str]
    parent: Element | None = None
    children: list[Element] = field(default_factory=list)
    parts: list[str | Element] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attributes.get("class", "").split())

    def text(self) -> str:
        """Return the text of the element and its descendants, whitespace collapsed."""
        pieces = [part if isinstance(part, str) else part.text() for part in self.parts]
        return " ".join(" ".join(pieces).split())

    def raw_text(self) -> str:
        return "".join(part if isinstance(part, str) else part.raw_text() for part in self.parts)

    def find_all(self, tag: str | None = None, class_name: str | None = None, **attributes: str) -> list[Element]:
        found = []
        for child in self.children:
            if (
                (tag is None or child.tag == tag)
                and (class_name is None or class_name in child.classes)
                and all(child.attributes.get(name.replace("_", "-")) == value for name, value in attributes.items())
            ):
                found.append(child)
            found.extend(child.find_all(tag, class_name, **attributes))
        return found

    def one(self, tag: str | None = None, class_name: str | None = None, **attributes: str) -> Element:
        found = self.find_all(tag, class_name, **attributes)
        assert len(found) == 1, (tag, class_name, attributes, [item.attributes for item in found])
        return found[0]

    def direct(self, tag: str, class_name: str | None = None) -> list[Element]:
        return [
            child
            for child in self.children
            if child.tag == tag and (class_name is None or class_name in child.classes)
        ]

    def ancestors(self) -> Iterator[Element]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


class TreeBuilder(HTMLParser):
    """Builds an `Element` tree; a mismatched end tag fails, so the page's nesting is checked too."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.root = Element("document", {})
        self._open = self.root
        self.feed(html)
        self.close()
        assert self._open is self.root, f"<{self._open.tag}> is never closed"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs}, parent=self._open)
        self._open.children.append(element)
        self._open.parts.append(element)
        if tag not in VOID_TAGS:
            self._open = element

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_TAGS:
            return
        assert self._open.tag == tag, f"</{tag}> closes <{self._open.tag}>"
        self._open = self._open.parent

    def handle_data(self, data: str) -> None:
        self._open.parts.append(data)


def parse(html: str) -> Element:
    return TreeBuilder(html).root


@dataclass
class AgentDashboard:
    server: GatewayServer
    viewer: str
    trace: AgentTrace
    #: Ids of the calls stored besides the agent's, which no agent made.
    other_call_ids: list[str]

    def get(self, path: str, **params: object):  # noqa: ANN201
        with self.server.client(self.viewer) as client:
            return client.get(path, params=params)


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def dashboard(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentDashboard]:
    folder = tmp_path_factory.mktemp("agent-dashboard")
    others = [make_call(index, datetime.now(UTC), developer_id="k1") for index in range(3)]
    with store_url_for(request.param, folder, request) as url, agent_gateway(folder, url, others) as (server, trace):
        yield AgentDashboard(
            server=server,
            viewer=server.key(Role.VIEWER),
            trace=trace,
            other_call_ids=[record.call_id for record in others],
        )


@pytest.fixture(scope="module")
def page(dashboard) -> Element:
    response = dashboard.get(f"/traces/{dashboard.trace.trace_id}")
    assert response.status_code == 200
    return parse(response.text)


def steps_of(page: Element) -> list[Element]:
    tree = page.one("ul", "agent-tree")
    return tree.direct("li", "step")


def tools_of(step: Element) -> list[Element]:
    [children] = step.direct("ul")
    return children.direct("li", "tool-call")


def test_agent_section_figures(page, dashboard) -> None:
    summary = dashboard.trace.result.summary
    section = page.one("section", "agent")
    heading = section.one("h3").text()
    assert AGENT_NAME in heading
    assert "stopped by max_steps" in heading
    facts = {}
    for item in section.one("div", "facts").direct("div"):
        label = item.direct("span")[0].text()
        facts[label] = item.text().removeprefix(label).strip()
    assert facts["Stop reason"] == "max_steps"
    assert facts["Steps"] == "3"
    assert facts["Model calls"] == "3"
    assert facts["Tool calls"] == "4"
    assert facts["Tokens in / out"] == f"{summary.input_tokens} / {summary.output_tokens}"
    assert summary.input_tokens == 60
    assert facts["Cost"] == format_usd(summary.cost_usd)
    assert facts["Status"] == "error"


def test_tool_calls_nest_under_their_steps(page) -> None:
    steps = steps_of(page)
    assert [step.attributes["data-step"] for step in steps] == ["1", "2", "3"]
    by_step = [[tool.attributes["data-tool"] for tool in tools_of(step)] for step in steps]
    assert by_step == [["add", "describe"], ["explode", "divide"], []]
    for step in steps:
        for tool in tools_of(step):
            assert step in list(tool.ancestors())
            assert tool.attributes["data-span-id"]


def test_model_call_links_to_its_details(page, dashboard) -> None:
    calls = dashboard.trace.result.calls
    for step, record in zip(steps_of(page), calls, strict=True):
        [children] = step.direct("ul")
        [model_call] = children.direct("li", "model-call")
        assert model_call.attributes["data-call-id"] == record.call_id
        link = model_call.one("a")
        assert link.attributes["href"] == f"#call-{record.call_id}"
        assert page.one("section", id=f"call-{record.call_id}")
        text = model_call.text()
        assert record.model_served in text
        assert f"tokens {record.usage.input_tokens} / {record.usage.output_tokens}" in text
        assert format_usd(record.cost.total_usd) in text
        assert "asked for" in text


def test_failed_tools_stand_out(page) -> None:
    ok_step, failed_step, _ = steps_of(page)
    for tool in tools_of(ok_step):
        assert "failed" not in tool.classes
        assert tool.attributes["data-outcome"] == "ok"
    explode, divide = tools_of(failed_step)
    assert "failed" in explode.classes
    assert "failed" in divide.classes
    assert explode.one("span", "outcome-error").text() == "exception"
    assert divide.one("span", "outcome-error").text() == "unknown_tool"
    [_, explode_result] = explode.find_all("details")
    assert "RuntimeError: disk full" in explode_result.one("pre").raw_text()
    [_, divide_result] = divide.find_all("details")
    assert "there is no tool named 'divide'" in divide_result.one("pre").raw_text()
    assert "2 failed" in failed_step.direct("div", "node")[0].text()


def test_bound_stop_marks_last_step(page) -> None:
    *earlier, last = steps_of(page)
    assert "failed" in last.classes
    stop = last.one("div", "stop")
    assert "error" in stop.classes
    assert "max_steps" in stop.text()
    assert "the 1 tool call its model requested did not run" in stop.text()
    for step in earlier:
        assert step.find_all("div", "stop") == []


def test_tool_text_shortened_then_full(page) -> None:
    add, describe = tools_of(steps_of(page)[0])
    arguments, result = describe.find_all("details")
    full = result.one("pre").raw_text()
    preview = result.one("summary").one("code").raw_text()
    assert LONG_NOTE.strip() in full
    assert len(preview) == PREVIEW_CHARS + 1
    assert preview.endswith("…")
    assert full.startswith(preview[:-1])
    assert json.loads(arguments.one("pre").raw_text()) == {"value": 5, "note": HOSTILE}
    add_arguments = json.loads(add.find_all("details")[0].one("pre").raw_text())
    assert add_arguments["note"] == REDACTED


def test_page_escapes_and_redacts(dashboard) -> None:
    html = dashboard.get(f"/traces/{dashboard.trace.trace_id}").text
    assert SECRET not in html
    assert HOSTILE not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_waterfall_rows_name_tool_and_outcome(page) -> None:
    rows = {
        row.attributes["data-span-id"]: row.one("div", "name")
        for row in page.one("div", id="waterfall").direct("div", "row")
    }
    labels = []
    for step in steps_of(page):
        step_row = rows[step.attributes["data-span-id"]]
        assert step_row.text().startswith(f"agent step {step.attributes['data-step']}")
        for tool in tools_of(step):
            labels.append(rows[tool.attributes["data-span-id"]].text())
    assert labels == [
        "tool add ok",
        "tool describe ok",
        "tool explode exception",
        "tool divide unknown_tool",
    ]


def test_trace_json_has_agent_loop(dashboard) -> None:
    response = dashboard.get(f"/api/traces/{dashboard.trace.trace_id}")
    assert response.status_code == 200
    [agent] = response.json()["agents"]
    assert agent["name"] == AGENT_NAME
    assert agent["stop_reason"] == "max_steps"
    assert agent["tool_calls_by_tool"]["explode"] == {"error": 1}
    steps = agent["steps"]
    assert [step["stopped_by"] for step in steps] == [None, None, "max_steps"]
    assert [[tool["tool"] for tool in step["tools"]] for step in steps] == [
        ["add", "describe"],
        ["explode", "divide"],
        [],
    ]
    assert [tool["error_kind"] for tool in steps[1]["tools"]] == ["exception", "unknown_tool"]
    first_call = dashboard.trace.result.calls[0]
    assert steps[0]["call"]["call_id"] == first_call.call_id
    assert steps[0]["call"]["tool_calls_requested"] == 2


def listed(html: str) -> dict[str, Element]:
    table = parse(html).one("table", id="calls")
    return {row.attributes["data-call-id"]: row for row in table.find_all("tr") if "data-call-id" in row.attributes}


def test_trace_list_marks_and_filters_agent_runs(dashboard) -> None:
    agent_calls = {record.call_id for record in dashboard.trace.result.calls}
    everything = listed(dashboard.get("/traces", limit=200).text)
    assert set(everything) == agent_calls | set(dashboard.other_call_ids)
    for call_id, row in everything.items():
        markers = row.find_all("a", "agent-marker")
        assert len(markers) == (1 if call_id in agent_calls else 0), call_id
    only_agents = listed(dashboard.get("/traces", trace="agent", limit=200).text)
    assert set(only_agents) == agent_calls
    api = dashboard.get("/api/calls", trace="agent").json()
    assert {row["call_id"] for row in api["data"]} == agent_calls


def test_trace_list_rejects_unknown_kind(dashboard) -> None:
    response = dashboard.get("/traces", trace="workflow")
    assert response.status_code == 422
    assert "must be one of agent" in response.text
