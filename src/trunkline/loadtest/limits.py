"""A rate limiter wrapper that notes which limit held each request back."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from trunkline.resilience.limiter import LimitWaitTooLong, Limits, Permit, RateLimiter


@dataclass
class LimitPressure:
    """How often one limit held requests back during a load test.

    Attributes:
        limit: ``rpm``, ``tpm``, ``concurrency`` or ``budget``.
        waited: requests that had to wait for it before they were sent.
        refused: requests it turned away because the wait would pass the
            route's ``limit_wait_max_s`` (or, for ``budget``, calls a budget
            stopped or moved to a cheaper deployment).
        first_s: seconds from the start of the test to its first wait or refusal.
        deployments: the deployments where it held requests back.
    """

    limit: str
    waited: int = 0
    refused: int = 0
    first_s: float | None = None
    deployments: set[str] = field(default_factory=set)

    def note(self, at_s: float, deployment: str, *, refused: bool) -> None:
        if refused:
            self.refused += 1
        else:
            self.waited += 1
        if self.first_s is None or at_s < self.first_s:
            self.first_s = at_s
        self.deployments.add(deployment)

    def public(self) -> dict[str, object]:
        return {
            "limit": self.limit,
            "waited": self.waited,
            "refused": self.refused,
            "first_s": self.first_s,
            "deployments": sorted(self.deployments),
        }


class ObservedLimiter(RateLimiter):
    """Delegates to another limiter, noting which limit blocks each request that cannot go at once.

    Each request first requests a permit from the inner limiter with no
    wait. A rejection names the limit in the way, and the request then
    tries again with its real maximum wait, so it queues exactly as it
    would without the wrapper. Only requests that must wait pay for the
    second call.
    """

    def __init__(self, inner: RateLimiter) -> None:
        self.inner = inner
        self.pressure: dict[str, LimitPressure] = {}
        self.started_at: float | None = None
        #: Permits requested from the inner limiter, one per attempt at a limited deployment.
        self.requested = 0
        #: (seconds from the start, milliseconds waited) of each request that
        #: waited and was then granted.
        self.waits: list[tuple[float, float]] = []

    def start(self) -> None:
        """Start the clock that `LimitPressure.first_s` counts from."""
        self.started_at = asyncio.get_running_loop().time()

    def record(
        self, limit: str, deployment: str, *, refused: bool, at: float | None = None
    ) -> None:
        """Note that `limit` held back a request to `deployment` at loop time `at` (default now)."""
        now = asyncio.get_running_loop().time() if at is None else at
        at_s = now - (self.started_at if self.started_at is not None else now)
        pressure = self.pressure.get(limit)
        if pressure is None:
            pressure = self.pressure[limit] = LimitPressure(limit)
        pressure.note(at_s, deployment, refused=refused)

    async def acquire(self, key: str, limits: Limits, tokens: int, *, max_wait_s: float) -> Permit:
        self.requested += 1
        try:
            return await self.inner.acquire(key, limits, tokens, max_wait_s=0.0)
        except LimitWaitTooLong as blocked:
            if max_wait_s <= 0:
                self.record(blocked.limit, key, refused=True)
                raise
            first_limit = blocked.limit
            blocked_at = asyncio.get_running_loop().time()
        try:
            permit = await self.inner.acquire(key, limits, tokens, max_wait_s=max_wait_s)
        except LimitWaitTooLong as refusal:
            self.record(refusal.limit, key, refused=True)
            raise
        self.record(first_limit, key, refused=False, at=blocked_at)
        now = asyncio.get_running_loop().time()
        start = self.started_at if self.started_at is not None else blocked_at
        self.waits.append((blocked_at - start, (now - blocked_at) * 1000.0))
        return permit

    async def settle(self, permit: Permit, actual_tokens: int | None) -> None:
        await self.inner.settle(permit, actual_tokens)

    async def wait_s(self, key: str, limits: Limits, tokens: int) -> float:
        return await self.inner.wait_s(key, limits, tokens)

    async def aclose(self) -> None:
        await self.inner.aclose()
