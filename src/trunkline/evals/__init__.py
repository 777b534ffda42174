"""Scoring model outputs: scorers, LLM-as-a-judge, judge agreement and bootstrap statistics.

Every scorer is called as ``scorer(output, expected, row)``, or awaited as
``scorer.ascore(output, expected, row)``, and returns a `Score` from 0 to 1::

    from trunkline.evals import build_scorer, bootstrap_mean

    fuzzy = build_scorer("fuzzy")
    scores = [fuzzy(output, expected).value for output, expected in pairs]
    print(bootstrap_mean(scores))
"""

from trunkline.evals.agreement import Agreement, agreement_from_pairs, measure_agreement
from trunkline.evals.embeddings import EmbeddingSimilarity
from trunkline.evals.functions import FunctionScorer
from trunkline.evals.judge import Judge, PassFailVerdict, ScaleVerdict
from trunkline.evals.registry import build_scorer, register_scorer, scorer_names
from trunkline.evals.scorers import (
    ExactMatch,
    FuzzyMatch,
    JsonSchemaValid,
    NormalisedMatch,
    NumericCloseness,
    normalise_text,
)
from trunkline.evals.scores import JudgeError, Score, Scorer, ScoringError, SyncScorer
from trunkline.evals.statistics import (
    GateDecision,
    MeanInterval,
    PairedComparison,
    bootstrap_mean,
    paired_bootstrap,
    regression_gate,
)

__all__ = [
    "Agreement",
    "EmbeddingSimilarity",
    "ExactMatch",
    "FunctionScorer",
    "FuzzyMatch",
    "GateDecision",
    "JsonSchemaValid",
    "Judge",
    "JudgeError",
    "MeanInterval",
    "NormalisedMatch",
    "NumericCloseness",
    "PairedComparison",
    "PassFailVerdict",
    "ScaleVerdict",
    "Score",
    "Scorer",
    "ScoringError",
    "SyncScorer",
    "agreement_from_pairs",
    "bootstrap_mean",
    "build_scorer",
    "measure_agreement",
    "normalise_text",
    "paired_bootstrap",
    "register_scorer",
    "regression_gate",
    "scorer_names",
]
