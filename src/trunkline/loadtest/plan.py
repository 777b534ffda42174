"""The arrivals of a load test, drawn up front from a seeded Poisson process."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from trunkline.errors import ConfigError
from trunkline.loadtest.profile import Profile


@dataclass(slots=True)
class PlannedRequest:
    """One request of the plan: when it is sent, on which route, and its sizes."""

    index: int
    #: Seconds from the start of the test at which it is sent.
    offset_s: float
    #: The task's position in the profile and its label, the route for a route task.
    task: int
    route: str
    input_tokens: int = 0
    output_tokens: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    #: For a workflow task, the index of the dataset row it runs.
    row: int | None = None

    def prompt(self) -> str:
        """Return a prompt of `input_tokens` tokens by Trunkline's four-characters rule."""
        return prompt_of(self.input_tokens)


@lru_cache(maxsize=4096)
def prompt_of(tokens: int) -> str:
    return "tok " * tokens


def plan_arrivals(
    profile: Profile,
    *,
    scale: float,
    duration_s: float,
    max_requests: int,
    rows: Mapping[int, int] | None = None,
) -> list[PlannedRequest]:
    """Draw the arrivals of `duration_s` seconds at the profile's rate times `scale`.

    Gaps between arrivals are exponential, so arrivals form a Poisson
    process. The same profile, seed, scale and duration give the same plan.
    `rows` gives the dataset size of each workflow task by task index; a
    workflow arrival draws one of its rows at random.

    Raises:
        ConfigError: `scale` is not positive, or the plan would exceed
            `max_requests`; the message gives the expected count.
    """
    if not scale > 0:
        raise ConfigError(f"--scale must be a positive number, got {scale}")
    rate = profile.rate_rps * scale
    expected = rate * duration_s
    if expected > max_requests:
        raise ConfigError(
            f"the profile's {profile.rate_rps:g} requests/s times scale {scale:g} over "
            f"{duration_s:g}s is about {expected:,.0f} requests, above --max-requests "
            f"{max_requests:,}; shorten --duration, lower --scale or raise --max-requests"
        )
    rng = random.Random(profile.seed)
    shares = profile.shares()
    positions = range(len(profile.tasks))
    plan: list[PlannedRequest] = []
    offset = rng.expovariate(rate)
    while offset < duration_s and len(plan) < max_requests:
        position = rng.choices(positions, weights=shares)[0]
        task = profile.tasks[position]
        planned = PlannedRequest(index=len(plan), offset_s=offset, task=position, route=task.label)
        if task.input_tokens is not None and task.output_tokens is not None:
            planned.input_tokens = task.input_tokens.draw(rng)
            planned.output_tokens = task.output_tokens.draw(rng)
            planned.tags = task.tags
        else:
            count = (rows or {}).get(position)
            if not count:
                raise ConfigError(f"workflow task {task.label!r} has no dataset rows to send")
            planned.row = rng.randrange(count)
        plan.append(planned)
        offset += rng.expovariate(rate)
    return plan
