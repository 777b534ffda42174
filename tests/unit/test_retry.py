"""Retry-After parsing, backoff bounds and the retry decision."""

from __future__ import annotations

import email.utils
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.errors import ErrorKind, ProviderError
from trunkline.providers.base import kind_from_status, parse_retry_after
from trunkline.resilience import RetryPolicy


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers, expected) -> None:
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_800_000_000.0
    header = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"Retry-After": header}, now=now) == pytest.approx(30.0)


def test_past_http_date_is_zero() -> None:
    header = email.utils.formatdate(1_000_000_000.0, usegmt=True)
    assert parse_retry_after({"Retry-After": header}, now=1_800_000_000.0) == 0.0


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, "", ErrorKind.BAD_REQUEST),
        (400, "This model's maximum context length is 8192 tokens", ErrorKind.CONTEXT_LENGTH),
        (400, '{"code": "context_length_exceeded"}', ErrorKind.CONTEXT_LENGTH),
        (400, "prompt is too long: 210000 tokens > 200000 maximum", ErrorKind.CONTEXT_LENGTH),
        (400, "content_filter", ErrorKind.CONTENT_FILTER),
        (401, "", ErrorKind.AUTH),
        (403, "", ErrorKind.AUTH),
        (404, "", ErrorKind.NOT_FOUND),
        (408, "", ErrorKind.TIMEOUT),
        (429, "", ErrorKind.RATE_LIMITED),
        (500, "", ErrorKind.SERVER_ERROR),
        (503, "", ErrorKind.OVERLOADED),
        (529, "", ErrorKind.OVERLOADED),
    ],
)
def test_kind_from_status(status, body, kind) -> None:
    assert kind_from_status(status, body) == kind


@given(attempt=st.integers(min_value=1, max_value=40), seed=st.integers(0, 2**32))
def test_backoff_within_cap(attempt: int, seed: int) -> None:
    policy = RetryPolicy(base_s=0.5, max_s=8.0, rng=random.Random(seed))
    wait = policy.backoff_s(attempt)
    assert 0.0 <= wait <= min(8.0, 0.5 * 2 ** (attempt - 1))


def error(kind: ErrorKind, retry_after: float | None = None) -> ProviderError:
    return ProviderError("x", kind=kind, provider="fake", model="m", retry_after_s=retry_after)


def test_decide_not_retryable() -> None:
    decision = RetryPolicy().decide(error(ErrorKind.AUTH), 1)
    assert decision.wait_s is None
    assert "not retryable" in decision.reason


def test_decide_attempts_spent() -> None:
    decision = RetryPolicy(max_attempts=2).decide(error(ErrorKind.SERVER_ERROR), 2)
    assert decision.wait_s is None
    assert "attempts spent" in decision.reason


def test_decide_retry_after_wins() -> None:
    decision = RetryPolicy().decide(error(ErrorKind.RATE_LIMITED, 4.0), 1)
    assert decision.wait_s == 4.0
    assert decision.reason == "retry-after"


def test_decide_retry_after_over_cap() -> None:
    decision = RetryPolicy(retry_after_max_s=10).decide(error(ErrorKind.RATE_LIMITED, 30.0), 1)
    assert decision.wait_s is None
    assert "exceeds the cap" in decision.reason
