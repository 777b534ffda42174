"""The in-process budget ledger: reserve, settle, charge and racing reservations."""

from __future__ import annotations

import asyncio
import random

import pytest

from trunkline.errors import BudgetExceeded, ErrorKind
from trunkline.resilience.budget import (
    MemoryBudgetLedger,
    RedisBudgetLedger,
    build_ledger,
    to_micros,
)

pytestmark = pytest.mark.looptime


async def test_reserve_counts_under_every_scope() -> None:
    ledger = MemoryBudgetLedger()

    reservation = await ledger.reserve({"run:r1": 1.0, "tag:team=search": 5.0}, 0.25)

    assert reservation.scopes == {"run:r1": 1.0, "tag:team=search": 5.0}
    assert reservation.amount_usd == 0.25
    assert await ledger.spent("run:r1") == 0.25
    assert await ledger.spent("tag:team=search") == 0.25
    assert await ledger.spent("session:s1") == 0.0


async def test_settle_replaces_reservation() -> None:
    ledger = MemoryBudgetLedger()
    reservation = await ledger.reserve({"run:r1": 1.0}, 0.40)

    await ledger.settle(reservation, 0.15)

    assert await ledger.spent("run:r1") == 0.15
    assert await ledger.remaining("run:r1", 1.0) == 0.85


async def test_settle_above_reservation_is_charged() -> None:
    ledger = MemoryBudgetLedger()
    reservation = await ledger.reserve({"run:r1": 1.0}, 0.90)

    await ledger.settle(reservation, 1.30)

    assert await ledger.spent("run:r1") == 1.30
    assert await ledger.remaining("run:r1", 1.0) == 0.0


async def test_settle_is_idempotent() -> None:
    ledger = MemoryBudgetLedger()
    reservation = await ledger.reserve({"run:r1": 1.0}, 0.40)

    await ledger.settle(reservation, 0.10)
    await ledger.settle(reservation, 0.10)
    await ledger.settle(reservation, 0.30)

    assert await ledger.spent("run:r1") == 0.10


async def test_charge_adds_without_checking() -> None:
    ledger = MemoryBudgetLedger()

    await ledger.charge({"run:r1": 0.01, "session:s1": 0.01}, 0.05)
    await ledger.charge(["run:r1"], 0.02)
    await ledger.charge("session:s1", 0.03)

    assert await ledger.spent("run:r1") == 0.07
    assert await ledger.spent("session:s1") == 0.08


async def test_exceeding_names_the_scope() -> None:
    ledger = MemoryBudgetLedger()
    await ledger.charge("tag:team=search", 4.80)

    with pytest.raises(BudgetExceeded) as caught:
        await ledger.reserve({"run:r1": 10.0, "tag:team=search": 5.0}, 0.50)

    error = caught.value
    assert error.kind == ErrorKind.BUDGET_EXCEEDED
    assert error.scope == "tag:team=search"
    assert error.limit_usd == 5.0
    assert error.spent_usd == 4.80
    assert error.needed_usd == 0.50
    assert "tag:team=search of $5.00" in str(error)
    assert "$4.80 is already spent" in str(error)
    assert "up to $0.50" in str(error)
    assert 'budgets.tags."team=search"' in str(error)
    # Nothing was reserved under the scope that had room.
    assert await ledger.spent("run:r1") == 0.0


async def test_exact_fit_is_allowed() -> None:
    ledger = MemoryBudgetLedger()
    await ledger.reserve({"run:r1": 0.3}, 0.1)
    await ledger.reserve({"run:r1": 0.3}, 0.2)

    with pytest.raises(BudgetExceeded):
        await ledger.reserve({"run:r1": 0.3}, 0.000001)


async def test_small_costs_do_not_drift() -> None:
    ledger = MemoryBudgetLedger()

    for _ in range(10_000):
        await ledger.charge("run:r1", 0.0001)

    # Summed as floats, these 10,000 costs come to 0.9999999999999062.
    assert await ledger.spent("run:r1") == 1.0


async def test_concurrent_reservations_never_overshoot() -> None:
    ledger = MemoryBudgetLedger()
    limits = {"run:r1": 1.0, "session:s1": 1.5}
    rng = random.Random(11)
    amounts = [round(rng.uniform(0.01, 0.2), 6) for _ in range(200)]
    granted: list[float] = []

    async def call(amount: float) -> None:
        await asyncio.sleep(rng.uniform(0, 0.001))
        try:
            reservation = await ledger.reserve(limits, amount)
        except BudgetExceeded:
            return
        granted.append(amount)
        await asyncio.sleep(0)
        await ledger.settle(reservation, amount)

    await asyncio.gather(*(call(amount) for amount in amounts))

    granted_micros = sum(to_micros(amount) for amount in granted)
    assert len(granted) < len(amounts)
    assert granted_micros <= to_micros(1.0)
    assert await ledger.spent("run:r1") == granted_micros / 1_000_000


async def test_invalid_amounts_are_rejected() -> None:
    ledger = MemoryBudgetLedger()

    with pytest.raises(ValueError, match="amount_usd"):
        await ledger.reserve({"run:r1": 1.0}, -0.01)
    with pytest.raises(ValueError, match="amount_usd"):
        await ledger.charge("run:r1", float("nan"))
    with pytest.raises(ValueError, match="limit of budget run:r1"):
        await ledger.reserve({"run:r1": float("inf")}, 0.01)


async def test_build_ledger_picks_backend() -> None:
    memory = build_ledger(None)
    shared = build_ledger("redis://127.0.0.1:1/0")

    assert isinstance(memory, MemoryBudgetLedger)
    assert isinstance(shared, RedisBudgetLedger)
    await memory.aclose()
    await shared.aclose()
