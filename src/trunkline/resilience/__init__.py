"""Retry policy and deadlines, circuit breakers, rate limiters and budget ledgers."""

from trunkline.resilience.breaker import BreakerState, BreakerStatus, CircuitBreaker
from trunkline.resilience.budget import BudgetLedger, MemoryBudgetLedger, build_ledger
from trunkline.resilience.limiter import (
    Limits,
    LimitWaitTooLong,
    MemoryRateLimiter,
    RateLimiter,
    build_limiter,
)
from trunkline.resilience.retry import RetryDecision, RetryPolicy

__all__ = [
    "BreakerState",
    "BreakerStatus",
    "BudgetLedger",
    "CircuitBreaker",
    "LimitWaitTooLong",
    "Limits",
    "MemoryBudgetLedger",
    "MemoryRateLimiter",
    "RateLimiter",
    "RetryDecision",
    "RetryPolicy",
    "build_ledger",
    "build_limiter",
]
