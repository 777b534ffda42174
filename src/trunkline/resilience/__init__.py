"""Retry policy, deadlines and backoff."""

from trunkline.resilience.retry import RetryDecision, RetryPolicy

__all__ = ["RetryDecision", "RetryPolicy"]
