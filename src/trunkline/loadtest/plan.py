"""The arrivals of a load test, drawn up front from a seeded Poisson process."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache

from trunkline.errors import ConfigError
from trunkline.loadtest.profile import Profile


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One request of the plan: when it is sent, on which route, and its sizes."""

    index: int
    #: Seconds from the start of the test at which it is sent.
    offset_s: float
    route: str
    input_tokens: int
    output_tokens: int
    tags: dict[str, str] = field(default_factory=dict)

    def prompt(self) -> str:
        """Return a prompt of `input_tokens` tokens by Trunkline's four-characters rule."""
        return prompt_of(self.input_tokens)


@lru_cache(maxsize=4096)
def prompt_of(tokens: int) -> str:
    return "tok " * tokens


def plan_arrivals(
    profile: Profile, *, scale: float, duration_s: float, max_requests: int
) -> list[PlannedRequest]:
    """Draw the arrivals of `duration_s` seconds at the profile's rate times `scale`.

    Gaps between arrivals are exponential, so arrivals form a Poisson
    process. The same profile, seed, scale and duration give the same plan.

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
    plan: list[PlannedRequest] = []
    offset = rng.expovariate(rate)
    while offset < duration_s and len(plan) < max_requests:
        task = rng.choices(profile.tasks, weights=shares)[0]
        plan.append(
            PlannedRequest(
                index=len(plan),
                offset_s=offset,
                route=task.route,
                input_tokens=task.input_tokens.draw(rng),
                output_tokens=task.output_tokens.draw(rng),
                tags=task.tags,
            )
        )
        offset += rng.expovariate(rate)
    return plan
