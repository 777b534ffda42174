"""Spending limits in US dollars, checked before a call is sent and settled after it.

A call reserves its worst-case cost under every budget scope it falls under,
such as ``run:ID``, ``session:ID`` or ``tag:team=search``, and settles the
reservation with its real cost when it ends. A scope's spend is what was
settled plus what is still reserved, so calls in flight at the same time
cannot together cross a limit.

Ledgers keep amounts as integers in micro-dollars (millionths of a dollar),
so sums of many small costs do not drift as float sums would. Every amount is
rounded to the nearest micro-dollar on the way in.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from trunkline.errors import BudgetExceeded
from trunkline.ids import random_hex

MICROS_PER_USD = 1_000_000


@dataclass
class Reservation:
    """A worst-case cost reserved under one or more budgets until it is settled.

    Attributes:
        scopes: the budgets it was checked against: scope name to limit in USD.
        amount_usd: the cost reserved under each of those scopes.
        id: unique id; a ledger settles each id once.
    """

    scopes: dict[str, float]
    amount_usd: float
    id: str = field(default_factory=random_hex)


class BudgetLedger(abc.ABC):
    """Tracks spending per budget scope and reserves worst-case costs against limits."""

    @abc.abstractmethod
    async def reserve(self, limits: Mapping[str, float], amount_usd: float) -> Reservation:
        """Reserve `amount_usd` under every scope of `limits` if all of them have room.

        `limits` maps a scope name to its limit in USD. A scope has room when
        its spend plus `amount_usd` stays at or below its limit. The check and
        the reservation are one atomic step, and when any scope lacks room
        nothing is reserved.

        Raises:
            BudgetExceeded: the first scope, in the order of `limits`, that lacks room.
            ValueError: an amount or limit is negative or not finite.
        """

    @abc.abstractmethod
    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Replace the reservation by the call's real cost under each of its scopes.

        A cost above the reservation is charged in full, even when it crosses
        a limit, because the money is already spent. A second call does nothing.
        """

    @abc.abstractmethod
    async def charge(
        self, limits_or_scopes: Mapping[str, float] | Iterable[str] | str, amount_usd: float
    ) -> None:
        """Add a cost known only after the fact to each scope, without checking limits.

        A mapping's keys are the scopes, so the `limits` given to `reserve` work too.
        """

    @abc.abstractmethod
    async def spent(self, scope: str) -> float:
        """Return the USD settled plus still reserved under `scope`."""

    async def remaining(self, scope: str, limit_usd: float) -> float:
        """Return the USD left under `scope` before `limit_usd`, or 0.0 once it is crossed."""
        return max(0.0, limit_usd - await self.spent(scope))

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the ledger's connections."""


def build_ledger(redis_url: str | None) -> BudgetLedger:
    """Return a Redis-backed ledger when a URL is given, else an in-process one."""
    if redis_url:
        return RedisBudgetLedger(redis_url)
    return MemoryBudgetLedger()


def to_micros(amount_usd: float, name: str = "amount_usd") -> int:
    """Convert USD to whole micro-dollars, rejecting negative and non-finite amounts."""
    if not (math.isfinite(amount_usd) and amount_usd >= 0):
        raise ValueError(f"{name} must be a finite amount of zero or more USD, got {amount_usd!r}")
    return round(amount_usd * MICROS_PER_USD)


def _scope_names(limits_or_scopes: Mapping[str, float] | Iterable[str] | str) -> list[str]:
    if isinstance(limits_or_scopes, str):
        return [limits_or_scopes]
    return list(limits_or_scopes)


def _format_usd(amount_usd: float) -> str:
    """Format with cents and up to six decimals, so small costs are not shown as $0.00."""
    digits = f"{amount_usd:.6f}".rstrip("0")
    whole, _, fraction = digits.partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"


def _remedy(scope: str) -> str:
    setting = {
        "run": "budgets.run_usd (or the run's own budget)",
        "session": "budgets.session_usd (or the session's own budget)",
    }.get(scope.partition(":")[0])
    if scope.startswith("tag:"):
        setting = f'budgets.tags."{scope.removeprefix("tag:")}"'
    if setting is None:
        setting = "that budget's limit"
    return f"raise {setting}, or lower max_tokens so that a call's worst case is smaller"


def budget_exceeded(
    scope: str, limit_micros: int, spent_micros: int, needed_micros: int
) -> BudgetExceeded:
    """Build the error for a call that would take `scope` past its limit."""
    limit, spent, needed = (m / MICROS_PER_USD for m in (limit_micros, spent_micros, needed_micros))
    return BudgetExceeded(
        f"the call was not sent because budget {scope} of {_format_usd(limit)} would be "
        f"crossed: {_format_usd(spent)} is already spent or reserved under it, and this call "
        f"may cost up to {_format_usd(needed)}; {_remedy(scope)}",
        scope=scope,
        limit_usd=limit,
        spent_usd=spent,
        needed_usd=needed,
    )


class MemoryBudgetLedger(BudgetLedger):
    """Budgets within one process.

    `reserve` checks and reserves with no await in between, so one event loop needs no lock.
    """

    def __init__(self) -> None:
        self._spent: dict[str, int] = {}  # scope -> micro-dollars settled plus reserved
        self._open: dict[str, int] = {}  # reservation id -> micro-dollars reserved

    async def reserve(self, limits: Mapping[str, float], amount_usd: float) -> Reservation:
        needed = to_micros(amount_usd)
        for scope, limit_usd in limits.items():
            limit = to_micros(limit_usd, f"the limit of budget {scope}")
            spent = self._spent.get(scope, 0)
            if spent + needed > limit:
                raise budget_exceeded(scope, limit, spent, needed)

        for scope in limits:
            self._spent[scope] = self._spent.get(scope, 0) + needed
        reservation = Reservation(dict(limits), amount_usd)
        self._open[reservation.id] = needed
        return reservation

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        actual = to_micros(actual_usd, "actual_usd")
        reserved = self._open.pop(reservation.id, None)
        if reserved is None:
            return
        for scope in reservation.scopes:
            self._spent[scope] = self._spent.get(scope, 0) + actual - reserved

    async def charge(
        self, limits_or_scopes: Mapping[str, float] | Iterable[str] | str, amount_usd: float
    ) -> None:
        amount = to_micros(amount_usd)
        for scope in _scope_names(limits_or_scopes):
            self._spent[scope] = self._spent.get(scope, 0) + amount

    async def spent(self, scope: str) -> float:
        return self._spent.get(scope, 0) / MICROS_PER_USD

    async def aclose(self) -> None:
        return None


# Reserve ARGV[1] micro-dollars under every scope if each has room.
# KEYS: the scopes' spend counters, then the reservation's key. ARGV: amount,
# expiry in seconds, then one limit per scope, all in micro-dollars. Returns
# {1, 0, 0}, or {0, index of the first scope without room, its spend}.
_RESERVE_SCRIPT = """
local count = #KEYS - 1
local needed = tonumber(ARGV[1])
for i = 1, count do
  local spent = tonumber(redis.call('GET', KEYS[i]) or '0')
  if spent + needed > tonumber(ARGV[i + 2]) then
    return {0, i, spent}
  end
end
for i = 1, count do
  redis.call('INCRBY', KEYS[i], ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
redis.call('SET', KEYS[count + 1], ARGV[1], 'EX', ARGV[2])
return {1, 0, 0}
"""

# Replace a reservation by the actual cost. KEYS as for reserve. ARGV: actual
# micro-dollars, expiry in seconds. The reservation's key is deleted, so a
# second settle finds nothing and changes nothing. Returns 1 if it settled.
_SETTLE_SCRIPT = """
local count = #KEYS - 1
local reserved = redis.call('GET', KEYS[count + 1])
if not reserved then
  return 0
end
redis.call('DEL', KEYS[count + 1])
-- format with %d: tostring() of a Lua number switches to exponent notation above 1e14
local delta = string.format('%d', tonumber(ARGV[1]) - tonumber(reserved))
for i = 1, count do
  redis.call('INCRBY', KEYS[i], delta)
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return 1
"""


class RedisBudgetLedger(BudgetLedger):
    """Budgets shared by every process that uses the same Redis server and prefix.

    A scope's spend is the integer key ``PREFIX scope:NAME`` in micro-dollars,
    and each open reservation is the key ``PREFIX reservation:ID``. Both expire
    `ttl_s` after their last change, so a scope left alone that long starts
    again from zero. The reservation of a process that dies before settling
    stays counted until its scope expires.

    Redis Cluster needs a script's keys in one hash slot, so give such a
    server a prefix with a hash tag, such as ``{trunkline}:budget:``.
    """

    def __init__(
        self, url: str, *, prefix: str = "trunkline:budget:", ttl_s: int = 30 * 24 * 3600
    ) -> None:
        """Connect lazily to the Redis server at `url`.

        Args:
            url: a ``redis://`` or ``rediss://`` URL.
            prefix: the start of every key this ledger writes.
            ttl_s: seconds a scope's spend and an open reservation are kept after their last change.
        """
        import redis.asyncio  # imported lazily: in-process ledgers skip its import time

        self._redis = redis.asyncio.Redis.from_url(url, decode_responses=True)
        self._reserve = self._redis.register_script(_RESERVE_SCRIPT)
        self._settle = self._redis.register_script(_SETTLE_SCRIPT)
        self._prefix = prefix
        self._ttl_s = ttl_s

    def scope_key(self, scope: str) -> str:
        """Return the Redis key of a scope's spend."""
        return f"{self._prefix}scope:{scope}"

    def reservation_key(self, reservation_id: str) -> str:
        """Return the Redis key of an open reservation."""
        return f"{self._prefix}reservation:{reservation_id}"

    async def reserve(self, limits: Mapping[str, float], amount_usd: float) -> Reservation:
        needed = to_micros(amount_usd)
        scopes = list(limits)
        limit_micros = [to_micros(limits[s], f"the limit of budget {s}") for s in scopes]
        reservation = Reservation(dict(limits), amount_usd)
        keys = [*(self.scope_key(s) for s in scopes), self.reservation_key(reservation.id)]
        granted, index, spent = await self._reserve(
            keys=keys, args=[needed, self._ttl_s, *limit_micros]
        )
        if not int(granted):
            position = int(index) - 1
            raise budget_exceeded(scopes[position], limit_micros[position], int(spent), needed)
        return reservation

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        actual = to_micros(actual_usd, "actual_usd")
        keys = [
            *(self.scope_key(s) for s in reservation.scopes),
            self.reservation_key(reservation.id),
        ]
        await self._settle(keys=keys, args=[actual, self._ttl_s])

    async def charge(
        self, limits_or_scopes: Mapping[str, float] | Iterable[str] | str, amount_usd: float
    ) -> None:
        amount = to_micros(amount_usd)
        scopes = _scope_names(limits_or_scopes)
        if not scopes:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            for scope in scopes:
                pipe.incrby(self.scope_key(scope), amount)
                pipe.expire(self.scope_key(scope), self._ttl_s)
            await pipe.execute()

    async def spent(self, scope: str) -> float:
        value = await self._redis.get(self.scope_key(scope))
        return int(value or 0) / MICROS_PER_USD

    async def aclose(self) -> None:
        await self._redis.aclose()
