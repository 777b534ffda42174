"""Circuit breakers: stop sending calls to a deployment that keeps failing.

A breaker is closed while its deployment replies. After `failures`
consecutive failures that say the deployment is unwell (see
`ErrorKind.counts_against_deployment`), it opens: calls skip the
deployment for `cooldown_s` seconds. Then it lets one probe call through
(half-open); the probe's success closes it, its failure opens it again.

The state is a function of the outcomes and their times alone, so the
same class serves the router, which feeds it live, and ``trunkline routes
--status``, which replays recorded attempts through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerStatus:
    """A deployment's breaker as seen at one moment."""

    deployment: str
    state: BreakerState
    consecutive_failures: int
    #: Seconds until a probe call is let through; 0 unless open.
    retry_in_s: float
    last_error: str | None


@dataclass
class CircuitBreaker:
    """One deployment's breaker; times are seconds on any one clock the caller keeps."""

    failures: int = 5
    cooldown_s: float = 30.0
    consecutive_failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    last_error: str | None = None

    def state(self, now: float) -> BreakerState:
        if self.opened_at is None:
            return BreakerState.CLOSED
        if self.probing or now - self.opened_at >= self.cooldown_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self, now: float) -> bool:
        """Return whether a call may go to the deployment now, claiming the probe if half-open."""
        if self.opened_at is None:
            return True
        if self.probing or now - self.opened_at < self.cooldown_s:
            # One probe at a time, so the others wait until it has a reply.
            return False
        self.probing = True
        return True

    def status(self, deployment: str, now: float) -> BreakerStatus:
        return BreakerStatus(
            deployment=deployment,
            state=self.state(now),
            consecutive_failures=self.consecutive_failures,
            retry_in_s=self.retry_in_s(now),
            last_error=self.last_error,
        )

    def retry_in_s(self, now: float) -> float:
        """Seconds until the deployment will be tried again; 0 when closed."""
        if self.opened_at is None:
            return 0.0
        return max(self.cooldown_s - (now - self.opened_at), 0.0)

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self.opened_at = None
        self.probing = False

    def record_failure(self, now: float, error: str) -> None:
        self.consecutive_failures += 1
        self.last_error = error
        if self.probing or self.consecutive_failures >= self.failures:
            self.opened_at = now
        self.probing = False

    def release_probe(self) -> None:
        """Give the probe back when the probing call ended without a reply, such as when it was cancelled."""
        self.probing = False


class BreakerBoard:
    """The breakers of every deployment a router has called, by deployment name."""

    def __init__(self) -> None:
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, deployment: str, failures: int, cooldown_s: float) -> CircuitBreaker:
        breaker = self._breakers.get(deployment)
        if breaker is None:
            breaker = CircuitBreaker(failures=failures, cooldown_s=cooldown_s)
            self._breakers[deployment] = breaker
        else:
            # A deployment shared by routes takes the thresholds of the route calling it.
            breaker.failures, breaker.cooldown_s = failures, cooldown_s
        return breaker

    def items(self) -> list[tuple[str, CircuitBreaker]]:
        return sorted(self._breakers.items())
