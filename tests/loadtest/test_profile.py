"""Load test profiles: files, their errors, durations, and profiles measured from recorded runs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from trunkline.config import load_settings
from trunkline.errors import ConfigError
from trunkline.loadtest.plan import plan_arrivals
from trunkline.loadtest.profile import Profile, TokenSizes, load_profile_file, parse_duration
from trunkline.loadtest.recorded import profile_from_recent, profile_from_run
from trunkline.providers.fake import FakeFailure, FakeReply, ScriptedModel
from trunkline.recording import recording
from trunkline.routing import Router
from trunkline.tracing import start_run
from unit.helpers import fake_settings

VALID_TOML = """
rate_rps = 4.5
seed = 3

[[tasks]]
route = "chat"
share = 3
input_tokens = { median = 500, sigma = 0.4 }
output_tokens = { samples = [50, 60] }
tags = { team = "search" }

[[tasks]]
route = "summarise"
share = 1
input_tokens = { median = 2000 }
output_tokens = { median = 300 }

[upstreams.main]
latency_ms = 900
rate_limit_rate = 0.02
server_error_rate = 0.01
server_error_burst = 8
"""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("60s", 60.0), ("2m", 120.0), ("1.5h", 5400.0), ("500ms", 0.5), (" 3 s ", 3.0)],
)
def test_duration_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5s", "ten", "5 minutes", "1d"])
def test_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="such as 90, 60s, 2m"):
        parse_duration(text)


def test_toml_profile_loads(tmp_path: Path) -> None:
    path = tmp_path / "profile.toml"
    path.write_text(VALID_TOML)

    profile = load_profile_file(path)

    assert profile.rate_rps == 4.5
    assert [task.route for task in profile.tasks] == ["chat", "summarise"]
    assert profile.shares() == [0.75, 0.25]
    assert profile.tasks[0].tags == {"team": "search"}
    assert profile.upstreams["main"].server_error_burst == 8
    assert profile.source == str(path)


def test_json_profile_loads(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    data = {
        "rate_rps": 1,
        "tasks": [{"route": "chat", "input_tokens": {"median": 10}, "output_tokens": {"median": 5}}],
    }
    path.write_text(json.dumps(data))

    assert load_profile_file(path).tasks[0].input_tokens.median == 10


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("seed = 1\n", "rate_rps: Field required"),
        ("rate_rps = 1\ntasks = []\n", "tasks: List should have at least 1 item"),
        ("rate_rps = 0\n", "rate_rps: Input should be greater than 0"),
        (
            "rate_rps = 1\nrate = 2\n",
            "rate: Extra inputs are not permitted; valid keys here: budget_usd",
        ),
        (
            'rate_rps = 1\n[[tasks]]\nroute = "a"\ninput_tokens = { median = 1, samples = [1] }\n'
            "output_tokens = { median = 1 }\n",
            "tasks.0.input_tokens: give either samples",
        ),
        (
            'rate_rps = 1\n[[tasks]]\nroute = "a"\ninput_tokens = { mean = 1 }\n'
            "output_tokens = { median = 1 }\n",
            "valid keys here: median, samples, sigma",
        ),
        (
            "rate_rps = 1\n[upstreams.main]\nrate_limit_rate = 0.6\ntimeout_rate = 0.6\n",
            "upstreams.main: rate_limit_rate \\+ server_error_rate \\+ timeout_rate is 1.2",
        ),
        (
            "rate_rps = 1\n[upstreams.main]\nserver_error_rate = 0.9\nserver_error_burst = 2\n",
            "the highest share that bursts of 2 requests",
        ),
        (
            "rate_rps = 1\n[upstreams.main]\nlatency = 5\n",
            "valid keys here: hang_s, latency_ms",
        ),
    ],
)
def test_bad_profile_names_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "profile.toml"
    path.write_text(text)

    with pytest.raises(ConfigError, match=expected) as raised:
        load_profile_file(path)

    assert "see docs/loadtest.md" in str(raised.value)


def test_profile_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found; give a .toml or .json"):
        load_profile_file(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("rate_rps = = 1")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_profile_file(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold an object with rate_rps and tasks, got a list"):
        load_profile_file(listed)
    other = tmp_path / "profile.yaml"
    other.write_text("rate_rps: 1")
    with pytest.raises(ConfigError, match="expected .toml or .json"):
        load_profile_file(other)


def test_loadtest_section_in_config(tmp_path: Path) -> None:
    path = tmp_path / "trunkline.toml"
    path.write_text("[loadtest.upstreams.main]\nlatency_ms = 40\n[loadtest.default_upstream]\nlatency_ms = 7\n")
    settings = load_settings(path)
    assert settings.loadtest.upstreams["main"].latency_ms == 40
    assert settings.loadtest.default_upstream.latency_ms == 7

    path.write_text("[loadtest.default_upstream]\ntimeout_rate = 2\n")
    with pytest.raises(ConfigError, match=r"loadtest.default_upstream.timeout_rate \(line 2\)"):
        load_settings(path)


def test_plan_is_poisson_at_scaled_rate() -> None:
    profile = Profile.model_validate(
        {
            "rate_rps": 10,
            "seed": 4,
            "tasks": [
                {"route": "a", "share": 3, "input_tokens": {"median": 100}, "output_tokens": {"median": 10}},
                {"route": "b", "share": 1, "input_tokens": {"samples": [7]}, "output_tokens": {"samples": [0]}},
            ],
        }
    )

    plan = plan_arrivals(profile, scale=3.0, duration_s=100.0, max_requests=10_000)
    again = plan_arrivals(profile, scale=3.0, duration_s=100.0, max_requests=10_000)

    assert plan == again
    # 3000 arrivals expected; five standard deviations of a Poisson count is about 275.
    assert 2725 < len(plan) < 3275
    share_a = sum(1 for item in plan if item.route == "a") / len(plan)
    assert 0.72 < share_a < 0.78
    assert all(item.output_tokens == 1 for item in plan if item.route == "b")
    assert all(0 <= item.offset_s < 100.0 for item in plan)
    assert plan[0].prompt() == "tok " * plan[0].input_tokens


def test_plan_refuses_too_many_requests() -> None:
    profile = Profile.model_validate(
        {"rate_rps": 100, "tasks": [{"route": "a", "input_tokens": {"median": 1}, "output_tokens": {"median": 1}}]}
    )
    with pytest.raises(ConfigError, match="about 60,000 requests, above --max-requests 1,000"):
        plan_arrivals(profile, scale=10.0, duration_s=60.0, max_requests=1000)


def test_token_sizes_draw_log_normal() -> None:
    sizes = TokenSizes(median=400, sigma=0.5)
    rng = random.Random(1)
    draws = sorted(sizes.draw(rng) for _ in range(4001))
    assert 370 < draws[2000] < 430
    assert TokenSizes(median=400).draw(rng) == 400


async def test_profile_from_recorded_run(tmp_path: Path) -> None:
    settings = fake_settings("d0", "d1")
    script = [
        FakeReply("a", input_tokens=100, output_tokens=10, latency_s=0.01),
        FakeFailure(status=429, headers={"retry-after": "0"}),
        FakeReply("b", input_tokens=300, output_tokens=30, latency_s=0.02),
        FakeFailure(status=503),
        FakeReply("c", input_tokens=200, output_tokens=20, latency_s=0.01),
    ]
    router = Router(settings, providers={"d0": ScriptedModel(script), "d1": ScriptedModel()})
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with recording(settings, url=url) as recorder:
        with start_run("traffic", run_id="run_traffic"):
            for _ in range(3):
                await router.complete("hello", route="main")
        await router.aclose()
        recorder.writer.flush()
        profile = profile_from_run(recorder.store, "run_traffic")
        recent = profile_from_recent(recorder.store, 3600.0)

    assert [task.route for task in profile.tasks] == ["main"]
    assert sorted(profile.tasks[0].input_tokens.samples) == [100, 200, 300]
    assert sorted(profile.tasks[0].output_tokens.samples) == [10, 20, 30]
    assert profile.rate_rps > 0
    upstream = profile.upstreams["d0"]
    assert upstream.rate_limit_rate == pytest.approx(1 / 5)
    assert upstream.server_error_rate == pytest.approx(1 / 5)
    assert upstream.server_error_status == 503
    assert upstream.latency_ms >= 10.0
    assert "run run_traffic (3 calls" in profile.source
    assert recent.tasks[0].input_tokens.samples == profile.tasks[0].input_tokens.samples


async def test_recent_leaves_out_load_tests(tmp_path: Path) -> None:
    settings = fake_settings("d0")
    router = Router(settings, providers={"d0": ScriptedModel(default=FakeReply("a"))})
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with recording(settings, url=url) as recorder:
        for run_id in ("run_real", "loadtest_0123"):
            with start_run("traffic", run_id=run_id):
                for _ in range(3 if run_id == "run_real" else 5):
                    await router.complete("hello", route="main")
        recorder.writer.flush()
        recent = profile_from_recent(recorder.store, 3600.0)

    assert "(3 calls" in recent.source


def test_profile_from_unknown_run(tmp_path: Path) -> None:
    settings = fake_settings("d0")
    with recording(settings, url=f"sqlite:///{tmp_path / 'store.db'}") as recorder:
        with pytest.raises(ConfigError, match="run run_missing has 0 recorded call"):
            profile_from_run(recorder.store, "run_missing")
