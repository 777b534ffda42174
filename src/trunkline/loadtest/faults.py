"""Seeded draws of what a simulated provider does with each request, and counts of what it did.

One `FaultModel` serves both the in-process simulated provider and the
fake HTTP upstream, so that a load test against either gets the same
behaviour for the same seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Literal

from trunkline.config import SimulatedUpstream

Outcome = Literal["ok", "rate_limited", "server_error", "timeout"]


@dataclass(frozen=True, slots=True)
class Draw:
    """The fate of one request: its outcome and the seconds before the upstream responds."""

    outcome: Outcome
    latency_s: float


@dataclass
class UpstreamCounts:
    """Requests one simulated upstream received, by how each one ended.

    A request counts under its drawn outcome once the upstream has answered
    it. A hanging request counts as a timeout whether the client gave up on
    it or the upstream answered 504. Any other request whose client went
    away before the answer, such as one cut off by the router's attempt
    timeout, counts as abandoned.
    """

    requests: int = 0
    ok: int = 0
    rate_limited: int = 0
    server_error: int = 0
    timeout: int = 0
    abandoned: int = 0

    def public(self) -> dict[str, int]:
        return asdict(self)


class FaultModel:
    """Draws an outcome and a latency for each request an upstream receives.

    Server errors come from a two-state chain: outside a burst, a request
    starts one with a probability chosen so that the long-run share of
    server errors is ``server_error_rate``; inside a burst, each request
    fails and the burst ends with probability ``1 / server_error_burst``.
    With a burst length of 1 the errors are independent draws. Rate limits
    and timeouts are independent draws among the requests outside bursts,
    scaled so that their long-run shares are the configured rates.

    The draws depend only on the seed and the order in which requests
    arrive, not on the clock, so a run is reproducible up to the order of
    requests that arrive at the same moment.
    """

    def __init__(self, behaviour: SimulatedUpstream, *, seed: int | str) -> None:
        self.behaviour = behaviour
        self.random = random.Random(seed)
        self.counts = UpstreamCounts()
        self.in_burst = False
        rate = behaviour.server_error_rate
        leave = 1.0 / behaviour.server_error_burst
        # The chain's stationary share of burst requests is enter / (enter + leave).
        self.enter_burst = rate * leave / (1.0 - rate) if rate else 0.0
        self.leave_burst = leave
        # Rate limits and timeouts are drawn only outside bursts, so their
        # probabilities there are scaled up by the share outside bursts.
        calm = 1.0 - rate
        self.rate_limit_p = behaviour.rate_limit_rate / calm
        self.timeout_p = behaviour.timeout_rate / calm

    def draw(self) -> Draw:
        """Draw the next request's outcome and latency, and count the request as received."""
        self.counts.requests += 1
        outcome = self._outcome()
        if outcome == "timeout":
            return Draw(outcome, self.behaviour.hang_s)
        return Draw(outcome, self._latency_s())

    def answered(self, draw: Draw) -> None:
        """Count a request as ended by its drawn outcome."""
        setattr(self.counts, draw.outcome, getattr(self.counts, draw.outcome) + 1)

    def abandoned(self, draw: Draw) -> None:
        """Count a request whose client went away before the response."""
        if draw.outcome == "timeout":
            self.counts.timeout += 1
        else:
            self.counts.abandoned += 1

    def _outcome(self) -> Outcome:
        rng = self.random
        if self.behaviour.server_error_burst <= 1.0:
            if rng.random() < self.behaviour.server_error_rate:
                return "server_error"
        elif self.in_burst:
            if rng.random() < self.leave_burst:
                self.in_burst = False
            else:
                return "server_error"
        elif rng.random() < self.enter_burst:
            self.in_burst = True
            return "server_error"
        roll = rng.random()
        if roll < self.rate_limit_p:
            return "rate_limited"
        if roll < self.rate_limit_p + self.timeout_p:
            return "timeout"
        return "ok"

    def _latency_s(self) -> float:
        median, sigma = self.behaviour.latency_ms, self.behaviour.latency_sigma
        if median <= 0:
            return 0.0
        if sigma <= 0:
            return median / 1000.0
        return self.random.lognormvariate(math.log(median), sigma) / 1000.0
