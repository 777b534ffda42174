"""Comparing two stored experiments row by row: B against A on the same rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rapidfuzz import fuzz
from sqlalchemy import select

from trunkline.errors import ConfigError
from trunkline.evals.scorers import normalise_text
from trunkline.evals.scores import as_text
from trunkline.evals.statistics import PairedComparison, paired_bootstrap
from trunkline.store.database import Store
from trunkline.store.tables import experiment_rows, experiments


@dataclass(frozen=True)
class RowChange:
    """One paired row: both scores (means over repeats), both outputs, and how alike they are."""

    row_key: str
    inputs: Any
    score_a: float
    score_b: float
    output_a: Any
    output_b: Any
    #: Similarity name (exact, fuzzy, embedding) to a value from 0 to 1.
    similarity: dict[str, float]

    @property
    def difference(self) -> float:
        return self.score_b - self.score_a


@dataclass
class Comparison:
    """Experiment B against experiment A: the paired score difference, output similarity, cost and latency."""

    experiment_a: dict[str, Any]
    experiment_b: dict[str, Any]
    paired: PairedComparison
    rows: list[RowChange]
    #: Similarity name to its mean over the paired rows.
    similarity: dict[str, float]
    #: Rows present in only one of the two experiments.
    unpaired: int = 0
    notes: list[str] = field(default_factory=list)

    def most_changed(self, count: int) -> list[RowChange]:
        """Return the rows whose score moved most, then those whose output changed most."""
        return sorted(self.rows, key=lambda row: (-abs(row.difference), row.similarity.get("fuzzy", 1.0)))[:count]

    def public(self, top: int = 5) -> dict[str, Any]:
        paired = self.paired
        return {
            "a": _summary(self.experiment_a),
            "b": _summary(self.experiment_b),
            "rows": paired.count,
            "unpaired_rows": self.unpaired,
            "mean_a": paired.mean_a,
            "mean_b": paired.mean_b,
            "difference": paired.difference,
            "ci_low": paired.low,
            "ci_high": paired.high,
            "wins": paired.wins,
            "ties": paired.ties,
            "losses": paired.losses,
            "similarity": self.similarity,
            "cost_difference_usd": _difference(self.experiment_a, self.experiment_b, "cost_usd"),
            "latency_p50_difference_ms": _difference(self.experiment_a, self.experiment_b, "latency_p50_ms"),
            "most_changed": [
                {
                    "row_key": row.row_key,
                    "score_a": row.score_a,
                    "score_b": row.score_b,
                    "output_a": row.output_a,
                    "output_b": row.output_b,
                    "similarity": row.similarity,
                }
                for row in self.most_changed(top)
            ],
            "notes": self.notes,
        }


def _summary(experiment: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "experiment_id", "name", "task", "deployment", "model", "prompt_name", "prompt_version",
        "dataset_hash", "row_count", "mean_score", "ci_low", "ci_high", "cost_usd",
        "latency_p50_ms", "latency_p95_ms",
    )
    return {key: experiment[key] for key in keys}


def _difference(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    if a[key] is None or b[key] is None:
        return None
    return b[key] - a[key]


def load_experiment(store: Store, reference: str) -> dict[str, Any]:
    """Return an experiment's row by id or unique id prefix.

    Raises:
        ConfigError: no experiment matches, or the prefix matches several.
    """
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(experiments).where(experiments.c.experiment_id.startswith(reference, autoescape=True)).limit(3)
        ).mappings().all()
    if not rows:
        raise ConfigError(
            f"no experiment with id {reference!r}; list experiments with `trunkline experiments`"
        )
    if len(rows) > 1:
        matches = ", ".join(row["experiment_id"] for row in rows)
        raise ConfigError(f"experiment id prefix {reference!r} matches several: {matches}; give more characters")
    return dict(rows[0])


def _rows_by_key(store: Store, experiment_id: str) -> dict[str, list[dict[str, Any]]]:
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(experiment_rows).where(experiment_rows.c.experiment_id == experiment_id)
        ).mappings().all()
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["row_key"], []).append(dict(row))
    return grouped


def _similarity(output_a: Any, output_b: Any, embedder: Any | None) -> dict[str, float]:
    text_a, text_b = as_text(output_a), as_text(output_b)
    values = {
        "exact": 1.0 if normalise_text(text_a) == normalise_text(text_b) else 0.0,
        "fuzzy": fuzz.ratio(normalise_text(text_a), normalise_text(text_b)) / 100.0,
    }
    if embedder is not None:
        values["embedding"] = embedder(text_a, text_b).value
    return values


def compare_experiments(store: Store, reference_a: str, reference_b: str, *, embedder: Any | None = None) -> Comparison:
    """Pair the rows of two experiments by row key and compare B with A.

    Scores of repeated rows are averaged per row first. `embedder`, an
    embedding scorer, adds cosine similarity of the outputs.

    Raises:
        ConfigError: an experiment is missing, or the two share no row.
    """
    a, b = load_experiment(store, reference_a), load_experiment(store, reference_b)
    rows_a, rows_b = _rows_by_key(store, a["experiment_id"]), _rows_by_key(store, b["experiment_id"])
    keys = [key for key in rows_a if key in rows_b]
    if not keys:
        raise ConfigError(
            f"experiments {a['experiment_id']} and {b['experiment_id']} share no row; compare "
            "experiments run on the same dataset"
        )
    notes = []
    if a["dataset_hash"] != b["dataset_hash"]:
        notes.append("the two experiments ran on different dataset files; only rows with the same key are paired")
    changes = []
    for key in keys:
        first_a, first_b = rows_a[key][0], rows_b[key][0]
        changes.append(
            RowChange(
                row_key=key,
                inputs=first_a["inputs"],
                score_a=sum(row["score"] or 0.0 for row in rows_a[key]) / len(rows_a[key]),
                score_b=sum(row["score"] or 0.0 for row in rows_b[key]) / len(rows_b[key]),
                output_a=first_a["output"],
                output_b=first_b["output"],
                similarity=_similarity(first_a["output"], first_b["output"], embedder),
            )
        )
    paired = paired_bootstrap([row.score_a for row in changes], [row.score_b for row in changes])
    names = changes[0].similarity.keys()
    similarity = {name: sum(row.similarity[name] for row in changes) / len(changes) for name in names}
    unpaired = len(set(rows_a) ^ set(rows_b))
    return Comparison(a, b, paired, changes, similarity, unpaired, notes)
