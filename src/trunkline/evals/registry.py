"""Scorers by name, so that a workflow file can list them as ``scorers = ["exact", "fuzzy"]``.

| name | scorer | options |
| --- | --- | --- |
| ``exact`` | `ExactMatch` | |
| ``normalised`` | `NormalisedMatch` | |
| ``fuzzy`` | `FuzzyMatch` | |
| ``embedding`` | `EmbeddingSimilarity` (the ``embeddings`` extra) | |
| ``json_schema`` | `JsonSchemaValid` | ``schema`` |
| ``numeric`` | `NumericCloseness` | ``abs_tol``, ``rel_tol``, ``abs_zero``, ``rel_zero`` |
| ``python`` | `FunctionScorer` | ``path`` |
| ``judge`` | `Judge` | ``router``, ``rubric``, ``route``, ``scale``, ``context_columns`` |
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from trunkline.errors import ConfigError
from trunkline.evals.embeddings import EmbeddingSimilarity
from trunkline.evals.functions import FunctionScorer
from trunkline.evals.judge import Judge
from trunkline.evals.scorers import (
    ExactMatch,
    FuzzyMatch,
    JsonSchemaValid,
    NormalisedMatch,
    NumericCloseness,
)
from trunkline.evals.scores import Scorer

ScorerFactory = Callable[..., Scorer]

_FACTORIES: dict[str, ScorerFactory] = {
    "exact": ExactMatch,
    "normalised": NormalisedMatch,
    "fuzzy": FuzzyMatch,
    "embedding": EmbeddingSimilarity,
    "json_schema": JsonSchemaValid,
    "numeric": NumericCloseness,
    "python": FunctionScorer,
    "judge": Judge,
}


def register_scorer(name: str, factory: ScorerFactory, *, replace: bool = False) -> None:
    """Make `factory` buildable as `name`; it is called with the scorer's options as keywords.

    Raises:
        ConfigError: `name` is empty or already taken and `replace` is False.
    """
    if not name or not name.strip():
        raise ConfigError("a scorer name must not be empty")
    if name in _FACTORIES and not replace:
        raise ConfigError(
            f"a scorer named {name!r} is already registered; pass replace=True to replace it"
        )
    _FACTORIES[name] = factory


def scorer_names() -> list[str]:
    """Return the registered scorer names, sorted."""
    return sorted(_FACTORIES)


def build_scorer(name: str, **options: Any) -> Scorer:
    """Build the scorer registered as `name` with `options`.

    Example::

        build_scorer("numeric", rel_tol=0.01)("101", "100")  # Score(value=1.0)

    Raises:
        ConfigError: no scorer has that name, an option is unknown or missing,
            or the scorer rejects an option's value.
    """
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown scorer {name!r}; the registered scorers are: {', '.join(scorer_names())}"
        ) from None
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as error:
        raise ConfigError(f"invalid options for scorer {name!r}: {error}") from None
    return factory(**options)
