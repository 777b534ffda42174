"""When to send an attempt again, and how long to wait first."""

from __future__ import annotations

import random
from dataclasses import dataclass

from trunkline.errors import CallError, ProviderError


@dataclass(frozen=True)
class RetryDecision:
    """What to do after a failed attempt.

    `wait_s` is None when the call must stop retrying at this deployment;
    `reason` then gives the cause, and otherwise how the wait was chosen.
    """

    wait_s: float | None
    reason: str


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter, capped, honouring `Retry-After`.

    Attributes:
        max_attempts: attempts per deployment, the first included.
        base_s: the backoff before the second attempt is drawn from [0, base_s].
        max_s: no backoff exceeds this many seconds.
        retry_after_max_s: a `Retry-After` longer than this stops the retries
            instead of being slept through.
    """

    max_attempts: int = 3
    base_s: float = 0.5
    max_s: float = 30.0
    retry_after_max_s: float = 60.0
    rng: random.Random | None = None

    def backoff_s(self, attempt_number: int) -> float:
        """Draw the wait after attempt `attempt_number` (from 1) with full jitter."""
        ceiling = min(self.max_s, self.base_s * (2 ** (attempt_number - 1)))
        return (self.rng or random).uniform(0.0, ceiling)

    def decide(
        self, error: CallError, attempt_number: int, remaining_s: float | None = None
    ) -> RetryDecision:
        """Return whether and how long to wait before attempt `attempt_number + 1`.

        `remaining_s` is the time left before the call's deadline; a retry
        that could not start before it is not made.
        """
        if not error.kind.retryable:
            return RetryDecision(None, f"{error.kind.value} is not retryable")
        if attempt_number >= self.max_attempts:
            return RetryDecision(None, f"attempts spent ({self.max_attempts})")
        retry_after = error.retry_after_s if isinstance(error, ProviderError) else None
        if retry_after is not None:
            if retry_after > self.retry_after_max_s:
                return RetryDecision(
                    None,
                    f"Retry-After {retry_after:.1f}s exceeds the cap of "
                    f"{self.retry_after_max_s:.1f}s",
                )
            decision = RetryDecision(retry_after, "retry-after")
        else:
            decision = RetryDecision(self.backoff_s(attempt_number), "backoff")
        if remaining_s is not None and decision.wait_s is not None and decision.wait_s >= remaining_s:
            if remaining_s <= 0:
                return RetryDecision(None, "the call's deadline has passed")
            return RetryDecision(
                None,
                f"the deadline leaves {remaining_s:.2f}s, less than the "
                f"{decision.wait_s:.2f}s {decision.reason} wait",
            )
        return decision
