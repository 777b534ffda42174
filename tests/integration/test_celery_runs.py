"""Distributed runs end to end: `trunkline worker` processes, a real redis-server broker, PostgreSQL.

The rows call an OpenAI deployment served by the fake HTTP server, so the
test counts every request the workers sent, including those of a worker that
was killed while its requests were in flight.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fakeserver import FakeServer, PlannedReply, openai_completion
from otlp_receiver import OtlpReceiver
from integration.cli import run_trunkline
from integration.test_cli import WORKFLOW as CLI_WORKFLOW
from pgserver import store_url_for
from trunkline.config import Settings
from trunkline.store.database import open_store
from trunkline.store.runs import get_run
from trunkline.store.tables import calls, run_rows

pytest.importorskip("celery", reason="Celery is not installed; install trunkline[workers]")

CONFIG = """
default_route = "remote"

[deployments.{deployment}]
provider = "openai"
model = "gpt-4o-mini"
base_url = "{base_url}"
api_key_env = "FAKE_OPENAI_KEY"
{limits}

[routes.remote]
deployments = ["{deployment}"]
max_attempts = 1
limit_wait_max_s = 0

[prices.gpt-4o-mini]
input_per_mtok = 1.0
output_per_mtok = 4.0

[workers]
queue = "{queue}"
visibility_timeout_s = 3
lease_s = 2
"""

# The CLI tests' workflow, with a plain-text model step.
WORKFLOW = CLI_WORKFLOW.replace('output_schema = "schema.json"\n', "")

ANSWER = '{"label": "yes"}'

# The post step. In a worker started with KILL_IN_ROW=1 it kills its own
# process with SIGKILL after the row's model call has ended, and after a
# pause long enough for the background writer to have stored any record it
# had been given.
TOOLS = """
import json, os, signal, time


def pick(answer):
    if os.environ.get("KILL_IN_ROW") == "1":
        time.sleep(1.5)
        os.kill(os.getpid(), signal.SIGKILL)
    return {"label": json.loads(answer)["label"]}
"""


def write_project(
    folder: Path, base_url: str, rows: int, *, rpm: int | None = None, run_budget_usd: float | None = None
) -> str:
    """Write a yes-no workflow over the fake server's OpenAI route; return the deployment's name."""
    deployment = "remote_" + uuid.uuid4().hex[:8]
    limits = f"rpm = {rpm}" if rpm else ""
    queue = "rows-" + uuid.uuid4().hex[:8]
    config = CONFIG.format(deployment=deployment, base_url=base_url, limits=limits, queue=queue)
    if run_budget_usd is not None:
        # Few output tokens, so the worst case reserved per call stays near the real cost.
        config = config.replace("{limits}", "") + f"\n[budgets]\nrun_usd = {run_budget_usd}\n"
        config = config.replace('api_key_env = "FAKE_OPENAI_KEY"', 'api_key_env = "FAKE_OPENAI_KEY"\nmax_output_tokens = 20')
    (folder / "trunkline.toml").write_text(config)
    flow = folder / "flow"
    flow.mkdir()
    (flow / "workflow.toml").write_text(WORKFLOW)
    (flow / "prompt.jinja").write_text("Answer yes or no: {{ question }}")
    (flow / "tools.py").write_text(TOOLS)
    (flow / "rows.csv").write_text("text,gold\n" + "".join(f"question {n},yes\n" for n in range(rows)))
    return deployment


@pytest.fixture
def pg_url(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty PostgreSQL store, the store a fleet of workers writes to."""
    with store_url_for("postgresql", tmp_path, request) as url:
        yield url


def environment(store: str, redis_url: str) -> dict[str, str]:
    return {
        "TRUNKLINE_DATABASE_URL": store,
        "TRUNKLINE_BROKER_URL": redis_url,
        "FAKE_OPENAI_KEY": "sk-fake",
    }


class Workers:
    """`trunkline worker` processes started in one project folder, stopped at the end."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        self.processes: dict[str, subprocess.Popen[str]] = {}

    def start(self, name: str, concurrency: int = 2, **extra_env: str) -> subprocess.Popen[str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("TRUNKLINE_")}
        environment.update(self.env, **extra_env)
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [sys.executable, "-m", "trunkline", "worker", f"--concurrency={concurrency}", f"--name={name}@test"],
            cwd=self.folder,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.processes[name] = process
        self._wait_until_answers(name, process)
        return process

    def _wait_until_answers(self, name: str, process: subprocess.Popen[str]) -> None:
        from trunkline.workers.app import celery_app

        settings = Settings.model_validate({"workers": {"broker_url": self.env["TRUNKLINE_BROKER_URL"]}})
        app = celery_app(settings)
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[f"{name}@test"], timeout=0.5):
            if process.poll() is not None:
                raise AssertionError(f"worker {name} exited: {(self.folder / f'{name}.log').read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {name} did not answer within 60 s")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Workers]]:
    started: list[Workers] = []
    yield started
    for group in started:
        group.stop()


def run_summary(folder: Path, env: dict[str, str], *arguments: str) -> dict:
    result = run_trunkline(folder, "run", "flow", "--json", *arguments, env=env, timeout_s=180)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def comparable(summary: dict) -> dict:
    """The summary without what differs from one run to the next: its id and timings."""
    return {k: v for k, v in summary.items() if k not in ("run_id", "latency_p50_ms", "latency_p95_ms")}


def run_status(store_url: str, run_id: str) -> str:
    store = open_store(store_url)
    try:
        return get_run(store, run_id)["status"]
    finally:
        store.dispose()


def stored_calls_by_row(store_url: str, run_id: str) -> tuple[int, int, float]:
    """Return the run's stored rows, calls and summed call cost."""
    store = open_store(store_url)
    try:
        with store.engine.connect() as connection:
            rows = connection.execute(select(func.count()).where(run_rows.c.run_id == run_id)).scalar_one()
            count, cost = connection.execute(
                select(func.count(), func.sum(calls.c.cost_usd)).where(calls.c.run_id == run_id)
            ).one()
    finally:
        store.dispose()
    return rows, count, float(cost or 0.0)


def run_on_three_workers(
    folder: Path, fake_server: FakeServer, env: dict[str, str], workers: list[Workers], rows: int
) -> tuple[dict, str]:
    """Start three workers, run the project's rows on them and return the summary and stderr."""
    fake_server.plan(*[PlannedReply(body=openai_completion(ANSWER)) for _ in range(rows)])
    group = Workers(folder, env)
    workers.append(group)
    for name in ("one", "two", "three"):
        group.start(name, concurrency=4)
    result = run_trunkline(
        folder, "run", "flow", "--workers", "celery", "--chunk-size", "2", "--json", env=env, timeout_s=180
    )
    assert result.stdout, result.stderr
    return json.loads(result.stdout), result.stderr


def test_two_workers_match_local_run(
    tmp_path: Path, fake_server: FakeServer, redis_url: str, pg_url: str, workers: list[Workers]
) -> None:
    write_project(tmp_path, fake_server.openai_base_url, rows=24)
    env = environment(pg_url, redis_url)
    fake_server.plan(*[PlannedReply(body=openai_completion(ANSWER)) for _ in range(48)])
    local = run_summary(tmp_path, env)
    collector = OtlpReceiver()
    collector.start()
    try:
        group = Workers(tmp_path, env | {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.endpoint})
        workers.append(group)
        group.start("first")
        group.start("second")
        distributed = run_summary(tmp_path, env, "--workers", "celery", "--chunk-size", "2")
        group.stop()
    finally:
        collector.stop()
    assert comparable(distributed) == comparable(local)
    assert distributed["rows"] == distributed["ok"] == 24
    assert stored_calls_by_row(pg_url, distributed["run_id"])[:2] == (24, 24)
    assert len(fake_server.requests) == 48
    # The workers' row spans reach the collector as children of the run's span.
    rows = [span for span in collector.spans if span.name.startswith("row ")]
    assert len(rows) == 24
    assert len({(span.trace_id, span.parent_span_id) for span in rows}) == 1


def test_killed_worker_stores_each_row_once(
    tmp_path: Path, fake_server: FakeServer, redis_url: str, pg_url: str, workers: list[Workers]
) -> None:
    rows = 12
    write_project(tmp_path, fake_server.openai_base_url, rows=rows)
    env = environment(pg_url, redis_url)
    fake_server.plan(*[PlannedReply(body=openai_completion(ANSWER), delay_s=0.3) for _ in range(3 * rows)])
    group = Workers(tmp_path, env)
    workers.append(group)
    doomed = group.start("doomed", concurrency=3, KILL_IN_ROW="1")
    group.start("survivor", concurrency=2)
    summary = run_summary(tmp_path, env, "--workers", "celery", "--chunk-size", "2")
    assert doomed.wait(timeout=5) == -signal.SIGKILL
    assert summary["rows"] == summary["ok"] == rows
    # The killed worker's rows were sent again: more requests than rows...
    assert len(fake_server.requests) > rows
    # ...yet each row is stored once with its one call, and charged once.
    stored_rows, stored_calls, cost = stored_calls_by_row(pg_url, summary["run_id"])
    assert (stored_rows, stored_calls) == (rows, rows)
    assert cost == pytest.approx(rows * (12 * 1.0 + 5 * 4.0) / 1e6)
    assert summary["cost_usd"] == pytest.approx(cost)
    assert summary["input_tokens"] == rows * 12
    assert summary["output_tokens"] == rows * 5


def test_workers_share_deployment_rpm(
    tmp_path: Path, fake_server: FakeServer, redis_url: str, pg_url: str, workers: list[Workers]
) -> None:
    rpm = 7
    write_project(tmp_path, fake_server.openai_base_url, rows=30, rpm=rpm)
    summary, stderr = run_on_three_workers(tmp_path, fake_server, environment(pg_url, redis_url), workers, 30)
    # No limit wait is allowed, so the calls past the shared limit fail at
    # once. Under contention the window may end short of full, but never over
    # it. One limit per worker would let up to three times as many through.
    assert 0 < summary["ok"] <= rpm
    assert summary["errors"] == 30 - summary["ok"]
    assert len(fake_server.requests) == summary["ok"]
    assert "rate_limited" in stderr


def test_workers_share_run_budget(
    tmp_path: Path, fake_server: FakeServer, redis_url: str, pg_url: str, workers: list[Workers]
) -> None:
    budget = 0.0005
    write_project(tmp_path, fake_server.openai_base_url, rows=40, run_budget_usd=budget)
    summary, stderr = run_on_three_workers(tmp_path, fake_server, environment(pg_url, redis_url), workers, 40)
    # Each call costs 32 micro-dollars; one budget per worker would let each
    # of the three spend up to the limit.
    assert 0 < summary["ok"] < 40
    assert summary["cost_usd"] <= budget
    assert len(fake_server.requests) == summary["ok"]
    assert "budget_exceeded" in stderr


def test_run_without_worker_is_rejected(
    tmp_path: Path, fake_server: FakeServer, redis_url: str, pg_url: str
) -> None:
    write_project(tmp_path, fake_server.openai_base_url, rows=2)
    result = run_trunkline(
        tmp_path, "run", "flow", "--workers", "celery", env=environment(pg_url, redis_url), timeout_s=60
    )
    assert result.returncode == 2
    assert "no trunkline worker takes rows from queue" in result.stderr
    assert "trunkline worker" in result.stderr
    assert not fake_server.requests


def test_worker_on_other_store_stops_run(
    tmp_path: Path, fake_server: FakeServer, redis_url: str, pg_url: str, workers: list[Workers]
) -> None:
    write_project(tmp_path, fake_server.openai_base_url, rows=3)
    group = Workers(tmp_path, environment(f"sqlite:///{tmp_path / 'elsewhere.db'}", redis_url))
    workers.append(group)
    group.start("elsewhere")
    result = run_trunkline(
        tmp_path, "run", "flow", "--workers", "celery", env=environment(pg_url, redis_url), timeout_s=60
    )
    assert result.returncode == 2
    assert "same store" in result.stderr
    assert not fake_server.requests


def test_worker_with_other_configuration_stops_run(
    tmp_path: Path, fake_server: FakeServer, redis_url: str, pg_url: str, workers: list[Workers]
) -> None:
    write_project(tmp_path, fake_server.openai_base_url, rows=4)
    env = environment(pg_url, redis_url)
    other = tmp_path / "other"
    other.mkdir()
    config = (tmp_path / "trunkline.toml").read_text()
    (other / "trunkline.toml").write_text(config.replace("output_per_mtok = 4.0", "output_per_mtok = 400.0"))
    stranger = Workers(other, env)
    workers.append(stranger)
    stranger.start("stranger")
    stopped = run_trunkline(tmp_path, "run", "flow", "--workers", "celery", env=env, timeout_s=60)
    assert stopped.returncode == 2
    assert "configuration of a worker" in stopped.stderr
    assert not fake_server.requests
    stranger.stop()
    fake_server.plan(*[PlannedReply(body=openai_completion(ANSWER)) for _ in range(4)])
    group = Workers(tmp_path, env)
    workers.append(group)
    group.start("same")
    run_id = re.search(r"--resume (run_\w+)", stopped.stderr).group(1)
    summary = run_summary(tmp_path, env, "--workers", "celery", "--resume", run_id)
    assert summary["rows"] == summary["ok"] == 4


def test_unreachable_broker_is_clear_error(tmp_path: Path, closed_port_url: str, pg_url: str) -> None:
    write_project(tmp_path, "http://127.0.0.1:9/v1", rows=2)
    broker = closed_port_url.replace("http://", "redis://") + "/0"
    result = run_trunkline(tmp_path, "run", "flow", "--workers", "celery", env=environment(pg_url, broker), timeout_s=90)
    assert result.returncode == 2, result.stderr
    assert f"the broker at {broker} cannot be reached" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopped_run_resumes_on_workers(
    tmp_path: Path, fake_server: FakeServer, redis_url: str, pg_url: str, workers: list[Workers], stop_signal: int
) -> None:
    rows = 16
    write_project(tmp_path, fake_server.openai_base_url, rows=rows)
    env = environment(pg_url, redis_url)
    fake_server.plan(*[PlannedReply(body=openai_completion(ANSWER), delay_s=0.4) for _ in range(2 * rows)])
    group = Workers(tmp_path, env)
    workers.append(group)
    group.start("only", concurrency=1)
    environment_ = {k: v for k, v in os.environ.items() if not k.startswith("TRUNKLINE_")} | env
    run = subprocess.Popen(
        [sys.executable, "-m", "trunkline", "run", "flow", "--workers", "celery", "--chunk-size", "2"],
        cwd=tmp_path,
        env=environment_,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len(fake_server.requests) < 3:
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "no request reached the fake server"
        time.sleep(0.05)

    run.send_signal(stop_signal)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    run_id = re.search(r"--resume (run_\w+)", stderr).group(1)
    assert run_status(pg_url, run_id) == "interrupted"
    summary = run_summary(tmp_path, env, "--workers", "celery", "--chunk-size", "2", "--resume", run_id)
    assert summary["run_id"] == run_id
    assert summary["rows"] == summary["ok"] == rows
    assert stored_calls_by_row(pg_url, run_id)[:2] == (rows, rows)
