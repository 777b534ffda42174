"""Traffic profiles: arrival rate, token sizes and task mix, from a file or from recorded calls.

A profile file is TOML or JSON with the fields of `Profile`; docs/loadtest.md
shows one. A recorded run or a window of recent traffic gives the same
fields, measured from the calls in the store.
"""

from __future__ import annotations

import json
import math
import random
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trunkline.config import SimulatedUpstream
from trunkline.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Parse ``90``, ``60s``, ``2m``, ``1.5h`` or ``500ms`` into seconds.

    Raises:
        ConfigError: the text is not a positive number with an optional unit.
    """
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(
            f"invalid duration {text!r}; expected a positive number of seconds with an "
            "optional unit, such as 90, 60s, 2m, 1h or 500ms"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class TokenSizes(BaseModel):
    """A distribution of token counts: recorded samples, or a log-normal around a median."""

    model_config = ConfigDict(extra="forbid")

    #: Counts drawn from with equal weight, such as those of recorded calls.
    samples: list[int] | None = Field(default=None, min_length=1)
    #: Median of a log-normal distribution of counts.
    median: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    #: Sigma of that log-normal; 0 gives every request the median.
    sigma: float = Field(default=0.0, ge=0, le=5, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check_one_form(self) -> TokenSizes:
        if (self.samples is None) == (self.median is None):
            raise ValueError(
                "give either samples (a list of token counts) or median (with an optional "
                "sigma), not both and not neither"
            )
        if self.samples is not None and min(self.samples) < 0:
            raise ValueError(f"token counts must not be negative, got {min(self.samples)}")
        return self

    def draw(self, rng: random.Random) -> int:
        """Draw one count, at least 1."""
        if self.samples is not None:
            return max(1, rng.choice(self.samples))
        assert self.median is not None
        if self.sigma <= 0:
            return max(1, round(self.median))
        return max(1, round(rng.lognormvariate(math.log(self.median), self.sigma)))

    def mean(self) -> float:
        """Return the distribution's mean, for cost and rate estimates."""
        if self.samples is not None:
            return max(1.0, sum(self.samples) / len(self.samples))
        assert self.median is not None
        return self.median * math.exp(self.sigma**2 / 2)


class Task(BaseModel):
    """One kind of arrival in the mix: a call on a route, or a row through a workflow.

    A route task draws its prompt and output sizes from `input_tokens` and
    `output_tokens`. A workflow task runs one row of its dataset through
    every step, so its rows and steps set the sizes.
    """

    model_config = ConfigDict(extra="forbid")

    route: str | None = Field(default=None, min_length=1)
    #: A workflow file, or a folder with workflow.toml, relative to the profile file.
    workflow: str | None = Field(default=None, min_length=1)
    #: The workflow's input rows (.csv or .jsonl); by default its own sample data.
    data: str | None = None
    #: Workflow parameter values, as ``--param KEY=VALUE`` gives them to `trunkline run`.
    params: dict[str, str] = Field(default_factory=dict)
    #: Weight of this task among the arrivals; shares need not sum to 1.
    share: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    input_tokens: TokenSizes | None = None
    output_tokens: TokenSizes | None = None
    #: Tags set on each call of a route task, which select the tag budgets that apply.
    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_kind(self) -> Task:
        if (self.route is None) == (self.workflow is None):
            raise ValueError("give either route or workflow, not both and not neither")
        if self.route is not None:
            if self.input_tokens is None or self.output_tokens is None:
                raise ValueError(
                    f"route task {self.route!r} needs input_tokens and output_tokens, "
                    "such as { median = 500, sigma = 0.5 }"
                )
            if self.data is not None or self.params:
                raise ValueError(f"route task {self.route!r} takes no data or params; they are for workflows")
        elif self.input_tokens is not None or self.output_tokens is not None or self.tags:
            raise ValueError(
                f"workflow task {self.workflow!r} takes no input_tokens, output_tokens or tags, "
                "because its rows and steps set them"
            )
        return self

    @property
    def label(self) -> str:
        """The task's name in the report: its route, or ``workflow:`` and the workflow path."""
        return self.route if self.route is not None else f"workflow:{self.workflow}"


class Profile(BaseModel):
    """The traffic of a load test before `--scale` multiplies its rate."""

    model_config = ConfigDict(extra="forbid")

    #: Mean arrivals per second of a Poisson process.
    rate_rps: float = Field(gt=0, allow_inf_nan=False)
    tasks: list[Task] = Field(min_length=1)
    #: Simulated providers by deployment name; they win over [loadtest] in trunkline.toml.
    upstreams: dict[str, SimulatedUpstream] = Field(default_factory=dict)
    #: The simulated provider of deployments named nowhere else; None keeps
    #: the one from trunkline.toml.
    default_upstream: SimulatedUpstream | None = None
    #: Seed of the arrivals, the task and size draws, and the simulated faults.
    seed: int = 0
    #: Spending limit of the whole load test in USD, checked like a run's budget.
    budget_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    #: Where the profile came from, for the report.
    source: str = "inline"

    def shares(self) -> list[float]:
        """Return each task's share of arrivals, normalised to sum to 1."""
        total = sum(task.share for task in self.tasks)
        return [task.share / total for task in self.tasks]


def load_profile_file(path: Path) -> Profile:
    """Read a profile from a ``.toml`` or ``.json`` file.

    Raises:
        ConfigError: the file is missing, not valid TOML or JSON, or a field
            is invalid; the message names each field and the fix.
    """
    if not path.is_file():
        raise ConfigError(
            f"profile file {str(path)!r} not found; give a .toml or .json profile file, "
            "a recorded run id (run_...), or 'recent' for the last hour of traffic"
        )
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise ConfigError(
                f"profile file {str(path)!r} has suffix {suffix or '(none)'!r}; "
                "expected .toml or .json"
            )
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"profile file {path} is not valid {suffix[1:].upper()}: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(
            f"profile file {path} must hold an object with rate_rps and tasks, "
            f"got a {type(data).__name__}"
        )
    data.setdefault("source", str(path))
    profile = validate_profile(data, where=str(path))
    # Workflow and data paths are written relative to the profile file, as a
    # workflow's own files are relative to the workflow.
    for task in profile.tasks:
        for key in ("workflow", "data"):
            value = getattr(task, key)
            if value is not None and not Path(value).is_absolute():
                setattr(task, key, str(path.parent / value))
    return profile


def validate_profile(data: dict[str, Any], *, where: str) -> Profile:
    """Validate profile fields, turning pydantic's errors into one `ConfigError` per field."""
    try:
        return Profile.model_validate(data)
    except ValidationError as error:
        lines = [f"invalid load test profile in {where}:"]
        for problem in error.errors():
            key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
            message = problem["msg"].removeprefix("Value error, ")
            if problem["type"] == "extra_forbidden":
                message += f"; valid keys here: {', '.join(_valid_keys(problem['loc']))}"
            lines.append(f"  {key}: {message}")
        lines.append("  see docs/loadtest.md for the profile format")
        raise ConfigError("\n".join(lines)) from error


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    models: dict[str, type[BaseModel]] = {
        "tasks": Task,
        "upstreams": SimulatedUpstream,
        "default_upstream": SimulatedUpstream,
    }
    model: type[BaseModel] = Profile
    if len(loc) >= 2 and loc[0] in models:
        model = models[str(loc[0])]
        if loc[0] == "tasks" and len(loc) >= 4 and loc[2] in ("input_tokens", "output_tokens"):
            model = TokenSizes
    return sorted(model.model_fields)
