"""The in-process rate limiter on a virtual clock: rpm, tpm, concurrency, waits and fairness."""

from __future__ import annotations

import asyncio
import itertools
import math
import pickle
import random
from dataclasses import dataclass

import pytest

from trunkline.resilience.limiter import (
    LimitWaitTooLong,
    Limits,
    MemoryRateLimiter,
    Permit,
    build_limiter,
)
from trunkline.resilience.redis_limiter import RedisRateLimiter

pytestmark = pytest.mark.looptime


def now() -> float:
    return asyncio.get_running_loop().time()


@dataclass
class Grant:
    """One permit of the load test, with the order of its grant and settle among all events."""

    number: int
    granted_at: float
    grant_seq: int
    estimate: int
    settle_seq: int = -1
    actual: int = 0


def in_window(earlier: Grant, later: Grant, window_s: float) -> bool:
    """Whether `earlier` still counts when `later` is granted, by the limiter's own rule."""
    return earlier.grant_seq <= later.grant_seq and not (
        earlier.granted_at + window_s <= later.granted_at
    )


def counted_tokens(earlier: Grant, later: Grant) -> int:
    """Return the tokens `earlier` held when `later` was granted: its real count once settled."""
    if earlier is not later and 0 <= earlier.settle_seq < later.grant_seq:
        return earlier.actual
    return earlier.estimate


async def test_rpm_binds() -> None:
    limiter = MemoryRateLimiter()
    limits = Limits(rpm=3, window_s=10.0)
    start = now()

    first = [await limiter.acquire("a", limits, 1, max_wait_s=30) for _ in range(3)]
    fourth = await limiter.acquire("a", limits, 1, max_wait_s=30)

    assert [p.granted_at for p in first] == [start] * 3
    assert fourth.granted_at == start + 10.0


async def test_tpm_binds() -> None:
    limiter = MemoryRateLimiter()
    limits = Limits(tpm=100, window_s=10.0)
    start = now()

    await limiter.acquire("a", limits, 60, max_wait_s=30)
    await asyncio.sleep(4)
    await limiter.acquire("a", limits, 30, max_wait_s=30)
    third = await limiter.acquire("a", limits, 50, max_wait_s=30)

    # The first grant's 60 tokens must leave the window before 50 more fit.
    assert third.granted_at == start + 10.0


async def test_concurrency_binds_in_fifo_order() -> None:
    limiter = MemoryRateLimiter()
    limits = Limits(max_concurrent=2)
    slot_permits = [await limiter.acquire("a", limits, 1, max_wait_s=0) for _ in range(2)]
    order: list[int] = []

    async def wait_for_slot(number: int) -> Permit:
        permit = await limiter.acquire("a", limits, 1, max_wait_s=60)
        order.append(number)
        return permit

    waiting = [asyncio.create_task(wait_for_slot(n)) for n in range(4)]
    await asyncio.sleep(1)
    assert order == []

    await limiter.settle(slot_permits[0], None)
    await asyncio.sleep(1)
    assert order == [0]

    await limiter.settle(slot_permits[1], None)
    await asyncio.sleep(1)
    assert order == [0, 1]

    for task in waiting[:2]:
        await limiter.settle(task.result(), None)
    await asyncio.gather(*waiting)
    assert order == [0, 1, 2, 3]


async def test_settle_down_frees_tokens() -> None:
    limiter = MemoryRateLimiter()
    limits = Limits(tpm=100)
    start = now()
    permit = await limiter.acquire("a", limits, 80, max_wait_s=0)

    await limiter.settle(permit, 20)
    second = await limiter.acquire("a", limits, 80, max_wait_s=0)

    assert permit.tokens == 20
    assert second.granted_at == start


async def test_settle_up_charges_more() -> None:
    limiter = MemoryRateLimiter()
    limits = Limits(tpm=100, window_s=10.0)
    start = now()
    permit = await limiter.acquire("a", limits, 20, max_wait_s=0)

    await limiter.settle(permit, 90)

    assert await limiter.wait_s("a", limits, 20) == 10.0
    second = await limiter.acquire("a", limits, 20, max_wait_s=30)
    assert second.granted_at == start + 10.0


async def test_settle_is_idempotent() -> None:
    limiter = MemoryRateLimiter()
    limits = Limits(tpm=100, max_concurrent=1)
    permit = await limiter.acquire("a", limits, 50, max_wait_s=0)

    await limiter.settle(permit, 10)
    await limiter.settle(permit, 10)
    await limiter.settle(permit, None)
    second = await limiter.acquire("a", limits, 50, max_wait_s=0)

    assert permit.tokens == 10
    with pytest.raises(LimitWaitTooLong) as caught:
        await limiter.acquire("a", limits, 1, max_wait_s=0)
    assert caught.value.limit == "concurrency"
    await limiter.settle(second, None)


@pytest.mark.parametrize(
    ("limits", "tokens", "limit_name", "limit_value"),
    [
        (Limits(rpm=1, window_s=60.0), 1, "rpm", 1),
        (Limits(tpm=100, window_s=60.0), 100, "tpm", 100),
    ],
)
async def test_too_long_wait_raises_at_once(limits, tokens, limit_name, limit_value) -> None:
    limiter = MemoryRateLimiter()
    await limiter.acquire("a", limits, tokens, max_wait_s=0)
    await asyncio.sleep(15)
    start = now()

    with pytest.raises(LimitWaitTooLong) as caught:
        await limiter.acquire("a", limits, tokens, max_wait_s=30)

    error = caught.value
    assert now() == start
    assert error.key == "a"
    assert error.limit == limit_name
    assert error.limit_value == limit_value
    assert error.wait_s == 45.0
    assert f"{limit_name} limit of {limit_value}" in str(error)
    assert "limit_wait_max_s" in str(error)


async def test_concurrency_wait_honours_max_wait() -> None:
    limiter = MemoryRateLimiter()
    limits = Limits(max_concurrent=1)
    await limiter.acquire("a", limits, 1, max_wait_s=0)
    start = now()

    with pytest.raises(LimitWaitTooLong) as caught:
        await limiter.acquire("a", limits, 1, max_wait_s=5)

    assert now() == start + 5
    assert caught.value.limit == "concurrency"
    assert caught.value.wait_s == math.inf
    assert "max_concurrent" in str(caught.value)


async def test_tokens_over_tpm_raise_at_once() -> None:
    limiter = MemoryRateLimiter()
    limits = Limits(tpm=1000)
    start = now()

    with pytest.raises(LimitWaitTooLong) as caught:
        await limiter.acquire("a", limits, 1001, max_wait_s=3600)

    assert now() == start
    assert caught.value.limit == "tpm"
    assert caught.value.wait_s == math.inf
    assert "can never be sent" in str(caught.value)
    assert await limiter.wait_s("a", limits, 1001) == math.inf


async def test_wait_s_counts_requests_ahead() -> None:
    limiter = MemoryRateLimiter()
    limits = Limits(rpm=2, window_s=10.0)
    assert await limiter.wait_s("a", limits, 1) == 0.0

    await limiter.acquire("a", limits, 1, max_wait_s=0)
    await limiter.acquire("a", limits, 1, max_wait_s=0)
    assert await limiter.wait_s("a", limits, 1) == 10.0

    queued = [asyncio.create_task(limiter.acquire("a", limits, 1, max_wait_s=60)) for _ in range(3)]
    await asyncio.sleep(0)
    # Two queued requests take the window from t=10, so the next fits at t=20.
    assert await limiter.wait_s("a", limits, 1) == 20.0
    await asyncio.gather(*queued)


async def test_wait_s_infinite_when_slots_taken() -> None:
    limiter = MemoryRateLimiter()
    limits = Limits(max_concurrent=1)
    permit = await limiter.acquire("a", limits, 1, max_wait_s=0)

    assert await limiter.wait_s("a", limits, 1) == math.inf
    await limiter.settle(permit, None)
    assert await limiter.wait_s("a", limits, 1) == 0.0


async def test_large_request_is_not_starved() -> None:
    limiter = MemoryRateLimiter()
    limits = Limits(tpm=100, window_s=10.0)
    await limiter.acquire("a", limits, 90, max_wait_s=0)
    order: list[str] = []

    async def request(name: str, tokens: int) -> None:
        await limiter.acquire("a", limits, tokens, max_wait_s=60)
        order.append(name)

    tasks = [asyncio.create_task(request("large", 100))]
    await asyncio.sleep(0)
    # Five tokens would fit now, but the large request queued first.
    tasks += [asyncio.create_task(request(f"small{n}", 5)) for n in range(2)]
    await asyncio.gather(*tasks)

    assert order == ["large", "small0", "small1"]


async def test_cancelled_waiter_leaves_the_queue() -> None:
    limiter = MemoryRateLimiter()
    limits = Limits(max_concurrent=1)
    slot_permit = await limiter.acquire("a", limits, 1, max_wait_s=0)
    first = asyncio.create_task(limiter.acquire("a", limits, 1, max_wait_s=60))
    second = asyncio.create_task(limiter.acquire("a", limits, 1, max_wait_s=60))
    await asyncio.sleep(1)

    first.cancel()
    await asyncio.sleep(1)
    await limiter.settle(slot_permit, None)
    permit = await second

    assert first.cancelled()
    assert permit.holds_slot


async def test_inactive_limits_grant_at_once() -> None:
    limiter = MemoryRateLimiter()
    permits = [await limiter.acquire("a", Limits(), 10**9, max_wait_s=0) for _ in range(100)]

    assert len(permits) == 100
    assert not Limits().active
    assert Limits(rpm=1).active


def test_limits_reject_invalid_values() -> None:
    with pytest.raises(ValueError, match="rpm"):
        Limits(rpm=0)
    with pytest.raises(ValueError, match="window_s"):
        Limits(rpm=1, window_s=0)


def test_limit_error_survives_pickling() -> None:
    error = LimitWaitTooLong("gpt", "rpm", 20, 12.5, 10.0, 300, 60.0)

    copy = pickle.loads(pickle.dumps(error))

    assert (copy.key, copy.limit, copy.limit_value, copy.wait_s) == ("gpt", "rpm", 20, 12.5)
    assert str(copy) == str(error)


async def test_build_limiter_picks_backend() -> None:
    memory = build_limiter(None)
    shared = build_limiter("redis://127.0.0.1:1/0")

    assert isinstance(memory, MemoryRateLimiter)
    assert isinstance(shared, RedisRateLimiter)
    await memory.aclose()
    await shared.aclose()


async def test_many_tasks_never_exceed_any_window() -> None:
    limiter = MemoryRateLimiter()
    limits = Limits(rpm=20, tpm=2000, max_concurrent=8, window_s=60.0)
    rng = random.Random(7)
    estimates = [rng.randint(10, 200) for _ in range(200)]
    sequence = itertools.count()
    grants: list[Grant] = []
    in_flight = peak = 0

    async def call(number: int) -> None:
        nonlocal in_flight, peak
        permit = await limiter.acquire("a", limits, estimates[number], max_wait_s=3600)
        grant = Grant(number, permit.granted_at, next(sequence), estimates[number])
        grants.append(grant)
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(rng.uniform(0, 30))
        # Real counts fall on both sides of the estimate.
        grant.actual = rng.randint(0, estimates[number] * 5 // 4)
        grant.settle_seq = next(sequence)
        in_flight -= 1
        await limiter.settle(permit, grant.actual)

    await asyncio.gather(*(call(n) for n in range(200)))

    assert len(grants) == 200
    assert [grant.number for grant in grants] == list(range(200))
    assert peak <= 8
    for later in grants:
        window = [earlier for earlier in grants if in_window(earlier, later, limits.window_s)]
        assert len(window) <= 20, f"{len(window)} requests in the window ending at {later}"
        tokens = sum(counted_tokens(earlier, later) for earlier in window)
        assert tokens <= 2000, f"{tokens} tokens in the window ending at {later}"
    # 200 requests at 20 per window need at least ten windows.
    assert max(g.granted_at for g in grants) >= 9 * 60.0
