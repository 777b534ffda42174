"""Log lines: JSON or console rendering, with the ids of the open trace."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from trunkline.errors import ConfigError
from trunkline.logs import configure_logging
from trunkline.providers.fake import FakeFailure, FakeReply, ScriptedModel
from trunkline.tracing import start_run
from unit.helpers import router_with


@pytest.fixture
def restore_logging() -> Iterator[None]:
    logger = logging.getLogger("trunkline")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers, logger.level, logger.propagate = saved[0], saved[1], saved[2]


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_json_lines_carry_trace_and_run_ids(restore_logging, exported) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream)
    model = ScriptedModel([FakeFailure(503), FakeReply("the secret answer")])
    with start_run("r", run_id="run-7") as live:
        await router_with(model).complete("a private prompt")
    lines = json_lines(stream)
    events = [line["event"] for line in lines]
    assert any("failed with overloaded" in event for event in events)
    assert any(" ok in " in event for event in events)
    assert {line["run_id"] for line in lines} == {"run-7"}
    assert {line["trace_id"] for line in lines} == {live.context.trace_id}
    # Each attempt's lines carry that attempt's span id, and the retry decision the call's.
    (record,) = exported.calls
    by_event = {line["event"]: line["span_id"] for line in lines}
    attempt_lines = [event for event in by_event if event.startswith("attempt ")]
    assert sorted(by_event[event] for event in attempt_lines) == sorted(
        attempt.span_id for attempt in record.attempts
    )
    retrying = next(event for event in by_event if "retrying" in event)
    assert by_event[retrying] == record.span_id
    assert exported.spans[0].name == "chat d0-model"
    assert {line["level"] for line in lines} >= {"debug", "warning"}
    assert "a private prompt" not in stream.getvalue()
    assert "the secret answer" not in stream.getvalue()


async def test_info_shows_no_attempts(restore_logging, exported) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    await router_with(ScriptedModel([FakeReply("x")])).complete("hi")
    assert stream.getvalue() == ""


def test_console_format_is_readable(restore_logging) -> None:
    stream = io.StringIO()
    configure_logging("WARNING", "console", stream)
    logging.getLogger("trunkline.test").warning("deployment %s is slow", "d0")
    output = stream.getvalue()
    assert "deployment d0 is slow" in output
    assert "warning" in output.lower()
    assert not output.lstrip().startswith("{")


def test_auto_picks_json_when_not_a_terminal(restore_logging) -> None:
    stream = io.StringIO()
    configure_logging("WARNING", "auto", stream)
    logging.getLogger("trunkline.test").warning("no terminal here")
    assert json_lines(stream)[0]["event"] == "no terminal here"


@pytest.mark.parametrize(("level", "log_format"), [("LOUD", "json"), ("INFO", "xml")])
def test_invalid_settings_are_rejected(restore_logging, level, log_format) -> None:
    with pytest.raises(ConfigError, match="TRUNKLINE_LOG_"):
        configure_logging(level, log_format, io.StringIO())
