"""The improvement loop, over fake models whose replies depend on the prompt they receive."""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from trunkline.config import Settings
from trunkline.errors import ConfigError, WorkflowError
from trunkline.evals.adaptations import AUTHOR, REWRITE_PROMPT
from trunkline.evals.improve import ImprovementLoop, ImproveOptions, ImproveResult, split_rows
from trunkline.evals.scorers import ExactMatch
from trunkline.prompts import PromptContent, PromptRegistry
from trunkline.providers.fake import FakeReply, ScriptedModel
from trunkline.recording import recording
from trunkline.routing import Router
from trunkline.store.database import Store, open_store
from trunkline.store.tables import calls, experiments, spans
from trunkline.types.calls import ModelRequest
from trunkline.workflows import load_dataset, load_workflow

WORKFLOW = """
name = "mood"
output = "label"
expected = "gold"
route = "main"

[inputs]
message = "text"

[[steps]]
name = "classify"
kind = "model"
system = "system.jinja"
prompt = "prompt.jinja"
output = "label"
"""

# The same task behind a cascade. The tool stage always returns "unsure" with
# confidence 0.55, so the model stage runs only when the threshold is above that.
CASCADE_WORKFLOW = """
name = "mood-cascade"
output = "label"
expected = "gold"
route = "main"

[inputs]
message = "text"

[params]
cut = { default = 0.5, type = "float" }

[[steps]]
name = "answer"
kind = "cascade"
threshold = "cut"

  [[steps.stages]]
  name = "guess"
  kind = "tool"
  function = "tools:guess"

  [[steps.stages]]
  name = "classify"
  kind = "model"
  system = "system.jinja"
  prompt = "prompt.jinja"
  output = "label"
"""

TOOLS = """
def guess(message):
    return {"label": "unsure", "confidence": 0.55}
"""

SYSTEM = "Label the mood of a message as good, bad or mixed."
LABELS = ("good", "bad", "mixed")
REWRITE_SYSTEM_START = "You improve the prompts"
# The word in a rewritten prompt that makes the fake model return the right label.
CAREFUL = "CAREFUL"

# Each reply has 10 input and 4 output tokens. At 100 USD per million tokens
# both ways, a call costs 0.0014 USD.
PRICE_PER_MTOK = 100.0
CALL_COST = 14 * PRICE_PER_MTOK / 1e6


def write_workflow(folder: Path, text: str = WORKFLOW, rows: int = 30) -> Path:
    """Write the mood workflow with `rows` rows. Each message ends with its expected label."""
    folder.mkdir()
    (folder / "workflow.toml").write_text(text)
    (folder / "tools.py").write_text(TOOLS)
    (folder / "system.jinja").write_text(SYSTEM)
    (folder / "prompt.jinja").write_text("Message: {{ message }}")
    lines = ["text,gold"]
    for index in range(rows):
        label = LABELS[index % len(LABELS)]
        lines.append(f"note {index:02d} feels {label},{label}")
    (folder / "rows.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_workflow(tmp_path / "mood")


def priced_settings(*deployments: str) -> Settings:
    """Settings with priced fake deployments and a route `main` over them in order.

    A small output cap keeps each call's worst-case cost, which budgets
    reserve before sending, close to its real cost.
    """
    return Settings.model_validate(
        {
            "deployments": {
                name: {"provider": "fake", "model": f"{name}-model", "max_output_tokens": 16}
                for name in deployments
            },
            "routes": {
                "main": {
                    "deployments": list(deployments),
                    "backoff_base_s": 0.001,
                    "backoff_max_s": 0.002,
                    "max_repairs": 0,
                }
            },
            "default_route": "main",
            "prices": {
                f"{name}-model": {
                    "input_per_mtok": PRICE_PER_MTOK,
                    "output_per_mtok": PRICE_PER_MTOK,
                }
                for name in deployments
            },
        }
    )


def is_rewrite(request: ModelRequest) -> bool:
    return request.messages[0].content.startswith(REWRITE_SYSTEM_START)


def has_examples(request: ModelRequest) -> bool:
    return any(message.role == "assistant" for message in request.messages)


def is_careful(request: ModelRequest) -> bool:
    return any(CAREFUL in message.content for message in request.messages)


def always(request: ModelRequest) -> bool:
    return True


def never(request: ModelRequest) -> bool:
    return False


class MoodModel:
    """The reply rule of a fake model: the right label when `is_right(request)`, else "unsure".

    The right label is the last word of the last user message. Requests
    made through the rewrite prompt get the next reply of `rewrites`
    instead, and a rewrite request with none left fails the test.
    """

    def __init__(
        self, is_right: Callable[[ModelRequest], bool], rewrites: Iterable[dict[str, Any]] = ()
    ) -> None:
        self.is_right = is_right
        self.rewrites: deque[dict[str, Any]] = deque(rewrites)
        self.label_requests: list[ModelRequest] = []
        self.rewrite_requests: list[ModelRequest] = []

    def __call__(self, request: ModelRequest) -> FakeReply:
        if is_rewrite(request):
            self.rewrite_requests.append(request)
            assert self.rewrites, "the loop sent a rewrite request that the test did not expect"
            return FakeReply(json.dumps(self.rewrites.popleft()), input_tokens=10, output_tokens=4)
        self.label_requests.append(request)
        question = next(message for message in reversed(request.messages) if message.role == "user")
        label = question.content.split()[-1] if self.is_right(request) else "unsure"
        return FakeReply(label, input_tokens=10, output_tokens=4)


def careful_rewrite(number: int = 0) -> dict[str, Any]:
    """A usable rewrite reply that keeps the variable and adds the word the fake model wants."""
    return {
        "messages": [
            {"role": "system", "content": f"{SYSTEM} Be {CAREFUL} (draft {number})."},
            {"role": "user", "content": "Message: {{ message }}"},
        ],
        "note": "asked for care",
    }


def plain_rewrite(number: int) -> dict[str, Any]:
    """A usable rewrite reply that changes the wording but not what the fake model returns."""
    return {
        "messages": [
            {"role": "system", "content": f"{SYSTEM} Draft {number}."},
            {"role": "user", "content": "Message: {{ message }}"},
        ],
        "note": f"draft {number}",
    }


def options(**overrides: Any) -> ImproveOptions:
    values: dict[str, Any] = {
        "target": 1.0,
        "budget_usd": 1.0,
        "max_rounds": 3,
        "pool": 6,
        "few_shot": 3,
        "concurrency": 2,
        "patience": 3,
    }
    values.update(overrides)
    return ImproveOptions(**values)


async def run_loop(
    folder: Path,
    database: Path,
    models: dict[str, MoodModel],
    loop_options: ImproveOptions,
    *,
    prompt_overrides: dict[str, str] | None = None,
    before: Callable[[Store], None] | None = None,
) -> ImproveResult:
    """Run the loop over one scripted fake per deployment, recording into `database`.

    `before` runs on the open store before the loop starts, to register prompts.
    """
    spec = load_workflow(folder)
    dataset = load_dataset(folder / "rows.csv")
    settings = priced_settings(*models)
    providers = {
        name: ScriptedModel(default=rule, model=f"{name}-model") for name, rule in models.items()
    }
    router = Router(settings, providers=providers)
    with recording(url=f"sqlite:///{database}") as recorder:
        if before is not None:
            before(recorder.store)
        loop = ImprovementLoop(
            spec,
            dataset,
            settings=settings,
            router=router,
            store=recorder.store,
            writer=recorder.writer,
            params=spec.parameters(),
            scorers=[ExactMatch()],
            options=loop_options,
            prompt_overrides=prompt_overrides,
        )
        return await loop.run()


@contextmanager
def stored(database: Path) -> Iterator[Store]:
    """Open the store that a finished loop recorded into."""
    store = open_store(f"sqlite:///{database}")
    try:
        yield store
    finally:
        store.dispose()


def texts(rows: list[dict[str, Any]]) -> set[str]:
    return {row["text"] for row in rows}


# The split


def test_split_rows_disjoint_and_seeded(folder: Path) -> None:
    dataset = load_dataset(folder / "rows.csv")
    pool, development, heldout = split_rows(dataset, options(pool=6, holdout=0.3, seed=3))
    assert (len(pool), len(development), len(heldout)) == (6, 15, 9)
    assert not texts(pool) & texts(development)
    assert not texts(pool) & texts(heldout)
    assert not texts(development) & texts(heldout)
    assert texts(pool) | texts(development) | texts(heldout) == texts(dataset.rows)

    again = split_rows(dataset, options(pool=6, holdout=0.3, seed=3))
    assert again == (pool, development, heldout)
    other = split_rows(dataset, options(pool=6, holdout=0.3, seed=4))
    assert texts(other[2]) != texts(heldout)


def test_split_rows_no_pool_without_few_shot(folder: Path) -> None:
    dataset = load_dataset(folder / "rows.csv")
    pool, development, heldout = split_rows(dataset, options(adaptations=("rewrite",)))
    assert pool == []
    assert len(development) + len(heldout) == 30


def test_split_rows_too_few_rows(tmp_path: Path) -> None:
    folder = write_workflow(tmp_path / "small", rows=2)
    dataset = load_dataset(folder / "rows.csv")
    with pytest.raises(ConfigError, match="has 2 rows, which leaves 1 to score .* at least 5 are needed"):
        split_rows(dataset, options(pool=6))


# Stopping rules


async def test_target_met_at_start(folder: Path, tmp_path: Path) -> None:
    model = MoodModel(always)
    result = await run_loop(folder, tmp_path / "r.db", {"d0": model}, options(target=0.9))
    assert result.stop_reason == "target"
    assert result.rounds == 0
    assert [candidate.number for candidate in result.candidates] == [0]
    assert result.best is result.baseline
    assert result.baseline.score == 1.0
    assert model.rewrite_requests == []
    # Only the development rows ran. Nothing was better, so the held-out rows were not needed.
    assert len(model.label_requests) == result.split["development"]
    assert result.labelled is None
    assert "no candidate scored higher" in result.verdict


async def test_target_met_after_few_shot(folder: Path, tmp_path: Path) -> None:
    model = MoodModel(has_examples)
    database = tmp_path / "r.db"
    result = await run_loop(folder, database, {"d0": model}, options(adaptations=("few_shot",)))
    assert result.stop_reason == "target"
    assert result.rounds == 1
    assert result.baseline.score == 0.0
    assert result.best.adaptation == "few_shot"
    assert result.best.score == 1.0
    assert result.best.parent == 0

    start = result.baseline.setting.prompt
    with stored(database) as store:
        best = PromptRegistry(store).get(result.best.setting.prompt.reference)
    assert start.name == "mood/classify"
    assert best.name == "mood/classify"
    assert best.parent_version == start.version
    assert best.author == AUTHOR


async def test_max_rounds_stops_loop(folder: Path, tmp_path: Path) -> None:
    model = MoodModel(never, rewrites=[plain_rewrite(number) for number in range(2)])
    loop_options = options(adaptations=("rewrite",), max_rounds=2, patience=5)
    result = await run_loop(folder, tmp_path / "r.db", {"d0": model}, loop_options)
    assert result.stop_reason == "max_rounds"
    assert result.rounds == 2
    assert len(model.rewrite_requests) == 2
    adaptations = [candidate.adaptation for candidate in result.candidates]
    assert adaptations == ["baseline", "rewrite", "rewrite"]
    assert all(candidate.rejected is None for candidate in result.candidates)


async def test_no_improvement_after_patience(folder: Path, tmp_path: Path) -> None:
    model = MoodModel(never, rewrites=[plain_rewrite(number) for number in range(2)])
    loop_options = options(adaptations=("rewrite",), max_rounds=5, patience=2)
    result = await run_loop(folder, tmp_path / "r.db", {"d0": model}, loop_options)
    assert result.stop_reason == "no_improvement"
    assert result.rounds == 2
    assert len(model.rewrite_requests) == 2
    assert result.best is result.baseline


async def test_no_candidates_stops_loop(folder: Path, tmp_path: Path) -> None:
    # One deployment and no cascade: neither adaptation has anything to propose.
    model = MoodModel(never)
    loop_options = options(adaptations=("model", "threshold"))
    result = await run_loop(folder, tmp_path / "r.db", {"d0": model}, loop_options)
    assert result.stop_reason == "no_candidates"
    assert result.rounds == 1
    assert [candidate.number for candidate in result.candidates] == [0]


async def test_no_candidates_after_rejections(folder: Path, tmp_path: Path) -> None:
    # The only proposal of round 2 is the deployment that round 1 already tried.
    models = {"d0": MoodModel(never), "d1": MoodModel(never)}
    loop_options = options(adaptations=("model",), patience=5)
    result = await run_loop(folder, tmp_path / "r.db", models, loop_options)
    assert result.stop_reason == "no_candidates"
    assert result.rounds == 2
    repeated = result.candidates[-1]
    assert repeated.round == 2
    assert repeated.setting is None
    assert repeated.rejected.startswith("already tried")


async def test_budget_stops_loop(folder: Path, tmp_path: Path) -> None:
    # Without few-shot examples there is no pool, so 21 development rows
    # cost 0.0294 USD per candidate. The budget covers the start and about
    # three rounds, well short of the round limit.
    model = MoodModel(never, rewrites=[plain_rewrite(number) for number in range(10)])
    database = tmp_path / "r.db"
    budget = 0.15
    loop_options = options(adaptations=("rewrite",), budget_usd=budget, max_rounds=10, patience=10)
    result = await run_loop(folder, database, {"d0": model}, loop_options)

    query = select(calls.c.cost_usd, calls.c.price_missing).where(
        calls.c.trace_id == result.trace_id
    )
    with stored(database) as store, store.engine.connect() as connection:
        recorded = connection.execute(query).all()
    assert recorded
    assert not any(row.price_missing for row in recorded)
    total = sum(row.cost_usd for row in recorded)
    assert total <= budget
    assert result.spent_usd == pytest.approx(total)
    assert result.stop_reason == "budget"
    assert result.rounds < 10


async def test_budget_too_small_for_start(folder: Path, tmp_path: Path) -> None:
    # The budget is half a call, so the router rejects every row of the start.
    model = MoodModel(never)
    loop_options = options(adaptations=("rewrite",), budget_usd=CALL_COST / 2)
    database = tmp_path / "r.db"
    with pytest.raises(ConfigError, match="does not cover scoring the current prompt"):
        await run_loop(folder, database, {"d0": model}, loop_options)
    assert len(model.label_requests) == 0
    # Rows the budget stopped scored 0 without a model reply, so the experiment is not a finished result.
    with stored(database) as store, store.engine.connect() as connection:
        statuses = connection.execute(select(experiments.c.status)).scalars().all()
    assert statuses == ["stopped_by_budget"]


async def test_unpriced_deployment_stops_loop(folder: Path, tmp_path: Path) -> None:
    # With no price, no call can be checked against the budget, so the router rejects them all.
    unpriced = priced_settings("d0").model_copy(update={"prices": {}})
    model = MoodModel(always)
    spec = load_workflow(folder)
    router = Router(unpriced, providers={"d0": ScriptedModel(default=model, model="d0-model")})
    with recording(url=f"sqlite:///{tmp_path / 'r.db'}") as recorder:
        loop = ImprovementLoop(
            spec, load_dataset(folder / "rows.csv"), settings=unpriced, router=router,
            store=recorder.store, writer=recorder.writer, params=spec.parameters(),
            scorers=[ExactMatch()], options=options(adaptations=("model",)),
        )
        with pytest.raises(ConfigError, match="price"):
            await loop.run()
    assert model.label_requests == []


# Rewrites


async def test_rewrite_becomes_child_version(folder: Path, tmp_path: Path) -> None:
    model = MoodModel(is_careful, rewrites=[careful_rewrite()])
    database = tmp_path / "r.db"
    result = await run_loop(folder, database, {"d0": model}, options(adaptations=("rewrite",)))
    assert result.stop_reason == "target"
    assert result.best.adaptation == "rewrite"

    with stored(database) as store:
        registry = PromptRegistry(store)
        best = registry.get(result.best.setting.prompt.reference)
        rewrite_prompt = registry.get(REWRITE_PROMPT)
    assert best.name == "mood/classify"
    assert best.parent_version == result.baseline.setting.prompt.version
    assert CAREFUL in best.content.messages[0].content
    assert best.content.metadata.note == "rewritten: asked for care"
    assert rewrite_prompt.author == AUTHOR

    # The rewrite request carries the prompt's messages and the rows it got wrong.
    request_text = model.rewrite_requests[0].messages[-1].content
    assert "Message: {{ message }}" in request_text
    assert "got: unsure" in request_text


BROKEN_REWRITES = {
    "undeclared variable": (
        {
            "messages": [{"role": "user", "content": "{{ message }} from {{ author }}"}],
            "note": "added the author",
        },
        "unusable rewrite: .*author",
    ),
    "no messages": ({"messages": [], "note": "nothing left"}, "invalid_output"),
    "same messages": (
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": "Message: {{ message }}"},
            ],
            "note": "no change",
        },
        "the rewrite changed no message",
    ),
    # Valid Jinja2 over the declared variable, but rendering fails on every row.
    "fails to render": (
        {
            "messages": [{"role": "user", "content": "Message: {{ message.words[0] }}"}],
            "note": "first word",
        },
        "words",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_REWRITES))
async def test_broken_rewrite_rejected(folder: Path, tmp_path: Path, case: str) -> None:
    broken, reason = BROKEN_REWRITES[case]
    model = MoodModel(is_careful, rewrites=[broken, careful_rewrite()])
    database = tmp_path / "r.db"
    # The few-shot candidate gives round 1 something to run, but it does not help this model.
    loop_options = options(adaptations=("rewrite", "few_shot"))
    result = await run_loop(folder, database, {"d0": model}, loop_options)

    rejected = result.candidates[1]
    assert rejected.round == 1
    assert rejected.adaptation == "rewrite"
    # A rewrite that only fails when rendered is registered, then rejected when it runs.
    assert (rejected.setting is not None) == (case == "fails to render")
    assert rejected.experiment is None
    assert rejected.rejected is not None
    assert re.search(reason, rejected.rejected), rejected.rejected
    assert result.stop_reason == "target"
    assert result.rounds == 2
    assert result.best.adaptation == "rewrite"
    assert result.best.round == 2
    with stored(database) as store:
        versions = PromptRegistry(store).versions("mood/classify")
    notes = [version.content.metadata.note for version in versions]
    assert notes.count("rewritten: asked for care") == 1


# Few-shot examples


async def test_few_shot_examples_from_pool(folder: Path, tmp_path: Path) -> None:
    model = MoodModel(has_examples)
    database = tmp_path / "r.db"
    loop_options = options(adaptations=("few_shot",))
    result = await run_loop(folder, database, {"d0": model}, loop_options)
    pool, development, heldout = split_rows(load_dataset(folder / "rows.csv"), loop_options)

    with stored(database) as store:
        version = PromptRegistry(store).get(result.best.setting.prompt.reference)
    roles = [message.role for message in version.content.messages]
    # Three examples go between the system message and the row's own user message.
    assert roles == ["system", *["user", "assistant"] * 3, "user"]
    assert version.content.messages[-1].content == "Message: {{ message }}"
    questions = version.content.messages[1:-1:2]
    answers = version.content.messages[2:-1:2]
    example_texts = set()
    for question, answer in zip(questions, answers, strict=True):
        assert question.content.startswith("{% raw %}Message: ")
        text = question.content.removeprefix("{% raw %}Message: ").removesuffix("{% endraw %}")
        example_texts.add(text)
        assert answer.content == "{% raw %}" + text.split()[-1] + "{% endraw %}"
    assert example_texts <= texts(pool)
    assert not example_texts & texts(development)
    assert not example_texts & texts(heldout)
    # One example per expected label.
    assert {text.split()[-1] for text in example_texts} == set(LABELS)

    # Pool rows are examples only, so no request labels one of them.
    requested = {
        request.messages[-1].content.removeprefix("Message: ") for request in model.label_requests
    }
    assert not requested & texts(pool)
    assert requested == texts(development) | texts(heldout)


async def test_few_shot_replaces_earlier_examples(folder: Path, tmp_path: Path) -> None:
    def is_right(request: ModelRequest) -> bool:
        # Examples help on a third of the rows only, so the loop goes on after round 1.
        return has_examples(request) and request.messages[-1].content.endswith("good")

    database = tmp_path / "r.db"
    loop_options = options(adaptations=("few_shot",), max_rounds=3, patience=5)
    result = await run_loop(folder, database, {"d0": MoodModel(is_right)}, loop_options)
    first = result.candidates[1]
    assert first.score == pytest.approx(1 / 3)
    later = [
        candidate for candidate in result.candidates if candidate.round > 1 and candidate.setting
    ]
    assert later, "no few-shot candidate was built on the first one"
    for candidate in later:
        assert candidate.parent == first.number
        messages = candidate.setting.prompt.content.messages
        # Examples for the new round replace those of the parent instead of adding to them.
        assert sum(message.role == "assistant" for message in messages) == 3
        assert candidate.setting.prompt.parent_version == first.setting.prompt.version


# The candidate label


async def test_label_moves_when_heldout_confirms(folder: Path, tmp_path: Path) -> None:
    model = MoodModel(has_examples)
    database = tmp_path / "r.db"
    result = await run_loop(folder, database, {"d0": model}, options(adaptations=("few_shot",)))
    assert result.heldout is not None
    assert result.heldout.paired.difference == pytest.approx(1.0)
    assert result.labelled == result.best.setting.prompt

    with stored(database) as store:
        registry = PromptRegistry(store)
        labelled = registry.get("mood/classify:candidate")
        moves = registry.label_history("mood/classify", "candidate")
    assert labelled.version == result.best.setting.prompt.version
    assert len(moves) == 1
    assert moves[0].moved_by == "trunkline improve"
    assert moves[0].from_version is None
    assert moves[0].to_version == result.best.setting.prompt.version
    assert "now has the label 'candidate'" in result.verdict


async def test_label_stays_when_heldout_ties(folder: Path, tmp_path: Path) -> None:
    loop_options = options(adaptations=("few_shot",))
    _, _, heldout = split_rows(load_dataset(folder / "rows.csv"), loop_options)
    heldout_questions = {f"Message: {text}" for text in texts(heldout)}

    def is_right(request: ModelRequest) -> bool:
        # Right on every held-out row whatever the prompt, so the best cannot beat the start there.
        return request.messages[-1].content in heldout_questions or has_examples(request)

    def label_start(store: Store) -> None:
        from trunkline.evals.adaptations import imported_prompt

        spec = load_workflow(folder)
        registry = PromptRegistry(store)
        start = imported_prompt(spec, spec.steps[0], registry)
        registry.set_label(start.name, start.version, "candidate", moved_by="tester")

    database = tmp_path / "r.db"
    models = {"d0": MoodModel(is_right)}
    result = await run_loop(folder, database, models, loop_options, before=label_start)
    assert result.best.adaptation == "few_shot"
    assert result.best.score > result.baseline.score
    assert result.heldout is not None
    assert result.heldout.paired.difference == 0.0
    assert result.labelled is None
    assert "did not beat the current prompt on the held-out rows" in result.verdict

    with stored(database) as store:
        registry = PromptRegistry(store)
        labelled = registry.get("mood/classify:candidate")
        moves = registry.label_history("mood/classify", "candidate")
    assert labelled.version == result.baseline.setting.prompt.version
    assert [move.moved_by for move in moves] == ["tester"]


# Model and threshold adaptations


async def test_model_adaptation_picks_other_deployment(folder: Path, tmp_path: Path) -> None:
    models = {"d0": MoodModel(never), "d1": MoodModel(always)}
    database = tmp_path / "r.db"
    result = await run_loop(folder, database, models, options(adaptations=("model",)))
    assert result.stop_reason == "target"
    best = result.best
    assert best.adaptation == "model"
    assert best.description == "deployment d1 instead of d0"
    assert best.setting.route == "d1"
    assert best.setting.prompt == result.baseline.setting.prompt

    def deployments(run_ids: list[str]) -> set[str]:
        query = select(calls.c.deployment).where(calls.c.run_id.in_(run_ids))
        with stored(database) as store, store.engine.connect() as connection:
            return set(connection.execute(query).scalars())

    assert deployments(result.baseline.experiment.run_ids) == {"d0"}
    assert deployments(best.experiment.run_ids) == {"d1"}
    # The held-out rows confirm it, but the prompt version is unchanged, so no label moves.
    assert result.heldout.paired.difference == pytest.approx(1.0)
    assert result.labelled is None
    assert "keeps prompt mood/classify@1" in result.verdict
    assert "route d1" in result.verdict


async def test_threshold_adaptation_moves_parameter(tmp_path: Path) -> None:
    folder = write_workflow(tmp_path / "cascade", CASCADE_WORKFLOW)
    model = MoodModel(always)
    database = tmp_path / "r.db"
    result = await run_loop(folder, database, {"d0": model}, options(adaptations=("threshold",)))
    assert result.stop_reason == "target"
    proposed = [candidate.description for candidate in result.candidates[1:]]
    assert proposed == ["cut 0.5 -> 0.4", "cut 0.5 -> 0.6"]
    assert result.baseline.score == 0.0
    assert result.best.setting.params == (("cut", 0.6),)
    assert result.best.score == 1.0

    best_id = result.best.experiment.experiment_id
    query = select(experiments.c.details).where(experiments.c.experiment_id == best_id)
    with stored(database) as store, store.engine.connect() as connection:
        details = connection.execute(query).scalar_one()
    assert details["params"]["cut"] == 0.6
    assert details["improve"]["loop_id"] == result.loop_id
    assert details["improve"]["adaptation"] == "threshold"


# Tracing


async def test_loop_is_one_trace(folder: Path, tmp_path: Path) -> None:
    model = MoodModel(has_examples, rewrites=[plain_rewrite(0)])
    database = tmp_path / "r.db"
    loop_options = options(adaptations=("rewrite", "few_shot"))
    result = await run_loop(folder, database, {"d0": model}, loop_options)
    assert result.heldout is not None
    call_columns = (calls.c.trace_id, calls.c.span_id, calls.c.prompt_name)
    with stored(database) as store, store.engine.connect() as connection:
        span_rows = connection.execute(select(spans)).mappings().all()
        call_rows = connection.execute(select(*call_columns)).all()

    assert {row["trace_id"] for row in span_rows} == {result.trace_id}
    assert {row.trace_id for row in call_rows} == {result.trace_id}
    roots = [row for row in span_rows if row["parent_span_id"] is None]
    assert len(roots) == 1
    loop_span = roots[0]
    assert loop_span["run_id"] == result.loop_id
    assert loop_span["attributes"]["stop_reason"] == "target"

    by_id = {row["span_id"]: row for row in span_rows}
    for row in span_rows:
        chain = [row["span_id"]]
        parent = row["parent_span_id"]
        while parent is not None and len(chain) <= len(span_rows):
            chain.append(parent)
            parent = by_id[parent]["parent_span_id"]
        assert chain[-1] == loop_span["span_id"], f"span {row['name']} does not reach the loop span"

    run_spans = {row["run_id"] for row in span_rows if row["kind"] == "run"}
    experiment_run_ids = {
        run_id
        for candidate in result.candidates
        for experiment in (candidate.experiment, candidate.heldout)
        if experiment is not None
        for run_id in experiment.run_ids
    }
    # The start and the best on both parts, and the rewrite candidate on the development rows.
    assert len(experiment_run_ids) == 5
    assert experiment_run_ids <= run_spans
    # The rewrite call's span is one of the spans checked above.
    rewrite_spans = [row.span_id for row in call_rows if row.prompt_name == REWRITE_PROMPT]
    assert len(rewrite_spans) == 1
    assert rewrite_spans[0] in by_id


# Invalid input


@pytest.mark.parametrize("target", [-0.1, 1.5, float("nan")])
def test_target_outside_range(target: float) -> None:
    with pytest.raises(ConfigError, match="--target is a score from 0 to 1"):
        options(target=target).check()


@pytest.mark.parametrize("budget", [0.0, -1.0, float("nan")])
def test_budget_not_positive(budget: float) -> None:
    with pytest.raises(ConfigError, match="--budget must be a finite amount above 0 USD"):
        options(budget_usd=budget).check()


def test_unknown_adaptation() -> None:
    with pytest.raises(ConfigError, match="unknown adaptation telepathy; choose from rewrite"):
        options(adaptations=("rewrite", "telepathy")).check()


async def test_loop_checks_options_first(folder: Path, tmp_path: Path) -> None:
    model = MoodModel(always)
    with pytest.raises(ConfigError, match="--target"):
        await run_loop(folder, tmp_path / "r.db", {"d0": model}, options(target=2.0))
    assert model.label_requests == []


TWO_MODEL_STEPS = WORKFLOW + """
[[steps]]
name = "explain"
kind = "model"
prompt = "prompt.jinja"
output = "reason"
"""


async def test_two_model_steps_need_step(tmp_path: Path) -> None:
    folder = write_workflow(tmp_path / "two", TWO_MODEL_STEPS)
    model = MoodModel(always)
    several = r"has 2 model steps \(classify, explain\); name the one to improve with --step"
    with pytest.raises(WorkflowError, match=several):
        await run_loop(folder, tmp_path / "r.db", {"d0": model}, options())
    unknown = "has no model step 'summary'; its model steps: classify, explain"
    with pytest.raises(WorkflowError, match=unknown):
        await run_loop(folder, tmp_path / "r2.db", {"d0": model}, options(step="summary"))
    result = await run_loop(folder, tmp_path / "r3.db", {"d0": model}, options(step="classify"))
    assert result.baseline.setting.prompt.name == "mood/classify"


async def test_model_adaptation_moves_only_chosen_step(tmp_path: Path) -> None:
    folder = write_workflow(tmp_path / "two", TWO_MODEL_STEPS)
    models = {"d0": MoodModel(never), "d1": MoodModel(always)}
    database = tmp_path / "r.db"
    loop_options = options(adaptations=("model",), step="classify")
    result = await run_loop(folder, database, models, loop_options)
    assert result.best.setting.route == "d1"

    query = select(calls.c.prompt_name, calls.c.deployment).where(
        calls.c.run_id.in_(result.best.experiment.run_ids)
    )
    with stored(database) as store, store.engine.connect() as connection:
        by_prompt: dict[str, set[str]] = {}
        for row in connection.execute(query):
            by_prompt.setdefault(row.prompt_name, set()).add(row.deployment)
    assert by_prompt["mood/classify"] == {"d1"}
    # The other model step was not the one being improved, so it keeps its route.
    assert by_prompt["mood/explain"] == {"d0"}


CHAT_WORKFLOW = WORKFLOW.replace(
    'system = "system.jinja"\nprompt = "prompt.jinja"', 'messages = "chat.jinja"'
)


def write_chat_workflow(tmp_path: Path) -> Path:
    folder = write_workflow(tmp_path / "chat", CHAT_WORKFLOW)
    (folder / "chat.jinja").write_text(
        '[{"role": "system", "content": ' + json.dumps(SYSTEM) + '}, '
        '{"role": "user", "content": {{ ("Message: " ~ message) | tojson }}}]'
    )
    return folder


async def test_messages_template_needs_registered_prompt(tmp_path: Path) -> None:
    folder = write_chat_workflow(tmp_path)
    model = MoodModel(always)
    with pytest.raises(WorkflowError) as raised:
        await run_loop(folder, tmp_path / "r.db", {"d0": model}, options())
    message = str(raised.value)
    assert "step 'classify' renders its messages from chat.jinja" in message
    assert "trunkline prompts push DIR" in message
    assert "--prompt classify=NAME@VERSION" in message
    assert model.label_requests == []


async def test_messages_template_with_registered_prompt(tmp_path: Path) -> None:
    from trunkline.prompts import ChatTemplate, PromptContent

    folder = write_chat_workflow(tmp_path)

    def register(store: Store) -> None:
        content = PromptContent(
            messages=[
                ChatTemplate(role="system", content=SYSTEM),
                ChatTemplate(role="user", content="Message: {{ message }}"),
            ]
        )
        PromptRegistry(store).create_version("mood/chat", content, author="tester")

    model = MoodModel(has_examples)
    database = tmp_path / "r.db"
    result = await run_loop(
        folder, database, {"d0": model}, options(adaptations=("few_shot",)),
        prompt_overrides={"classify": "mood/chat@1"}, before=register,
    )
    assert result.stop_reason == "target"
    assert result.baseline.setting.prompt.reference == "mood/chat@1"
    assert result.best.setting.prompt.name == "mood/chat"
    assert result.best.setting.prompt.parent_version == 1


async def test_workflow_without_expected(tmp_path: Path) -> None:
    folder = write_workflow(tmp_path / "open", WORKFLOW.replace('expected = "gold"\n', ""))
    with pytest.raises(ConfigError, match="names no expected column"):
        await run_loop(folder, tmp_path / "r.db", {"d0": MoodModel(always)}, options())


async def test_loop_rejects_too_few_rows(tmp_path: Path) -> None:
    folder = write_workflow(tmp_path / "small", rows=2)
    model = MoodModel(always)
    with pytest.raises(ConfigError, match="at least 5 are needed"):
        await run_loop(folder, tmp_path / "r.db", {"d0": model}, options())
    assert model.label_requests == []


@pytest.mark.parametrize("reference", ["missing@1", "reads-other"])
async def test_bad_rewrite_prompt_rejected_before_spending(folder: Path, tmp_path: Path, reference: str) -> None:
    database = tmp_path / "r.db"
    with stored(database) as store:
        PromptRegistry(store).create_version(
            "reads-other", PromptContent.model_validate({"messages": [{"role": "user", "content": "{{ shots }}"}]})
        )
    model = MoodModel(never)
    loop_options = options(adaptations=("rewrite",), rewrite_prompt=reference)
    with pytest.raises(ConfigError, match="missing|reads shots, which a rewrite does not give"):
        await run_loop(folder, database, {"d0": model}, loop_options)
    assert len(model.label_requests) == 0
