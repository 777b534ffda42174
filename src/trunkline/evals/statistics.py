"""Bootstrap confidence intervals for mean scores, paired comparisons of two runs, and the
regression gate built on them.

Every function takes `rng`, a NumPy `Generator` or an integer seed, so that
the same inputs give the same interval. The default seed is 0, so that a gate
makes the same decision every time it is given the same scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy

from trunkline.errors import ConfigError

#: Resamples per bootstrap unless the caller asks for another count.
DEFAULT_RESAMPLES = 2_000
#: Resampled values drawn in one batch. That bounds the working memory to about
#: 32 MB, int64 indices plus the float64 values they pick, for up to this many rows.
_MAX_BATCH_VALUES = 2_000_000


@dataclass(frozen=True)
class MeanInterval:
    """A mean with its percentile bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    #: The number of values the mean is over.
    count: int
    #: The interval's two-sided confidence level, such as 0.95.
    confidence: float


@dataclass(frozen=True)
class PairedComparison:
    """Run B against run A on the same rows: the mean difference B - A with its interval.

    A positive difference means B scores higher. `wins` counts rows where B
    scored higher than A, `losses` rows where it scored lower, and `ties`
    rows where the two scores are equal.
    """

    count: int
    mean_a: float
    mean_b: float
    #: The mean of B - A over the rows.
    difference: float
    low: float
    high: float
    confidence: float
    wins: int
    ties: int
    losses: int


@dataclass(frozen=True)
class GateDecision:
    """Whether a regression gate fails, with a sentence saying why."""

    failed: bool
    message: str


def bootstrap_mean(
    values: Sequence[float],
    *,
    rng: numpy.random.Generator | int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
) -> MeanInterval:
    """Estimate the mean of `values` with a percentile bootstrap confidence interval.

    Draws `resamples` samples of ``len(values)`` values with replacement,
    takes each sample's mean, and returns the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` quantiles of those means as the interval. One
    value gives an interval of zero width.

    Raises:
        ConfigError: `values` is empty or contains a value that is not a finite
            number, `resamples` is below 1, or `confidence` is not strictly
            between 0 and 1.
    """
    data = _as_array(values, "values")
    _check_options(resamples, confidence)
    means = _resampled_means(data, _generator(rng), resamples)
    low, high = _percentiles(means, confidence)
    return MeanInterval(
        mean=float(data.mean()), low=low, high=high, count=data.size, confidence=confidence
    )


def paired_bootstrap(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    *,
    rng: numpy.random.Generator | int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
) -> PairedComparison:
    """Compare run B with run A on the same rows by a paired bootstrap of the mean of B - A.

    ``scores_a[i]`` and ``scores_b[i]`` must score the same row. Resampling
    rows, not each run on its own, keeps the pairing, so row difficulty that
    both runs share cancels out of the interval.

    Raises:
        ConfigError: the two lists differ in length, are empty or hold a value
            that is not a finite number, or an option is out of range as in
            `bootstrap_mean`.
    """
    a = _as_array(scores_a, "scores_a")
    b = _as_array(scores_b, "scores_b")
    if a.size != b.size:
        raise ConfigError(
            f"a paired comparison needs one score per row from each run, got {a.size} scores "
            f"from A and {b.size} from B"
        )
    _check_options(resamples, confidence)
    differences = b - a
    means = _resampled_means(differences, _generator(rng), resamples)
    low, high = _percentiles(means, confidence)
    return PairedComparison(
        count=a.size,
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        difference=float(differences.mean()),
        low=low,
        high=high,
        confidence=confidence,
        wins=int((differences > 0).sum()),
        ties=int((differences == 0).sum()),
        losses=int((differences < 0).sum()),
    )


def regression_gate(comparison: PairedComparison, *, delta: float) -> GateDecision:
    """Fail when B is worse than A by more than `delta`, judged by the comparison's interval.

    The gate fails when the interval's upper bound is below ``-delta``: even
    the most favourable end of the interval has B losing more than `delta`.
    The interval is two-sided, so a 95% interval makes this a one-sided claim
    at 97.5% confidence. A drop that the interval cannot tell from noise
    passes, so a small golden set passes unless its drop is large.

    Raises:
        ConfigError: `delta` is negative or not finite.
    """
    if not (math.isfinite(delta) and delta >= 0):
        raise ConfigError(f"the gate's delta must be a finite number >= 0, got {delta!r}")
    level = f"{comparison.confidence:.0%}"
    interval = (
        f"mean B - A {comparison.difference:+.4f}, {level} interval "
        f"[{comparison.low:+.4f}, {comparison.high:+.4f}] over {comparison.count} rows"
    )
    if comparison.high < -delta:
        return GateDecision(
            failed=True,
            message=f"B is worse than A by more than {delta:g} ({interval})",
        )
    return GateDecision(
        failed=False,
        message=f"B is not shown worse than A by more than {delta:g} ({interval})",
    )


def _as_array(values: Sequence[float], name: str) -> numpy.ndarray:
    try:
        data = numpy.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{name} must be numbers: {error}") from None
    if data.ndim != 1:
        raise ConfigError(f"{name} must be a flat list of numbers, got shape {data.shape}")
    if data.size == 0:
        raise ConfigError(f"{name} is empty; a bootstrap needs at least one value")
    if not numpy.isfinite(data).all():
        position = int(numpy.flatnonzero(~numpy.isfinite(data))[0])
        raise ConfigError(f"{name}[{position}] is {data[position]}, not a finite number")
    return data


def _check_options(resamples: int, confidence: float) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ConfigError(f"resamples must be a whole number of at least 1, got {resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be strictly between 0 and 1, got {confidence!r}")


def _generator(rng: numpy.random.Generator | int) -> numpy.random.Generator:
    if isinstance(rng, numpy.random.Generator):
        return rng
    return numpy.random.default_rng(rng)


def _resampled_means(
    data: numpy.ndarray, generator: numpy.random.Generator, resamples: int
) -> numpy.ndarray:
    count = data.size
    batch = max(1, _MAX_BATCH_VALUES // count)
    means = numpy.empty(resamples)
    for start in range(0, resamples, batch):
        stop = min(resamples, start + batch)
        indices = generator.integers(0, count, size=(stop - start, count))
        means[start:stop] = data[indices].mean(axis=1)
    return means


def _percentiles(means: numpy.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = numpy.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)
