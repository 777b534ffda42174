"""Bootstrap intervals checked against known distributions, paired comparisons and the gate."""

from __future__ import annotations

import math

import numpy
import pytest

from trunkline.errors import ConfigError
from trunkline.evals import bootstrap_mean, paired_bootstrap, regression_gate
from trunkline.evals.statistics import PairedComparison

TRIALS = 200
ROWS = 50


def test_bootstrap_interval_covers_a_known_mean() -> None:
    # Draws from N(0.6, 0.2): the 95% interval should cover 0.6 in about 95% of
    # trials, and be about 2 * 1.96 * sd / sqrt(n) wide.
    true_mean, sd = 0.6, 0.2
    source = numpy.random.default_rng(20240601)
    covered = 0
    widths = []
    for trial in range(TRIALS):
        values = source.normal(true_mean, sd, size=ROWS)
        interval = bootstrap_mean(values.tolist(), rng=trial)
        covered += interval.low <= true_mean <= interval.high
        widths.append(interval.high - interval.low)
    assert 0.90 <= covered / TRIALS <= 0.99
    expected_width = 2 * 1.96 * sd / math.sqrt(ROWS)
    assert numpy.mean(widths) == pytest.approx(expected_width, rel=0.10)


def test_bootstrap_interval_for_pass_fail_scores() -> None:
    # 3,000 rows takes several batches of resamples; a share p has a standard error
    # of sqrt(p * (1 - p) / n).
    source = numpy.random.default_rng(7)
    values = (source.random(3_000) < 0.8).astype(float)
    interval = bootstrap_mean(values.tolist())
    assert interval.count == 3_000
    assert interval.low < interval.mean < interval.high
    expected_width = 2 * 1.96 * math.sqrt(0.8 * 0.2 / 3_000)
    assert interval.high - interval.low == pytest.approx(expected_width, rel=0.10)


def test_bootstrap_is_reproducible() -> None:
    values = numpy.random.default_rng(2).random(30).tolist()
    assert bootstrap_mean(values, rng=5) == bootstrap_mean(values, rng=5)
    assert bootstrap_mean(values, rng=5) == bootstrap_mean(values, rng=numpy.random.default_rng(5))
    assert bootstrap_mean(values, rng=5) != bootstrap_mean(values, rng=6)


def test_bootstrap_fields() -> None:
    interval = bootstrap_mean([0.0, 1.0, 1.0, 1.0], resamples=500, confidence=0.9)
    assert interval.mean == 0.75
    assert interval.count == 4
    assert interval.confidence == 0.9
    assert 0.0 <= interval.low <= 0.75 <= interval.high <= 1.0


def test_bootstrap_higher_confidence_is_wider() -> None:
    values = numpy.random.default_rng(3).random(40).tolist()
    narrow = bootstrap_mean(values, confidence=0.8)
    wide = bootstrap_mean(values, confidence=0.99)
    assert wide.high - wide.low > narrow.high - narrow.low


@pytest.mark.parametrize("values", [[0.4], [0.5, 0.5, 0.5]])
def test_bootstrap_without_spread_has_zero_width(values) -> None:
    interval = bootstrap_mean(values)
    assert interval.low == interval.mean == interval.high


@pytest.mark.parametrize(
    ("values", "options", "message"),
    [
        ([], {}, "values is empty"),
        ([0.1, math.nan], {}, r"values\[1\] is nan, not a finite number"),
        ([0.1, math.inf], {}, r"values\[1\] is inf"),
        ([[0.1, 0.2]], {}, "must be a flat list of numbers"),
        (["a"], {}, "values must be numbers"),
        ([0.1], {"resamples": 0}, "resamples must be a whole number of at least 1"),
        ([0.1], {"resamples": 10.5}, "resamples must be a whole number"),
        ([0.1], {"confidence": 1.0}, "confidence must be strictly between 0 and 1"),
        ([0.1], {"confidence": 0.0}, "confidence must be strictly between 0 and 1"),
    ],
)
def test_bootstrap_rejects_bad_input(values, options, message) -> None:
    with pytest.raises(ConfigError, match=message):
        bootstrap_mean(values, **options)


# Paired comparisons


def test_paired_wins_ties_losses() -> None:
    a = [0.5, 0.5, 1.0, 0.0, 0.2]
    b = [0.7, 0.5, 0.0, 0.0, 0.3]
    comparison = paired_bootstrap(a, b)
    assert comparison.count == 5
    assert (comparison.wins, comparison.ties, comparison.losses) == (2, 2, 1)
    assert comparison.mean_a == pytest.approx(0.44)
    assert comparison.mean_b == pytest.approx(0.30)
    assert comparison.difference == pytest.approx(-0.14)
    assert comparison.low <= comparison.difference <= comparison.high


def test_paired_constant_difference_zero_width() -> None:
    a = numpy.random.default_rng(1).random(30)
    comparison = paired_bootstrap(a.tolist(), (a + 0.1).tolist())
    assert comparison.difference == pytest.approx(0.1)
    assert comparison.low == pytest.approx(0.1)
    assert comparison.high == pytest.approx(0.1)
    assert comparison.wins == 30


def test_paired_bootstrap_uses_the_pairing() -> None:
    # Rows differ a lot in difficulty and both runs share it, so the paired
    # interval must be much narrower than one that treats the runs as independent.
    source = numpy.random.default_rng(11)
    difficulty = source.random(ROWS)
    a = difficulty + source.normal(0, 0.02, ROWS)
    b = difficulty + 0.03 + source.normal(0, 0.02, ROWS)
    comparison = paired_bootstrap(a.tolist(), b.tolist())
    unpaired_width = 2 * 1.96 * math.sqrt(a.var() / ROWS + b.var() / ROWS)
    assert comparison.high - comparison.low < unpaired_width / 5
    assert comparison.low > 0


def test_paired_bootstrap_covers_a_known_difference() -> None:
    true_difference = -0.05
    source = numpy.random.default_rng(99)
    covered = 0
    for trial in range(TRIALS):
        a = source.normal(0.7, 0.15, ROWS)
        b = a + true_difference + source.normal(0, 0.1, ROWS)
        comparison = paired_bootstrap(a.tolist(), b.tolist(), rng=trial)
        covered += comparison.low <= true_difference <= comparison.high
    assert 0.90 <= covered / TRIALS <= 0.99


def test_paired_bootstrap_rejects_unpaired_input() -> None:
    with pytest.raises(ConfigError, match="got 3 scores from A and 2 from B"):
        paired_bootstrap([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ConfigError, match="scores_b is empty"):
        paired_bootstrap([0.1], [])
    with pytest.raises(ConfigError, match=r"scores_a\[0\] is nan"):
        paired_bootstrap([math.nan], [0.1])


# The regression gate


def comparison(difference: float, low: float, high: float) -> PairedComparison:
    return PairedComparison(
        count=100, mean_a=0.8, mean_b=0.8 + difference, difference=difference, low=low,
        high=high, confidence=0.95, wins=10, ties=70, losses=20,
    )


@pytest.mark.parametrize(
    ("low", "high", "delta", "failed"),
    [
        (-0.20, -0.06, 0.05, True),
        (-0.20, -0.05, 0.05, False),
        (-0.20, -0.01, 0.00, True),
        (-0.20, 0.00, 0.00, False),
        (-0.04, -0.02, 0.05, False),
        (-0.10, 0.10, 0.00, False),
        (0.02, 0.10, 0.00, False),
    ],
)
def test_gate_fails_below_minus_delta(low, high, delta, failed) -> None:
    decision = regression_gate(comparison((low + high) / 2, low, high), delta=delta)
    assert decision.failed is failed


def test_gate_messages_give_the_figures() -> None:
    failed = regression_gate(comparison(-0.13, -0.20, -0.06), delta=0.05)
    assert failed.message == (
        "B is worse than A by more than 0.05 "
        "(mean B - A -0.1300, 95% interval [-0.2000, -0.0600] over 100 rows)"
    )
    passed = regression_gate(comparison(-0.03, -0.04, -0.02), delta=0.05)
    assert passed.message.startswith("B is not shown worse than A by more than 0.05 (")


def test_gate_on_real_comparisons() -> None:
    source = numpy.random.default_rng(5)
    a = (source.random(400) < 0.85).astype(float)
    worse = a.copy()
    worse[source.choice(400, size=80, replace=False)] = 0.0
    assert regression_gate(paired_bootstrap(a.tolist(), worse.tolist()), delta=0.05).failed
    assert not regression_gate(paired_bootstrap(a.tolist(), a.tolist()), delta=0.0).failed


@pytest.mark.parametrize("delta", [-0.01, math.nan, math.inf])
def test_gate_rejects_bad_delta(delta) -> None:
    with pytest.raises(ConfigError, match="delta must be a finite number >= 0"):
        regression_gate(comparison(0.0, -0.1, 0.1), delta=delta)
