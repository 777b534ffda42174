"""Batch steps through the real `openai` SDK against a local fake of the Files and Batch endpoints."""

from __future__ import annotations

import asyncio

import pytest

from fakebatch import FakeBatchServer
from trunkline.config import Settings, load_settings
from trunkline.errors import ConfigError, WorkflowError
from trunkline.recording import recording
from trunkline.store.runs import get_run
from trunkline.workflows import load_dataset, load_workflow
from unit.batch_project import (
    ONLINE_COST,
    WORKFLOW,
    batch_settings,
    label_reply,
    make_runner,
    run_once,
    write_project,
)


@pytest.fixture
def folder(tmp_path):
    return write_project(tmp_path)


async def test_batch_round_trip_maps_rows(folder, tmp_path) -> None:
    progress = []
    with FakeBatchServer(polls_before_done=2, respond=label_reply) as fake:
        summary, rows, calls, jobs = await run_once(folder, tmp_path, fake, on_batch=progress.append)
        sent = fake.input_lines(jobs[0]["batch_id"])
    assert fake.uploads == 1
    assert fake.creates == 1
    assert [line["custom_id"] for line in sent] == [f"{summary.run_id}:classify:{i}" for i in (0, 1, 3)]
    assert sent[0]["url"] == "/v1/chat/completions"
    assert sent[0]["body"]["max_tokens"] == 20
    assert sent[0]["body"]["response_format"]["type"] == "json_schema"
    assert [row["output"] for row in rows] == ["HELLO!", "BYE!", None, "MISS!"]
    assert summary.ok == 3
    assert summary.accuracy == pytest.approx(1.0 * 3 / 4)
    assert rows[2]["error"].startswith("step shout: RuntimeError")
    assert len(calls) == 3
    assert [update.status for update in progress] == ["validating", "in_progress", "completed"]
    assert progress[-1].completed == 3
    assert progress[-1].total == 3


async def test_transient_poll_errors_are_retried(folder, tmp_path) -> None:
    with FakeBatchServer(respond=label_reply) as fake:
        fake.poll_errors = [500, 503]
        summary, *_ = await run_once(folder, tmp_path, fake)
    assert summary.ok == 3
    assert fake.polls == 4
    assert fake.creates == 1


async def test_fatal_poll_error_fails_rows_keeps_job(folder, tmp_path) -> None:
    with FakeBatchServer(respond=label_reply) as fake:
        fake.poll_errors = [404]
        first, rows, _, jobs = await run_once(folder, tmp_path, fake)
        assert rows[0]["error"].startswith("step classify: not_found:")
        assert first.ok == 0
        assert jobs[0]["collected"] is False
        second, rows, _, jobs = await run_once(folder, tmp_path, fake, resume_run_id=first.run_id)
    assert fake.creates == 1
    assert second.ok == 3
    assert jobs[0]["collected"] is True


async def test_batch_records_price_and_id(folder, tmp_path) -> None:
    with FakeBatchServer(respond=label_reply) as fake:
        summary, _, calls, jobs = await run_once(folder, tmp_path, fake)
    batch_id = jobs[0]["batch_id"]
    for call in calls:
        assert call["batch_id"] == batch_id
        assert call["cost_usd"] == pytest.approx(ONLINE_COST * 0.5)
        assert call["outcome"] == "ok"
    assert summary.cost_usd == pytest.approx(3 * ONLINE_COST * 0.5)
    assert summary.batches[0].batch_id == batch_id
    assert summary.batches[0].status == "completed"
    assert summary.batches[0].rows == 3
    assert jobs[0]["collected"] is True


async def test_azure_batch_round_trip(folder, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TEST_AZURE_KEY", "azure-test-key")
    with FakeBatchServer(respond=label_reply) as fake:
        settings = batch_settings(
            fake.base_url, provider="azure", api_version="2024-10-21", api_key_env="TEST_AZURE_KEY"
        )
        summary, rows, calls, jobs = await run_once(folder, tmp_path, fake, settings)
        sent = fake.input_lines(jobs[0]["batch_id"])
    assert sent[0]["url"] == "/chat/completions"
    assert summary.ok == 3
    assert [row["output"] for row in rows] == ["HELLO!", "BYE!", None, "MISS!"]
    assert {call["provider"] for call in calls} == {"azure"}
    assert jobs[0]["provider"] == "azure"


async def test_batch_record_fields(folder, tmp_path, exported) -> None:
    with FakeBatchServer(respond=label_reply) as fake:
        await run_once(folder, tmp_path, fake)
    record = exported.calls[0]
    assert record.batch_id is not None
    assert record.model_served == "gpt-4o-mini-2026-01-01"
    assert record.model_version == "fp_fake0001"
    assert record.cost.source == "config, batch x0.5"
    assert record.usage.input_tokens == 12
    assert len(record.attempts) == 1
    assert record.latency_ms >= 0.0
    assert record.started_at <= record.ended_at


async def test_failed_lines_fail_their_rows(folder, tmp_path) -> None:
    fake = FakeBatchServer(respond=label_reply, fail_line=lambda custom_id: custom_id.endswith(":1"))
    with fake:
        summary, rows, calls, jobs = await run_once(folder, tmp_path, fake)
    assert summary.ok == 2
    assert rows[1]["status"] == "error"
    assert rows[1]["error"].startswith("step classify: bad_request:")
    assert "HTTP 400" in rows[1]["error"]
    failed = [call for call in calls if call["outcome"] == "error"]
    assert len(failed) == 1
    assert failed[0]["error_kind"] == "bad_request"
    assert failed[0]["batch_id"] == jobs[0]["batch_id"]


@pytest.mark.parametrize(
    ("outcome", "kind", "words"),
    [("failed", "bad_request", "invalid_json_line"), ("expired", "timeout", "completion window expired")],
)
async def test_whole_batch_failure(folder, tmp_path, outcome, kind, words) -> None:
    with FakeBatchServer(outcome=outcome, respond=label_reply) as fake:
        summary, rows, calls, jobs = await run_once(folder, tmp_path, fake)
    assert summary.ok == 0
    batch_rows = [rows[i] for i in (0, 1, 3)]
    for row in batch_rows:
        assert row["error"].startswith(f"step classify: {kind}:")
        assert words in row["error"]
    assert summary.batches[0].status == outcome
    assert {call["error_kind"] for call in calls} == {kind}


async def test_resume_polls_same_batch(folder, tmp_path) -> None:
    fake = FakeBatchServer(outcome="never", respond=label_reply)
    with fake:
        with recording(url=f"sqlite:///{tmp_path / 'runs.db'}") as recorder:
            spec, runner = make_runner(folder, recorder, batch_settings(fake.openai_base_url))
            task = asyncio.create_task(runner.run(load_dataset(spec.default_data())))
            for _ in range(500):
                if fake.polls >= 2:
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await runner.router.aclose()
            run_id = runner.run_id
            assert get_run(recorder.store, run_id)["status"] == "interrupted"
        fake.outcome = "completed"
        summary, rows, calls, jobs = await run_once(folder, tmp_path, fake, resume_run_id=run_id)
    assert fake.uploads == 1
    assert fake.creates == 1
    assert summary.run_id == run_id
    assert [row["output"] for row in rows] == ["HELLO!", "BYE!", None, "MISS!"]
    assert len(jobs) == 1
    assert len(calls) == 3


async def test_resumed_failed_rows_go_in_new_batch(folder, tmp_path) -> None:
    fake = FakeBatchServer(respond=label_reply, fail_line=lambda custom_id: custom_id.endswith(":1"))
    with fake:
        first, *_ = await run_once(folder, tmp_path, fake)
        fake.fail_line = lambda custom_id: False
        second, rows, _, jobs = await run_once(folder, tmp_path, fake, resume_run_id=first.run_id)
        resent = fake.input_lines(jobs[1]["batch_id"])
    assert fake.creates == 2
    assert [line["custom_id"] for line in resent] == [f"{first.run_id}:classify:1"]
    assert rows[1]["output"] == "BYE!"
    assert second.ok == 3


async def test_batch_on_other_provider_is_config_error(folder, tmp_path) -> None:
    settings = Settings.model_validate(
        {
            "deployments": {"small": {"provider": "fake", "model": "scripted"}},
            "routes": {"main": {"deployments": ["small"]}},
            "default_route": "main",
        }
    )
    with recording(url=f"sqlite:///{tmp_path / 'runs.db'}") as recorder:
        with pytest.raises(ConfigError, match=r"step 'classify' sets mode = \"batch\".*provider 'fake'"):
            make_runner(folder, recorder, settings)


def test_batch_mode_on_tool_step_is_rejected(folder) -> None:
    text = WORKFLOW.replace('function = "tools:shout"', 'function = "tools:shout"\nmode = "batch"')
    (folder / "workflow.toml").write_text(text)
    with pytest.raises(WorkflowError, match="only a model step can run through a provider's Batch API"):
        load_workflow(folder)


def test_batch_price_factor_is_checked(tmp_path) -> None:
    config = tmp_path / "trunkline.toml"
    config.write_text('[deployments.gpt]\nprovider = "openai"\nmodel = "gpt-4o-mini"\nbatch_price_factor = 1.5\n')
    with pytest.raises(ConfigError, match=r"deployments.gpt.batch_price_factor \(line 4\)"):
        load_settings(config)


def test_batch_stage_of_cascade_is_rejected(folder) -> None:
    cascade = """
[[steps]]
name = "pick"
kind = "cascade"
threshold = 0.5

[[steps.stages]]
name = "cheap"
kind = "model"
prompt = "prompt.jinja"

[[steps.stages]]
name = "strong"
kind = "model"
mode = "batch"
prompt = "prompt.jinja"
"""
    (folder / "workflow.toml").write_text(WORKFLOW + cascade)
    with pytest.raises(WorkflowError, match="a cascade needs each stage's answer at once"):
        load_workflow(folder)
