"""`RedisRateLimiter`: the limits of `trunkline.resilience.limiter` kept in Redis.

Every process that uses the same Redis shares one set of windows per
deployment key. One Lua script checks and reserves rpm, tpm and a
concurrency slot together; slots are leases, so a crashed process's slots
free themselves.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from trunkline.ids import random_hex
from trunkline.resilience.limiter import (
    LimitName,
    Limits,
    Permit,
    RateLimiter,
    _check_request,
    _leave_queue,
    _sleep_until,
    _Request,
    _Waiter,
    _wake_head,
)

logger = logging.getLogger(__name__)


# Reserve a request against rpm, tpm and concurrency in one step, or report
# the wait. KEYS: log (sorted set of reservation ids scored by grant time),
# amounts (hash of id -> tokens, plus the field "total"), slots (sorted set of
# ids scored by lease end). ARGV: now, cutoff (now - window), window, rpm,
# tpm, max_concurrent (0 = no limit), tokens, id, reserve ("1", or "0" to only
# check), lease end, log expiry ms, slots expiry ms. Returns {1, "", "0"} when
# it fits, else {0, limit, wait in seconds or "-1" when unknown}.
_RESERVE_SCRIPT = """
local log, amounts, slots = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[3])
local rpm, tpm = tonumber(ARGV[4]), tonumber(ARGV[5])
local max_concurrent, tokens = tonumber(ARGV[6]), tonumber(ARGV[7])

local expired = redis.call('ZRANGEBYSCORE', log, '-inf', ARGV[2])
if #expired > 0 then
  local freed = 0
  -- unpack() is limited by the Lua stack, so expired ids go in batches.
  for first = 1, #expired, 500 do
    local batch = {unpack(expired, first, math.min(first + 499, #expired))}
    local values = redis.call('HMGET', amounts, unpack(batch))
    for i = 1, #values do
      freed = freed + (tonumber(values[i]) or 0)
    end
    redis.call('HDEL', amounts, unpack(batch))
  end
  redis.call('ZREMRANGEBYSCORE', log, '-inf', ARGV[2])
  redis.call('HINCRBY', amounts, 'total', -freed)
end

local wait, limit = 0, ''
if rpm > 0 then
  local count = redis.call('ZCARD', log)
  if count >= rpm then
    local entry = redis.call('ZRANGE', log, count - rpm, count - rpm, 'WITHSCORES')
    wait, limit = tonumber(entry[2]) + window - now, 'rpm'
  end
end
if tpm > 0 then
  local excess = tonumber(redis.call('HGET', amounts, 'total') or '0') + tokens - tpm
  if excess > 0 then
    local tpm_wait = window
    local entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      excess = excess - (tonumber(redis.call('HGET', amounts, entries[i])) or 0)
      if excess <= 0 then
        tpm_wait = tonumber(entries[i + 1]) + window - now
        break
      end
    end
    if tpm_wait > wait then
      wait, limit = tpm_wait, 'tpm'
    end
  end
end
if wait > 0 then
  return {0, limit, tostring(wait)}
end

if max_concurrent > 0 then
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', ARGV[1])
  if redis.call('ZCARD', slots) >= max_concurrent then
    return {0, 'concurrency', '-1'}
  end
end
if ARGV[9] ~= '1' then
  return {1, '', '0'}
end

if rpm > 0 or tpm > 0 then
  redis.call('ZADD', log, ARGV[1], ARGV[8])
  redis.call('HSET', amounts, ARGV[8], ARGV[7])
  redis.call('HINCRBY', amounts, 'total', tokens)
  redis.call('PEXPIRE', log, ARGV[11])
  redis.call('PEXPIRE', amounts, ARGV[11])
end
if max_concurrent > 0 then
  redis.call('ZADD', slots, ARGV[10], ARGV[8])
  redis.call('PEXPIRE', slots, ARGV[12])
end
return {1, '', '0'}
"""

# Release a reservation's slot and swap its token estimate for the real count.
# KEYS as above. ARGV: id, actual tokens ("" keeps the estimate). Running it
# twice changes nothing more, and a reservation that left the window is skipped.
_SETTLE_SCRIPT = """
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[2] ~= '' then
  local reserved = redis.call('HGET', KEYS[2], ARGV[1])
  if reserved then
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
    redis.call('HINCRBY', KEYS[2], 'total', tonumber(ARGV[2]) - tonumber(reserved))
  end
end
return 1
"""


@dataclass(frozen=True)
class _Verdict:
    """The reserve script's result."""

    granted: bool
    limit: LimitName | None
    wait_s: float  # math.inf when a concurrency slot must free first
    at: float  # the clock time the script checked at


class RedisRateLimiter(RateLimiter):
    """Limits shared by every process that uses the same Redis server and prefix.

    The clock is ``time.time()`` of each process, because the processes share
    the windows. A concurrency slot is a lease that ends `slot_lease_s` after
    the grant, so the slots of a process that dies free themselves.

    Redis Cluster needs a script's keys in one hash slot. The keys of one
    deployment are ``PREFIX{KEY}:log``, ``:amounts`` and ``:slots``, so the
    ``{KEY}`` hash tag keeps them together.

    NOTE: processes on different hosts share windows only as well as their
    clocks agree; a skew of s seconds shifts their windows by s.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "trunkline:limits:",
        slot_lease_s: float = 900.0,
        poll_s: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Connect lazily to the Redis server at `url`.

        Args:
            url: a ``redis://`` or ``rediss://`` URL.
            prefix: the start of every key this limiter writes.
            slot_lease_s: seconds after its grant that a concurrency slot frees
                itself if it is not settled. A call that runs longer loses its
                slot to another request, so keep it above the longest call.
            poll_s: seconds between checks while every concurrency slot is
                taken, since releases by other processes send no notice.
            clock: the shared clock in Unix seconds; tests may pass a fake one.
        """
        import redis.asyncio  # imported lazily: in-process limiters skip its import time

        self._redis = redis.asyncio.Redis.from_url(url, decode_responses=True)
        self._reserve = self._redis.register_script(_RESERVE_SCRIPT)
        self._settle = self._redis.register_script(_SETTLE_SCRIPT)
        self._prefix = prefix
        self._slot_lease_s = slot_lease_s
        self._poll_s = poll_s
        self._clock = clock
        self._queues: dict[str, deque[_Waiter]] = {}
        self._head_limits: dict[str, LimitName] = {}
        # Releases of reservations whose callers were cancelled; aclose awaits them.
        self._background: set[asyncio.Future[None]] = set()

    def redis_keys(self, key: str) -> list[str]:
        """Return the Redis keys of deployment `key`: log, amounts and slots."""
        base = f"{self._prefix}{{{key}}}"
        return [f"{base}:log", f"{base}:amounts", f"{base}:slots"]

    async def acquire(self, key: str, limits: Limits, tokens: int, *, max_wait_s: float) -> Permit:
        _check_request(key, limits, tokens, max_wait_s)
        if not limits.active:
            return Permit(key, tokens, self._clock())
        request = _Request(key, limits, tokens, asyncio.get_running_loop().time(), max_wait_s)
        waiters = self._queues.setdefault(key, deque())
        if waiters:
            # Requests of this process are ahead, so check that this one could
            # fit in time at all before queueing behind them.
            verdict = await self._run_reserve(key, limits, tokens, "", reserve=False)
            if verdict.limit in ("rpm", "tpm") and verdict.wait_s > max_wait_s:
                raise request.too_long(verdict.limit, verdict.wait_s)

        return await self._wait_in_queue(waiters, request)

    async def settle(self, permit: Permit, actual_tokens: int | None) -> None:
        if permit.settled:
            return
        if actual_tokens is not None and actual_tokens < 0:
            raise ValueError(f"actual_tokens must be zero or more, got {actual_tokens}")
        if not permit.id:  # granted with no limit set, so Redis has nothing to release
            permit.settled = True
            return
        actual = "" if actual_tokens is None else str(actual_tokens)
        await self._settle(keys=self.redis_keys(permit.key), args=[permit.id, actual])
        permit.settled = True
        if actual_tokens is not None:
            permit.tokens = actual_tokens
        waiters = self._queues.get(permit.key)
        if waiters:
            _wake_head(waiters)

    async def wait_s(self, key: str, limits: Limits, tokens: int) -> float:
        """Estimate the wait from the shared windows alone, without this process's queue."""
        if limits.tpm is not None and tokens > limits.tpm:
            return math.inf
        if not limits.active:
            return 0.0
        verdict = await self._run_reserve(key, limits, tokens, "", reserve=False)
        return 0.0 if verdict.granted else verdict.wait_s

    async def aclose(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._redis.aclose()

    async def _wait_in_queue(self, waiters: deque[_Waiter], request: _Request) -> Permit:
        key, limits, tokens = request.key, request.limits, request.tokens
        loop = asyncio.get_running_loop()
        me = _Waiter(tokens)
        waiters.append(me)
        try:
            while True:
                wake_at = request.deadline
                if waiters[0] is me:
                    permit_id = random_hex()
                    verdict = await self._reserve_or_release(key, limits, tokens, permit_id)
                    if verdict.granted:
                        waiters.popleft()
                        _wake_head(waiters)
                        holds_slot = limits.max_concurrent is not None
                        return Permit(key, tokens, verdict.at, id=permit_id, holds_slot=holds_slot)
                    now = loop.time()
                    limit = verdict.limit or "rpm"
                    self._head_limits[key] = limit
                    if limit == "concurrency":
                        wake_at = min(now + self._poll_s, request.deadline)
                    elif now + verdict.wait_s > request.deadline:
                        raise request.too_long(limit, now - request.start + verdict.wait_s)
                    else:
                        wake_at = now + verdict.wait_s
                if loop.time() >= request.deadline:
                    limit = self._head_limits.get(key, "concurrency")
                    raise request.too_long(limit, math.inf)
                await _sleep_until(me, wake_at)
        finally:
            if me in waiters:
                _leave_queue(waiters, me)

    async def _reserve_or_release(
        self, key: str, limits: Limits, tokens: int, permit_id: str
    ) -> _Verdict:
        """Run the reserve script, and release its reservation if the caller is cancelled."""
        reserve = self._run_reserve(key, limits, tokens, permit_id, reserve=True)
        call = asyncio.ensure_future(reserve)
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            release = asyncio.ensure_future(self._release_if_granted(key, permit_id, call))
            self._background.add(release)
            release.add_done_callback(self._background.discard)
            raise

    async def _release_if_granted(
        self, key: str, permit_id: str, call: asyncio.Future[_Verdict]
    ) -> None:
        """Settle a reservation whose caller was cancelled before it got the permit."""
        try:
            verdict = await call
        except Exception:  # noqa: BLE001 - nobody waits for this call's outcome any more
            logger.warning(
                "the reserve call of cancelled request %s on %r failed; if Redis reserved a "
                "slot for it anyway, the slot's lease frees it after %.0f s",
                permit_id,
                key,
                self._slot_lease_s,
                exc_info=True,
            )
            return
        if not verdict.granted:
            return
        orphan = Permit(key, 0, verdict.at, id=permit_id, holds_slot=True)
        try:
            await self.settle(orphan, None)
        except Exception:  # noqa: BLE001 - the slot's lease frees it in the end
            logger.warning(
                "could not release the concurrency slot of cancelled request %s on %r; "
                "its lease frees it after %.0f s",
                permit_id,
                key,
                self._slot_lease_s,
                exc_info=True,
            )

    async def _run_reserve(
        self, key: str, limits: Limits, tokens: int, permit_id: str, *, reserve: bool
    ) -> _Verdict:
        now = self._clock()
        window = limits.window_s
        args = [
            repr(now),
            repr(now - window),
            repr(window),
            limits.rpm or 0,
            limits.tpm or 0,
            limits.max_concurrent or 0,
            tokens,
            permit_id,
            "1" if reserve else "0",
            repr(now + self._slot_lease_s),
            # A second of margin keeps keys alive across small clock skews.
            math.ceil(window * 1000) + 1000,
            math.ceil(self._slot_lease_s * 1000) + 1000,
        ]
        granted, limit, wait = await self._reserve(keys=self.redis_keys(key), args=args)
        if int(granted):
            return _Verdict(True, None, 0.0, now)
        if limit == "concurrency":
            return _Verdict(False, "concurrency", math.inf, now)
        return _Verdict(False, limit, float(wait), now)

