"""Limits and budgets shared through a real redis-server by several limiters, ledgers and processes.

The rate-limit tests use windows of one second on the wall clock, because
processes share windows through ``time.time()``, so the file takes a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from trunkline.errors import BudgetExceeded
from trunkline.resilience.budget import RedisBudgetLedger, to_micros
from trunkline.resilience.limiter import LimitWaitTooLong, Limits
from trunkline.resilience.redis_limiter import RedisRateLimiter

# One process of the shared-limit test: connect, print "ready", wait for a
# line on stdin so both processes start together, then take COUNT permits one
# after another and print their grant times as JSON.
CHILD_SCRIPT = """
import asyncio, json, sys
from trunkline.resilience.limiter import Limits
from trunkline.resilience.redis_limiter import RedisRateLimiter

async def main(url, prefix, count, rpm):
    limiter = RedisRateLimiter(url, prefix=prefix)
    limits = Limits(rpm=rpm, window_s=1.0)
    await limiter.wait_s("shared", limits, 1)
    print("ready", flush=True)
    sys.stdin.readline()
    grants = []
    for _ in range(count):
        permit = await limiter.acquire("shared", limits, 1, max_wait_s=10)
        grants.append(permit.granted_at)
        await limiter.settle(permit, 1)
    await limiter.aclose()
    print(json.dumps(grants), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


def max_in_any_window(grant_times: list[float], window_s: float) -> int:
    """Return the most grants that any window of `window_s` holds.

    A grant stays in the window while its time is above ``now - window_s``,
    the rule of the reserve script, and some window ending at a grant is
    always the fullest.
    """
    return max(
        sum(1 for start in grant_times if end - window_s < start <= end) for end in grant_times
    )


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_two_limiters_share_one_rpm(redis_url: str, key_prefix: str) -> None:
    limiters = [RedisRateLimiter(redis_url, prefix=key_prefix) for _ in range(2)]
    limits = Limits(rpm=10, window_s=1.0)

    async def take(limiter: RedisRateLimiter) -> float:
        permit = await limiter.acquire("shared", limits, 1, max_wait_s=10)
        await limiter.settle(permit, 1)
        return permit.granted_at

    grant_times = await asyncio.gather(*(take(limiters[n % 2]) for n in range(24)))
    for limiter in limiters:
        await limiter.aclose()

    assert len(grant_times) == 24
    assert max_in_any_window(list(grant_times), 1.0) <= 10
    # 24 grants at 10 per window need at least three windows.
    assert max(grant_times) - min(grant_times) >= 2.0


def test_two_processes_share_one_rpm(redis_url: str, key_prefix: str) -> None:
    count, rpm = 10, 8
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD_SCRIPT, redis_url, key_prefix, str(count), str(rpm)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=20) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=5)

    grant_times: list[float] = []
    for child, (stdout, stderr) in zip(children, outputs, strict=True):
        assert child.returncode == 0, stderr
        grant_times += json.loads(stdout)
    assert len(grant_times) == 2 * count
    assert max_in_any_window(grant_times, 1.0) <= rpm


async def test_settle_adjusts_shared_tokens(
    redis_url: str, key_prefix: str, raw_redis: redis.asyncio.Redis
) -> None:
    limiter = RedisRateLimiter(redis_url, prefix=key_prefix)
    other = RedisRateLimiter(redis_url, prefix=key_prefix)
    limits = Limits(tpm=100, window_s=60.0)
    _, amounts_key, _ = limiter.redis_keys("gpt")

    permit = await limiter.acquire("gpt", limits, 80, max_wait_s=0)
    assert await raw_redis.hget(amounts_key, "total") == "80"
    assert await other.wait_s("gpt", limits, 30) > 0

    await limiter.settle(permit, 30)
    await limiter.settle(permit, 30)
    assert await raw_redis.hget(amounts_key, "total") == "30"
    assert await other.wait_s("gpt", limits, 70) == 0.0

    second = await other.acquire("gpt", limits, 70, max_wait_s=0)
    await other.settle(second, 90)
    assert await raw_redis.hget(amounts_key, "total") == "120"
    for shared in (limiter, other):
        await shared.aclose()


async def test_too_long_wait_raises(redis_url: str, key_prefix: str) -> None:
    limiter = RedisRateLimiter(redis_url, prefix=key_prefix)
    limits = Limits(rpm=1, tpm=50, window_s=60.0)
    await limiter.acquire("gpt", limits, 10, max_wait_s=0)

    with pytest.raises(LimitWaitTooLong) as by_rpm:
        await limiter.acquire("gpt", limits, 10, max_wait_s=1)
    with pytest.raises(LimitWaitTooLong) as over_tpm:
        await limiter.acquire("gpt", limits, 51, max_wait_s=1)
    await limiter.aclose()

    assert by_rpm.value.limit == "rpm"
    assert 59.0 < by_rpm.value.wait_s <= 60.0
    assert over_tpm.value.limit == "tpm"
    assert over_tpm.value.wait_s == math.inf


async def test_concurrency_slot_is_shared(redis_url: str, key_prefix: str) -> None:
    holder = RedisRateLimiter(redis_url, prefix=key_prefix)
    waiter = RedisRateLimiter(redis_url, prefix=key_prefix, poll_s=0.01)
    limits = Limits(max_concurrent=1)
    holder_permit = await holder.acquire("gpt", limits, 1, max_wait_s=0)

    with pytest.raises(LimitWaitTooLong) as caught:
        await waiter.acquire("gpt", limits, 1, max_wait_s=0)
    assert caught.value.limit == "concurrency"

    pending = asyncio.create_task(waiter.acquire("gpt", limits, 1, max_wait_s=10))
    await holder.settle(holder_permit, None)
    permit = await pending
    assert permit.holds_slot
    await waiter.settle(permit, None)
    for shared in (holder, waiter):
        await shared.aclose()


async def test_slot_of_dead_process_frees_itself(redis_url: str, key_prefix: str) -> None:
    clock = [1_800_000_000.0]
    crashed, survivor = (
        RedisRateLimiter(redis_url, prefix=key_prefix, slot_lease_s=30.0, clock=lambda: clock[0])
        for _ in range(2)
    )
    limits = Limits(max_concurrent=1)

    await crashed.acquire("gpt", limits, 1, max_wait_s=0)
    await crashed.aclose()  # never settles, as a process that died mid-call
    with pytest.raises(LimitWaitTooLong):
        await survivor.acquire("gpt", limits, 1, max_wait_s=0)

    clock[0] += 30.0
    permit = await survivor.acquire("gpt", limits, 1, max_wait_s=0)
    assert permit.holds_slot
    await survivor.aclose()


async def test_cancelled_acquire_releases_its_slot(
    redis_url: str, key_prefix: str, raw_redis: redis.asyncio.Redis
) -> None:
    limiter = RedisRateLimiter(redis_url, prefix=key_prefix)
    limits = Limits(max_concurrent=1)
    _, _, slots_key = limiter.redis_keys("gpt")

    # The task is cancelled while its reserve script is in flight.
    task = asyncio.create_task(limiter.acquire("gpt", limits, 1, max_wait_s=0))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await limiter.aclose()  # waits for the release of the orphaned reservation

    assert await raw_redis.zcard(slots_key) == 0


async def test_limiter_keys_expire(
    redis_url: str, key_prefix: str, raw_redis: redis.asyncio.Redis
) -> None:
    limiter = RedisRateLimiter(redis_url, prefix=key_prefix, slot_lease_s=30.0)
    limits = Limits(rpm=5, tpm=100, max_concurrent=2, window_s=2.0)
    log_key, amounts_key, slots_key = limiter.redis_keys("gpt")

    permit = await limiter.acquire("gpt", limits, 10, max_wait_s=0)
    log_ttl = await raw_redis.pttl(log_key)
    amounts_ttl = await raw_redis.pttl(amounts_key)
    slots_ttl = await raw_redis.pttl(slots_key)
    await limiter.settle(permit, 5)
    await limiter.aclose()

    assert 0 < log_ttl <= 3000
    assert 0 < amounts_ttl <= 3000
    assert 0 < slots_ttl <= 31000
    assert log_key.startswith(key_prefix)


async def test_shared_budget_never_overshoots(redis_url: str, key_prefix: str) -> None:
    ledgers = [RedisBudgetLedger(redis_url, prefix=key_prefix) for _ in range(2)]
    limits = {"run:r1": 1.0, "tag:team=search": 2.0}
    rng = random.Random(5)
    amounts = [round(rng.uniform(0.01, 0.1), 6) for _ in range(60)]
    granted: list[float] = []

    async def call(ledger: RedisBudgetLedger, amount: float) -> None:
        try:
            reservation = await ledger.reserve(limits, amount)
        except BudgetExceeded as error:
            assert error.scope == "run:r1"
            return
        granted.append(amount)
        await ledger.settle(reservation, amount)

    await asyncio.gather(*(call(ledgers[n % 2], amount) for n, amount in enumerate(amounts)))
    spent = [await ledger.spent("run:r1") for ledger in ledgers]
    for ledger in ledgers:
        await ledger.aclose()

    granted_micros = sum(to_micros(amount) for amount in granted)
    assert len(granted) < len(amounts)
    assert granted_micros <= to_micros(1.0)
    assert spent == [granted_micros / 1_000_000] * 2


async def test_shared_budget_settle_adjusts(
    redis_url: str, key_prefix: str, raw_redis: redis.asyncio.Redis
) -> None:
    ledger = RedisBudgetLedger(redis_url, prefix=key_prefix, ttl_s=3600)
    other = RedisBudgetLedger(redis_url, prefix=key_prefix, ttl_s=3600)
    limits = {"run:r1": 1.0}

    reservation = await ledger.reserve(limits, 0.5)
    assert await other.spent("run:r1") == 0.5
    assert await raw_redis.ttl(ledger.reservation_key(reservation.id)) > 0

    await ledger.settle(reservation, 0.7)
    await other.settle(reservation, 0.1)
    assert await other.spent("run:r1") == 0.7
    assert await other.remaining("run:r1", 1.0) == pytest.approx(0.3)
    assert await raw_redis.exists(ledger.reservation_key(reservation.id)) == 0

    await other.charge(limits, 0.25)
    assert await ledger.spent("run:r1") == 0.95
    scope_ttl = await raw_redis.ttl(ledger.scope_key("run:r1"))
    assert 0 < scope_ttl <= 3600
    for shared in (ledger, other):
        await shared.aclose()
