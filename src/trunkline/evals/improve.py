"""The improvement loop: run, score, adapt, and try again, within a target, a budget and a round limit.

The rows are split, with a seed, into a few-shot pool, development rows and
held-out rows. Every candidate is an experiment on the development rows.
Each round proposes changes to the best candidate so far (see
`trunkline.evals.adaptations`) and keeps whichever scores higher. The loop
stops when the best reaches the target, when the budget is spent, when no
round has improved for `patience` rounds, or after `max_rounds`. The best
candidate and the starting one are then run on the held-out rows; a
better prompt version there gets the ``candidate`` label.

The whole loop is one trace: its experiments' runs and the rewrite calls
are spans under the loop's span.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import select

from trunkline.config import Settings
from trunkline.errors import CallError, ConfigError, ErrorKind, WorkflowError
from trunkline.evals import adaptations
from trunkline.evals.adaptations import Proposal, Setting
from trunkline.evals.comparison import Comparison, compare_experiments
from trunkline.evals.experiments import ExperimentResult, run_experiment, with_route
from trunkline.evals.scores import Scorer
from trunkline.prompts import PromptRegistry, PromptVersion
from trunkline.routing.router import Router
from trunkline.store.database import Store
from trunkline.store.experiments import mark_experiment
from trunkline.store.runs import all_rows, trace_spend
from trunkline.store.tables import experiment_rows
from trunkline.store.writer import StoreWriter
from trunkline.tracing import start_run
from trunkline.workflows.datasets import Dataset
from trunkline.workflows.spec import StepSpec, WorkflowSpec
from trunkline.workflows.steps import build_steps, model_steps

Adaptation = Literal["rewrite", "few_shot", "model", "threshold"]
ADAPTATIONS: tuple[Adaptation, ...] = ("rewrite", "few_shot", "model", "threshold")
StopReason = Literal["target", "budget", "max_rounds", "no_improvement", "no_candidates"]
#: Failing rows shown to the rewrite prompt.
FAILURES_SHOWN = 5
#: Fewer development rows than this cannot tell candidates apart at all.
MIN_DEVELOPMENT_ROWS = 5


@dataclass(frozen=True)
class ImproveOptions:
    target: float
    budget_usd: float
    max_rounds: int
    #: The model step to improve; needed only when the workflow has several.
    step: str | None = None
    holdout: float = 0.3
    #: Rows kept aside for few-shot examples, never scored.
    pool: int = 20
    few_shot: int = 4
    adaptations: tuple[Adaptation, ...] = ADAPTATIONS
    patience: int = 2
    seed: int = 7
    concurrency: int = 4
    rewrite_prompt: str | None = None
    rewrite_route: str | None = None
    label: str = "candidate"

    def check(self) -> None:
        if not 0.0 <= self.target <= 1.0:
            raise ConfigError(f"--target is a score from 0 to 1, got {self.target}")
        if not (math.isfinite(self.budget_usd) and self.budget_usd > 0):
            raise ConfigError(f"--budget must be a finite amount above 0 USD, got {self.budget_usd}")
        if self.max_rounds < 1 or self.patience < 1:
            raise ConfigError("--max-rounds and --patience must be 1 or more")
        if not 0.0 < self.holdout < 1.0:
            raise ConfigError(f"--holdout is a share of the rows between 0 and 1, got {self.holdout}")
        unknown = sorted(set(self.adaptations) - set(ADAPTATIONS))
        if not self.adaptations:
            raise ConfigError(f"--adapt names no adaptation; choose from {', '.join(ADAPTATIONS)}")
        if unknown:
            raise ConfigError(f"unknown adaptation {', '.join(unknown)}; choose from {', '.join(ADAPTATIONS)}")


@dataclass
class Candidate:
    """One setting tried, with the development experiment that scored it."""

    number: int
    round: int
    adaptation: str
    description: str
    setting: Setting | None
    parent: int | None
    experiment: ExperimentResult | None = None
    rejected: str | None = None
    #: The same setting run on the held-out rows, for the start and the best only.
    heldout: ExperimentResult | None = None

    @property
    def score(self) -> float | None:
        return None if self.experiment is None else self.experiment.primary.mean

    def public(self) -> dict[str, Any]:
        primary = self.experiment.primary if self.experiment else None
        return {
            "number": self.number,
            "round": self.round,
            "adaptation": self.adaptation,
            "description": self.description,
            "setting": self.setting.describe() if self.setting else None,
            "prompt": self.setting.prompt.reference if self.setting else None,
            "route": self.setting.route if self.setting else None,
            "params": dict(self.setting.params) if self.setting else {},
            "parent": self.parent,
            "score": None if primary is None else primary.mean,
            "ci_low": None if primary is None else primary.low,
            "ci_high": None if primary is None else primary.high,
            "cost_usd": None if self.experiment is None else self.experiment.cost_usd,
            "experiment_id": None if self.experiment is None else self.experiment.experiment_id,
            "rejected": self.rejected,
        }


@dataclass
class ImproveResult:
    loop_id: str
    trace_id: str
    stop_reason: StopReason
    rounds: int
    candidates: list[Candidate]
    baseline: Candidate
    best: Candidate
    split: dict[str, int]
    #: Set once the held-out check has run, since it spends too.
    spent_usd: float = 0.0
    unpriced_calls: int = 0
    heldout: Comparison | None = None
    labelled: PromptVersion | None = None
    verdict: str = ""
    notes: list[str] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {
            "loop_id": self.loop_id,
            "trace_id": self.trace_id,
            "stop_reason": self.stop_reason,
            "rounds": self.rounds,
            "spent_usd": self.spent_usd,
            "unpriced_calls": self.unpriced_calls,
            "split": self.split,
            "baseline": self.baseline.number,
            "best": self.best.number,
            "candidates": [candidate.public() for candidate in self.candidates],
            "heldout": self.heldout.public(top=0) if self.heldout else None,
            "labelled": self.labelled.reference if self.labelled else None,
            "verdict": self.verdict,
            "notes": self.notes,
        }


def split_rows(dataset: Dataset, options: ImproveOptions) -> tuple[list[dict], list[dict], list[dict]]:
    """Return the few-shot pool, the development rows and the held-out rows, shuffled with the seed."""
    rows = list(dataset.rows)
    random.Random(options.seed).shuffle(rows)
    heldout_count = max(1, round(len(rows) * options.holdout))
    heldout, rest = rows[:heldout_count], rows[heldout_count:]
    # The pool takes at most a third of the rest, so that candidates are scored on most of it.
    pool_count = min(options.pool, len(rest) // 3) if "few_shot" in options.adaptations else 0
    pool, development = rest[:pool_count], rest[pool_count:]
    if len(development) < MIN_DEVELOPMENT_ROWS:
        raise ConfigError(
            f"{dataset.path} has {len(dataset.rows)} rows, which leaves {len(development)} to score "
            f"candidates on after {heldout_count} held out and {pool_count} kept for examples; "
            f"at least {MIN_DEVELOPMENT_ROWS} are needed: give more rows or a lower --holdout"
        )
    return pool, development, heldout


def _part(dataset: Dataset, rows: list[dict], name: str, seed: int) -> Dataset:
    encoded = json.dumps(rows, sort_keys=True, default=str).encode()
    path = dataset.path.with_name(f"{dataset.path.stem}.{name}-seed{seed}{dataset.path.suffix}")
    return Dataset(path=path, rows=rows, content_hash=hashlib.sha256(encoded).hexdigest())


class ImprovementLoop:
    """One run of the loop; `run` returns its result. See the module docstring."""

    def __init__(
        self,
        workflow: WorkflowSpec,
        dataset: Dataset,
        *,
        settings: Settings,
        router: Router,
        store: Store,
        writer: StoreWriter,
        params: dict[str, Any],
        scorers: list[Scorer],
        options: ImproveOptions,
        prompt_overrides: dict[str, str] | None = None,
    ) -> None:
        options.check()
        if not workflow.expected:
            raise ConfigError(
                f"workflow {workflow.name!r} names no expected column, so candidates cannot be "
                "scored; set expected = \"COLUMN\" in it"
            )

        self.workflow = workflow
        self.settings = settings
        self.router = router
        self.store = store
        self.writer = writer
        self.params = params
        self.scorers = scorers
        self.options = options
        self.registry = PromptRegistry(store)
        self.overrides = dict(prompt_overrides or {})
        self.step = self._target_step()
        self.route = self.step.route or workflow.route or settings.default_route
        needed = {*workflow.inputs.values(), workflow.expected}
        missing = sorted(needed - set(dataset.columns))
        if missing:
            raise WorkflowError(
                f"dataset {dataset.path} lacks column(s) {', '.join(missing)} that workflow "
                f"{workflow.name!r} maps; its columns are: {', '.join(dataset.columns)}"
            )

        pool, development, heldout = split_rows(dataset, options)
        self.pool = pool
        self.development = _part(dataset, development, "dev", options.seed)
        self.heldout = _part(dataset, heldout, "heldout", options.seed)
        self.loop_id = "imp_" + uuid.uuid4().hex[:16]
        self.spent = 0.0
        self.unpriced = 0
        self.trace_id = ""
        #: The router's message once it rejected a call for the budget; the loop then stops.
        self.out_of_budget: str | None = None
        self.candidates: list[Candidate] = []

    def _target_step(self) -> StepSpec:
        specs = [spec for spec in self.workflow.all_steps() if spec.kind == "model"]
        if self.options.step is not None:
            for spec in specs:
                if spec.name == self.options.step:
                    return spec
            raise WorkflowError(
                f"workflow {self.workflow.name!r} has no model step {self.options.step!r}; its model "
                f"steps: {', '.join(spec.name for spec in specs) or 'none'}"
            )
        if len(specs) != 1:
            raise WorkflowError(
                f"workflow {self.workflow.name!r} has {len(specs)} model steps "
                f"({', '.join(spec.name for spec in specs) or 'none'}); name the one to improve with --step"
            )
        return specs[0]

    def _starting_prompt(self) -> PromptVersion:
        reference = self.overrides.get(self.step.name, self.step.prompt_ref)
        if reference:
            return self.registry.get(reference)
        return adaptations.imported_prompt(self.workflow, self.step, self.registry)

    @property
    def remaining(self) -> float:
        return self.options.budget_usd - self.spent

    async def run(self) -> ImproveResult:
        options = self.options
        with start_run(
            f"improve {self.workflow.name}",
            run_id=self.loop_id,
            budget_usd=options.budget_usd,
            workflow=self.workflow.name,
            target=options.target,
        ) as live:
            self.trace_id = live.context.trace_id
            if "rewrite" in options.adaptations:
                self._rewrite_prompt()
            start = Setting(self._starting_prompt())
            baseline = Candidate(0, 0, "baseline", "the current prompt", start, None)
            self.candidates.append(baseline)
            await self._evaluate(baseline)
            if self.out_of_budget is not None:
                raise ConfigError(
                    f"a budget of {options.budget_usd} USD does not cover scoring the current prompt on "
                    f"{len(self.development.rows)} development rows: {self.out_of_budget}. Raise --budget, "
                    "or lower the step's max_tokens so that each call's worst case costs less"
                )
            best, rounds, reason = await self._search(baseline)
            result = ImproveResult(
                loop_id=self.loop_id,
                trace_id=live.context.trace_id,
                stop_reason=reason,
                rounds=rounds,
                candidates=self.candidates,
                baseline=baseline,
                best=best,
                split={"pool": len(self.pool), "development": len(self.development.rows), "heldout": len(self.heldout.rows)},
            )
            await self._confirm(result)
            result.spent_usd, result.unpriced_calls = self.spent, self.unpriced
            if self.unpriced:
                result.notes.append(
                    f"{self.unpriced} calls had no known price, so the budget could not count them"
                )
            live.attributes.update(
                stop_reason=reason, rounds=rounds, best_candidate=best.number,
                best_score=best.score, spent_usd=self.spent, labelled=result.labelled.reference if result.labelled else "",
            )
        return result

    async def _search(self, baseline: Candidate) -> tuple[Candidate, int, StopReason]:
        """Run rounds of adaptation from `baseline`; return the best candidate, the rounds run and why it stopped."""
        best = baseline
        stale = 0
        for rounds in range(self.options.max_rounds + 1):
            if (best.score or 0.0) >= self.options.target:
                return best, rounds, "target"
            if self.remaining <= 0 or self.out_of_budget is not None:
                return best, rounds, "budget"
            if rounds == self.options.max_rounds:
                break
            fresh = self._new_candidates(await self._propose(best, rounds + 1), best, rounds + 1)
            tried = [candidate for candidate in fresh if candidate.setting is not None]
            if not tried:
                over_budget = any(
                    (candidate.rejected or "").startswith(ErrorKind.BUDGET_EXCEEDED.value) for candidate in fresh
                )
                return best, rounds + 1, "budget" if over_budget else "no_candidates"

            improved = False
            for candidate in tried:
                if self.remaining <= 0 or self.out_of_budget is not None:
                    candidate.rejected = "not run: the budget was spent"
                    continue
                await self._evaluate(candidate)
                if _better(candidate, best):
                    best, improved = candidate, True
            if self.out_of_budget is not None:
                return best, rounds + 1, "budget"
            stale = 0 if improved else stale + 1
            if stale >= self.options.patience:
                return best, rounds + 1, "no_improvement"
        return best, self.options.max_rounds, "max_rounds"

    def _new_candidates(self, proposals: list[Proposal], parent: Candidate, round_number: int) -> list[Candidate]:
        seen = {candidate.setting.key() for candidate in self.candidates if candidate.setting is not None}
        fresh = []
        self.writer.flush()
        self._count_spending()
        for proposal in proposals:
            setting = proposal.setting
            rejected = proposal.rejected
            if setting is not None and setting.key() in seen:
                setting, rejected = None, f"already tried: {proposal.setting.describe()}"  # type: ignore[union-attr]
            candidate = Candidate(
                len(self.candidates), round_number, proposal.adaptation, proposal.description,
                setting, parent.number, rejected=rejected,
            )
            self.candidates.append(candidate)
            if setting is not None:
                seen.add(setting.key())
            fresh.append(candidate)
        return fresh

    async def _propose(self, best: Candidate, round_number: int) -> list[Proposal]:
        assert best.setting is not None and best.experiment is not None
        chosen = self.options.adaptations
        proposals: list[Proposal] = []
        failures = self._failures(best.experiment.experiment_id)
        if "rewrite" in chosen:
            with self._spending(f"rewrite-{round_number}"):
                proposals.append(await self._rewrite(best, failures))
        if "few_shot" in chosen and self.pool and self.remaining > 0:
            steps = build_steps(self.workflow, self.registry, self._overrides(best.setting))
            target = next(step for step in model_steps(steps) if step.name == self.step.name)
            try:
                with self._spending(f"examples-{round_number}"):
                    proposal = await adaptations.few_shot(
                        best.setting, registry=self.registry, router=self.router, workflow=self.workflow,
                        steps=steps, target=target, params=self.params, pool=self.pool,
                        row_inputs=self._row_inputs, missed={str(row["expected"]) for row in failures},
                        count=self.options.few_shot, seed=self.options.seed + round_number,
                    )
            except CallError as error:
                proposal = self._failed_proposal("few_shot", "few-shot examples", error)
            proposals.append(proposal)
        if "model" in chosen:
            proposals.extend(adaptations.other_models(best.setting, self.settings, self.route))
        if "threshold" in chosen:
            proposals.extend(adaptations.thresholds(best.setting, self.workflow, self.params))
        return proposals

    async def _rewrite(self, best: Candidate, failures: list[dict[str, Any]]) -> Proposal:
        assert best.setting is not None and best.experiment is not None
        prompt = self._rewrite_prompt()
        try:
            return await adaptations.rewrite(
                best.setting, registry=self.registry, router=self.router, rewrite_prompt=prompt,
                route=self.options.rewrite_route or self.route, score=best.score or 0.0,
                rows=best.experiment.rows, failures=failures,
            )
        except CallError as error:
            return self._failed_proposal("rewrite", f"rewrite by {prompt.reference}", error)

    def _rewrite_prompt(self) -> PromptVersion:
        """Return the rewrite prompt, checked to read only what a rewrite gives it.

        Raises:
            ConfigError: the prompt does not exist, or reads other variables.
        """
        if self.options.rewrite_prompt:
            prompt = self.registry.get(self.options.rewrite_prompt)
        else:
            prompt = adaptations.builtin_rewrite_prompt(self.registry)
        unknown = sorted(set(prompt.content.variables) - adaptations.REWRITE_VARIABLES)
        if unknown:
            raise ConfigError(
                f"rewrite prompt {prompt.reference} reads {', '.join(unknown)}, which a rewrite does not "
                f"give; it may read only {', '.join(sorted(adaptations.REWRITE_VARIABLES))}"
            )
        return prompt

    def _failed_proposal(self, adaptation: str, description: str, error: CallError) -> Proposal:
        """Turn a model call that failed while preparing a candidate into a rejected proposal.

        A call the budget could not cover rejects only this proposal: cheaper
        candidates may still fit what is left.
        """
        return Proposal(adaptation, description, None, rejected=f"{error.kind.value}: {error}")

    def _spending(self, name: str) -> AbstractContextManager[Any]:
        """Open a run, inside the loop's trace, whose calls may spend only what the budget has left."""
        return start_run(name, run_id=f"{self.loop_id}-{name}", budget_usd=max(self.remaining, 1e-9))

    def _row_inputs(self, row: dict[str, Any]) -> dict[str, Any]:
        return {name: row[column] for name, column in self.workflow.inputs.items()} if self.workflow.inputs else dict(row)

    def _failures(self, experiment_id: str) -> list[dict[str, Any]]:
        """Return the development rows the experiment scored lowest, worst first."""
        query = (
            select(experiment_rows.c.inputs, experiment_rows.c.expected, experiment_rows.c.output, experiment_rows.c.score)
            .where(experiment_rows.c.experiment_id == experiment_id, experiment_rows.c.score < 1.0)
            .order_by(experiment_rows.c.score, experiment_rows.c.row_key)
        )
        with self.store.engine.connect() as connection:
            rows = [dict(row._mapping) for row in connection.execute(query)]
        return rows[: max(FAILURES_SHOWN, self.options.few_shot * 4)]

    def _overrides(self, setting: Setting) -> dict[str, str]:
        return {**self.overrides, self.step.name: setting.prompt.reference}

    async def _evaluate(self, candidate: Candidate, split: Literal["dev", "heldout"] = "dev") -> None:
        """Run the candidate's setting as an experiment on the development or held-out rows."""
        assert candidate.setting is not None
        setting = candidate.setting
        workflow = with_route(self.workflow, setting.route, only=self.step.name) if setting.route else self.workflow
        try:
            experiment = await run_experiment(
                workflow, self.development if split == "dev" else self.heldout, settings=self.settings, router=self.router,
                store=self.store, writer=self.writer, params={**self.params, **dict(setting.params)},
                scorers=self.scorers, concurrency=self.options.concurrency,
                prompt_overrides=self._overrides(setting), budget_usd=max(self.remaining, 1e-9),
                name=f"improve {self.workflow.name} #{candidate.number} {split}: {candidate.description}"[:200],
                details={"improve": {
                    "loop_id": self.loop_id, "candidate": candidate.number, "round": candidate.round,
                    "adaptation": candidate.adaptation, "parent": candidate.parent, "split": split,
                    "setting": setting.describe(),
                }},
            )
        except (ConfigError, WorkflowError) as error:
            # A candidate whose prompt cannot render on some row is rejected, not fatal,
            # unless it is the prompt the loop started from.
            if candidate.number == 0 or split != "dev":
                raise
            candidate.rejected = f"failed: {error}"
            return
        finally:
            self.writer.flush()
            self._count_spending()
        errors = self._row_errors(experiment.run_ids)
        marker = f": {ErrorKind.BUDGET_EXCEEDED.value}: "
        budget_errors = [error for error in errors if marker in error]
        if budget_errors:
            self.out_of_budget = budget_errors[0]
            # Rows the budget stopped score 0 without a model reply, so the
            # experiment must not pass for a finished result.
            mark_experiment(self.store, experiment.experiment_id, status="stopped_by_budget")
            if split == "dev":
                candidate.rejected = f"stopped by the budget on {len(budget_errors)} rows"
        if split == "dev" and experiment.errors == experiment.rows and not candidate.rejected:
            candidate.rejected = f"every row failed, the first with: {errors[0] if errors else 'no message'}"
        if split == "dev":
            candidate.experiment = experiment
        else:
            candidate.heldout = experiment

    def _row_errors(self, run_ids: list[str]) -> list[str]:
        """Return the errors of the failed rows of `run_ids`, first rows first."""
        return [row["error"] for run_id in run_ids for row in all_rows(self.store, run_id) if row["error"]]

    def _count_spending(self) -> None:
        """Read what every call of the loop's trace has cost so far from the store."""
        spend = trace_spend(self.store, self.trace_id)
        self.spent = spend["cost_usd_priced"]
        self.unpriced = spend["unpriced_calls"]


    async def _confirm(self, result: ImproveResult) -> None:
        """Run the start and the best on the held-out rows; label a better prompt version."""
        best, baseline = result.best, result.baseline

        if best is baseline:
            result.verdict = "no candidate scored higher than the current prompt on the development rows"
            return
        if self.remaining <= 0:
            result.verdict = "the budget was spent before the held-out rows could confirm the best candidate"
            return

        try:
            await self._evaluate(baseline, "heldout")
            await self._evaluate(best, "heldout")
        except (ConfigError, WorkflowError) as error:
            result.verdict = f"the held-out check failed, so no label moved: {error}"
            return
        if self.out_of_budget is not None:
            result.verdict = "the budget ran out during the held-out check, so no label moved"
            return
        assert baseline.heldout is not None and best.heldout is not None
        comparison = compare_experiments(self.store, baseline.heldout.experiment_id, best.heldout.experiment_id)
        result.heldout = comparison
        difference = comparison.paired.difference
        assert best.setting is not None and baseline.setting is not None

        if difference <= 0:
            result.verdict = (
                f"candidate #{best.number} did not beat the current prompt on the held-out rows "
                f"(difference {difference:+.3f}); no label moved"
            )
            return
        if best.setting.prompt.version == baseline.setting.prompt.version:
            result.verdict = (
                f"candidate #{best.number} keeps prompt {best.setting.prompt.reference} and scores "
                f"{difference:+.3f} higher on the held-out rows with: {best.setting.describe()}"
            )
            return

        self.registry.set_label(best.setting.prompt.name, best.setting.prompt.version, self.options.label, moved_by=adaptations.AUTHOR)
        result.labelled = best.setting.prompt
        result.verdict = (
            f"{best.setting.prompt.reference} beat {baseline.setting.prompt.reference} on the held-out rows "
            f"by {difference:+.3f} and now has the label {self.options.label!r}"
        )


def _better(candidate: Candidate, best: Candidate) -> bool:
    """Higher score wins; at an equal score, a lower known cost does."""
    if candidate.rejected is not None:
        return False
    if candidate.score is None or best.score is None:
        return candidate.score is not None
    if candidate.score > best.score + 1e-12:
        return True
    cost, best_cost = candidate.experiment.cost_usd, best.experiment.cost_usd  # type: ignore[union-attr]
    return abs(candidate.score - best.score) <= 1e-12 and cost is not None and best_cost is not None and cost < best_cost

