"""Per-deployment limits on requests per minute, tokens per minute and calls in flight.

Both limiters keep a sliding-window log per deployment key: every grant is
logged with its time and token count, and a request fits when the grants of
the last ``window_s`` seconds plus this one stay within ``rpm`` and ``tpm``.
A log costs memory in proportion to ``rpm`` but allows no burst at window
boundaries, which fixed windows do.

A request's tokens are an estimate made before the call (prompt tokens plus
the output allowance). ``settle`` replaces the estimate by the real count, so
an unused output allowance goes back to the window and an overrun is charged.

Requests that do not fit wait in a FIFO queue per key, and only the head of
the queue tries to reserve. So a large request is never starved by small ones
that arrive after it, and a newcomer's wait estimate counts the requests
ahead of it. With Redis the queue is per process, so processes do not wait in
one common order.

`RedisRateLimiter` runs its own Lua script instead of building on the
``limits`` library. That library's strategies (limits 5.x) consume one
rate-limit item per ``hit()``, at a cost fixed when it is called. Here a
reservation's token count must change to the real count after the call.
Also, rpm and tpm must be checked and reserved together in one atomic step,
so that no request takes a request slot and then fails on tokens.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from trunkline.errors import TrunklineError

logger = logging.getLogger(__name__)

LimitName = Literal["rpm", "tpm", "concurrency"]


@dataclass(frozen=True)
class Limits:
    """The limits of one deployment; None leaves a limit off.

    Attributes:
        rpm: requests granted per window.
        tpm: estimated tokens reserved per window, replaced by the real count
            when each request settles.
        max_concurrent: permits held at once, from acquire until settle.
        window_s: the window's length in seconds; 60 makes rpm and tpm per minute.
    """

    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    window_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "max_concurrent"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"Limits.{name} must be a positive integer or None, got {value!r}")
        if not self.window_s > 0:
            raise ValueError(f"Limits.window_s must be positive seconds, got {self.window_s!r}")

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return self.rpm is not None or self.tpm is not None or self.max_concurrent is not None


class LimitWaitTooLong(TrunklineError):
    """A request would wait longer than allowed for one of a deployment's limits.

    Attributes:
        key: the deployment key.
        limit: the limit that blocks: ``rpm``, ``tpm`` or ``concurrency``.
        limit_value: that limit's value.
        wait_s: the wait the request would need in seconds, counted from the
            start of acquire. It is ``math.inf`` when the request can never
            fit (tokens over tpm) and when the wait cannot be known: for
            ``concurrency``, whose slots free at unknown times, and for a
            `RedisRateLimiter` request that timed out behind others.
        max_wait_s: the wait that was allowed.
        tokens: the request's estimated tokens.
        window_s: the window of rpm and tpm in seconds.
    """

    def __init__(
        self,
        key: str,
        limit: LimitName,
        limit_value: int,
        wait_s: float,
        max_wait_s: float,
        tokens: int,
        window_s: float,
    ) -> None:
        message = _wait_message(key, limit, limit_value, wait_s, max_wait_s, tokens, window_s)
        super().__init__(message)
        self.key = key
        self.limit = limit
        self.limit_value = limit_value
        self.wait_s = wait_s
        self.max_wait_s = max_wait_s
        self.tokens = tokens
        self.window_s = window_s

    def __reduce__(self):  # rebuilds from the fields, since __init__ does not take the message
        fields = (self.key, self.limit, self.limit_value, self.wait_s)
        return (type(self), (*fields, self.max_wait_s, self.tokens, self.window_s))


def _wait_message(
    key: str,
    limit: LimitName,
    limit_value: int,
    wait_s: float,
    max_wait_s: float,
    tokens: int,
    window_s: float,
) -> str:
    per = "per minute" if window_s == 60.0 else f"per {window_s:g} s"
    remedy = "raise the route's limit_wait_max_s, or add a fallback deployment to the route"
    if limit == "concurrency":
        return (
            f"all {limit_value} concurrent slots (max_concurrent) of deployment {key!r} stayed "
            f"taken for {max_wait_s:.2f} s, the longest this call may wait; raise "
            f"max_concurrent if the provider allows more, {remedy}"
        )
    if limit == "tpm" and math.isinf(wait_s):
        return (
            f"a request of {tokens} estimated tokens is larger than the tpm limit of "
            f"{limit_value} tokens {per} of deployment {key!r}, so it can never be sent; "
            f"lower max_tokens or shorten the prompt, or raise the deployment's tpm"
        )
    amount = "requests" if limit == "rpm" else "tokens"
    if math.isinf(wait_s):
        waited = (
            f"the requests queued ahead of this one kept it waiting the {max_wait_s:.2f} s allowed"
        )
    else:
        waited = (
            f"a request of {tokens} estimated tokens would wait {wait_s:.2f} s, longer than "
            f"the {max_wait_s:.2f} s allowed"
        )
    return (
        f"deployment {key!r} is at its {limit} limit of {limit_value} {amount} {per}: {waited}; "
        f"raise the deployment's {limit} if the provider allows more, {remedy}"
    )


@dataclass(eq=False, slots=True)
class Permit:
    """One granted request; pass it to `RateLimiter.settle` when the call ends.

    Attributes:
        key: the deployment key it was granted on.
        tokens: its token count in the window: the estimate until settled with
            a real count, then that count.
        granted_at: the grant time on the limiter's clock: the event loop's
            time for `MemoryRateLimiter`, Unix seconds for `RedisRateLimiter`.
        id: the reservation's member name in Redis; empty in memory.
        holds_slot: whether it takes a concurrency slot until settled.
        settled: whether settle has run.
        in_window: in memory, whether it is still in its key's log.
    """

    key: str
    tokens: int
    granted_at: float
    id: str = ""
    holds_slot: bool = False
    settled: bool = False
    in_window: bool = False


class RateLimiter(abc.ABC):
    """Reserves requests against per-deployment rpm, tpm and concurrency limits."""

    @abc.abstractmethod
    async def acquire(self, key: str, limits: Limits, tokens: int, *, max_wait_s: float) -> Permit:
        """Wait until a request of `tokens` estimated tokens fits every limit, then reserve it.

        The request, its tokens and a concurrency slot are reserved in one
        atomic step. Requests of one key that must wait are served in arrival
        order.

        Raises:
            LimitWaitTooLong: the wait from the start of this call would exceed
                `max_wait_s`. It is raised as soon as that is known, before any
                sleep when the rate limits already show it, and at once with
                ``wait_s=math.inf`` when `tokens` exceeds ``limits.tpm``.
            ValueError: `tokens` is negative.
        """

    @abc.abstractmethod
    async def settle(self, permit: Permit, actual_tokens: int | None) -> None:
        """Release the permit's slot and replace its token estimate by `actual_tokens`.

        None keeps the estimate. A second call does nothing. A permit whose
        grant has left the window only releases its slot.
        """

    @abc.abstractmethod
    async def wait_s(self, key: str, limits: Limits, tokens: int) -> float:
        """Estimate how long a request would wait now, without reserving anything.

        Returns 0.0 when it fits at once. Returns ``math.inf`` when it can
        never fit or when every concurrency slot is taken, since a slot's
        release time is unknown.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the limiter's connections."""


def build_limiter(redis_url: str | None) -> RateLimiter:
    """Return a Redis-backed limiter when a URL is given, else an in-process one."""
    if redis_url:
        # Imported here because that module builds on this one's classes.
        from trunkline.resilience.redis_limiter import RedisRateLimiter

        return RedisRateLimiter(redis_url)
    return MemoryRateLimiter()


def _check_request(key: str, limits: Limits, tokens: int, max_wait_s: float) -> None:
    if tokens < 0:
        raise ValueError(f"tokens must be zero or more, got {tokens} for deployment {key!r}")
    if limits.tpm is not None and tokens > limits.tpm:
        raise LimitWaitTooLong(
            key, "tpm", limits.tpm, math.inf, max_wait_s, tokens, limits.window_s
        )


@dataclass(slots=True)
class _Request:
    """A request that must wait: the arguments of its acquire call and when the call began."""

    key: str
    limits: Limits
    tokens: int
    start: float  # loop time
    max_wait_s: float

    @property
    def deadline(self) -> float:
        return self.start + self.max_wait_s

    def too_long(self, limit: LimitName, wait_s: float) -> LimitWaitTooLong:
        limits = self.limits
        value = {"rpm": limits.rpm, "tpm": limits.tpm, "concurrency": limits.max_concurrent}[limit]
        return LimitWaitTooLong(
            self.key, limit, value or 0, wait_s, self.max_wait_s, self.tokens, limits.window_s
        )


class _Waiter:
    """A request waiting in its key's queue."""

    __slots__ = ("tokens", "future")

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.future: asyncio.Future[None] | None = None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _wake_head(waiters: deque[_Waiter]) -> None:
    """Wake the first waiter, which then checks the limits again."""
    if waiters and waiters[0].future is not None:
        _resolve(waiters[0].future)


async def _sleep_until(waiter: _Waiter, wake_at: float) -> None:
    """Sleep until loop time `wake_at` or until `_wake_head` wakes `waiter`."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    waiter.future = future
    handle = loop.call_at(wake_at, _resolve, future)
    try:
        await future
    finally:
        handle.cancel()
        waiter.future = None


def _leave_queue(waiters: deque[_Waiter], waiter: _Waiter) -> None:
    """Remove `waiter`; when it was the head, the next waiter takes its place."""
    was_head = waiters[0] is waiter
    waiters.remove(waiter)
    if was_head:
        _wake_head(waiters)


def _ready_after_queue(
    times: list[float],
    amounts: list[int],
    total: int,
    limits: Limits,
    requests: Iterable[int],
    now: float,
) -> tuple[float, LimitName | None]:
    """Return when the last of `requests` fits if they are granted in order, and what delays it.

    `times` and `amounts` are the grants in the window, oldest first, and
    `total` is the sum of `amounts`. The lists are extended in place with the
    simulated grants. Slots and later settles are not foreseen, so this is
    the earliest time the rate limits allow.
    """
    window = limits.window_s
    rpm, tpm = limits.rpm, limits.tpm
    oldest = 0
    ready = now
    blocker: LimitName | None = None
    for request in requests:
        # An entry leaves the window when time + window <= now, the same test as pruning.
        while oldest < len(times) and times[oldest] + window <= ready:
            total -= amounts[oldest]
            oldest += 1
        if rpm is not None and len(times) - oldest >= rpm:
            ready = times[len(times) - rpm] + window
            blocker = "rpm"
            while oldest < len(times) and times[oldest] + window <= ready:
                total -= amounts[oldest]
                oldest += 1
        if tpm is not None and total + request > tpm:
            while oldest < len(times) and total + request > tpm:
                ready = max(ready, times[oldest] + window)
                total -= amounts[oldest]
                oldest += 1
            blocker = "tpm"
        times.append(ready)
        amounts.append(request)
        total += request

    return ready, blocker


class _KeyState:
    """One key's sliding-window log, slots in use and queue of waiting requests."""

    __slots__ = ("log", "tokens", "in_flight", "waiters", "head_limit")

    def __init__(self) -> None:
        self.log: deque[Permit] = deque()
        self.tokens = 0  # sum of the tokens of the permits in `log`
        self.in_flight = 0
        self.waiters: deque[_Waiter] = deque()
        # What the head of `waiters` last waited for; names the limit when a
        # waiter behind it times out.
        self.head_limit: LimitName = "concurrency"


class MemoryRateLimiter(RateLimiter):
    """Limits within one process on the running event loop's clock.

    Checking and reserving run with no await between them, so one event loop
    needs no lock. The clock is ``loop.time()``, so a virtual-time loop (such
    as looptime's in tests) makes the windows virtual too.
    """

    def __init__(self) -> None:
        self._states: dict[str, _KeyState] = {}

    async def acquire(self, key: str, limits: Limits, tokens: int, *, max_wait_s: float) -> Permit:
        _check_request(key, limits, tokens, max_wait_s)
        now = asyncio.get_running_loop().time()
        if not limits.active:
            return Permit(key, tokens, now)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _KeyState()
        if not state.waiters:
            self._prune(state, limits.window_s, now)
            if self._fits(state, limits, tokens):
                return self._grant(state, key, limits, tokens, now)

        request = _Request(key, limits, tokens, now, max_wait_s)
        return await self._wait_in_queue(state, request)

    async def settle(self, permit: Permit, actual_tokens: int | None) -> None:
        if permit.settled:
            return
        if actual_tokens is not None and actual_tokens < 0:
            raise ValueError(f"actual_tokens must be zero or more, got {actual_tokens}")
        permit.settled = True
        state = self._states.get(permit.key)
        if state is None:
            return
        freed = False
        if permit.holds_slot:
            state.in_flight -= 1
            freed = True
        if actual_tokens is not None:
            if permit.in_window:
                state.tokens += actual_tokens - permit.tokens
                freed = freed or actual_tokens < permit.tokens
            permit.tokens = actual_tokens
        if freed:
            _wake_head(state.waiters)

    async def wait_s(self, key: str, limits: Limits, tokens: int) -> float:
        if limits.tpm is not None and tokens > limits.tpm:
            return math.inf
        state = self._states.get(key)
        if state is None or not limits.active:
            return 0.0
        now = asyncio.get_running_loop().time()
        self._prune(state, limits.window_s, now)
        if state.waiters:
            ahead = [waiter.tokens for waiter in state.waiters]
            ready, _ = self._ready_after(state, limits, [*ahead, tokens], now)
        else:
            ready, _ = self._ready_alone(state, limits, tokens, now)
        if ready > now:
            return ready - now
        if limits.max_concurrent is not None and state.in_flight >= limits.max_concurrent:
            return math.inf
        return 0.0

    async def aclose(self) -> None:
        self._states.clear()

    @staticmethod
    def _prune(state: _KeyState, window_s: float, now: float) -> None:
        log = state.log
        while log and log[0].granted_at + window_s <= now:
            permit = log.popleft()
            permit.in_window = False
            state.tokens -= permit.tokens

    @staticmethod
    def _fits(state: _KeyState, limits: Limits, tokens: int) -> bool:
        if limits.rpm is not None and len(state.log) >= limits.rpm:
            return False
        if limits.tpm is not None and state.tokens + tokens > limits.tpm:
            return False
        if limits.max_concurrent is not None and state.in_flight >= limits.max_concurrent:
            return False
        return True

    @staticmethod
    def _grant(state: _KeyState, key: str, limits: Limits, tokens: int, now: float) -> Permit:
        permit = Permit(key, tokens, now)
        if limits.rpm is not None or limits.tpm is not None:
            permit.in_window = True
            state.log.append(permit)
            state.tokens += tokens
        if limits.max_concurrent is not None:
            permit.holds_slot = True
            state.in_flight += 1
        return permit

    @staticmethod
    def _ready_alone(
        state: _KeyState, limits: Limits, tokens: int, now: float
    ) -> tuple[float, LimitName | None]:
        """Return when one request fits the rate limits with no queue, and what delays it.

        It returns the same result as `_ready_after` for one request without
        copying the log, because the head of a long queue calls it per grant.
        `state` must be pruned at `now`.
        """
        log = state.log
        window = limits.window_s
        ready = now
        blocker: LimitName | None = None
        if limits.rpm is not None and len(log) >= limits.rpm:
            ready = log[len(log) - limits.rpm].granted_at + window
            blocker = "rpm"
        if limits.tpm is not None and state.tokens + tokens > limits.tpm:
            excess = state.tokens + tokens - limits.tpm
            for permit in log:
                excess -= permit.tokens
                if excess <= 0:
                    break
            tpm_ready = permit.granted_at + window
            if tpm_ready > ready:
                ready, blocker = tpm_ready, "tpm"
        return ready, blocker

    @staticmethod
    def _ready_after(
        state: _KeyState, limits: Limits, requests: list[int], now: float
    ) -> tuple[float, LimitName | None]:
        times = [permit.granted_at for permit in state.log]
        amounts = [permit.tokens for permit in state.log]
        return _ready_after_queue(times, amounts, state.tokens, limits, requests, now)

    async def _wait_in_queue(self, state: _KeyState, request: _Request) -> Permit:
        limits, tokens, start = request.limits, request.tokens, request.start
        if state.waiters:
            ahead = [waiter.tokens for waiter in state.waiters]
            ready, blocker = self._ready_after(state, limits, [*ahead, tokens], start)
        else:
            ready, blocker = self._ready_alone(state, limits, tokens, start)
        if ready > request.deadline:
            # With no rate limit in the way, only the concurrency limit can block.
            raise request.too_long(blocker or "concurrency", ready - start)

        loop = asyncio.get_running_loop()
        me = _Waiter(tokens)
        state.waiters.append(me)
        try:
            while True:
                now = loop.time()
                wake_at = request.deadline
                if state.waiters[0] is me:
                    self._prune(state, limits.window_s, now)
                    ready, blocker = self._ready_alone(state, limits, tokens, now)
                    if ready > request.deadline:
                        raise request.too_long(blocker or state.head_limit, ready - start)
                    if ready > now:
                        # asyncio may run a timer up to its clock resolution early. A
                        # virtual clock such as looptime's then does not move, so a wake-up
                        # just before `ready` would loop forever. One microsecond later works.
                        wake_at = max(ready, now + 1e-6)
                        state.head_limit = blocker or "rpm"
                    elif self._fits(state, limits, tokens):
                        state.waiters.popleft()
                        _wake_head(state.waiters)
                        return self._grant(state, request.key, limits, tokens, now)
                    else:
                        state.head_limit = "concurrency"
                if now >= request.deadline:
                    raise self._timeout_error(state, me, request, now)
                await _sleep_until(me, wake_at)
        finally:
            if me in state.waiters:
                _leave_queue(state.waiters, me)

    def _timeout_error(
        self, state: _KeyState, me: _Waiter, request: _Request, now: float
    ) -> LimitWaitTooLong:
        ahead = itertools.takewhile(lambda waiter: waiter is not me, state.waiters)
        requests = [*(waiter.tokens for waiter in ahead), request.tokens]
        ready, blocker = self._ready_after(state, request.limits, requests, now)
        if ready > now and blocker is not None:
            return request.too_long(blocker, ready - request.start)
        return request.too_long(state.head_limit, math.inf)
