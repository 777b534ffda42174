"""The changes the improvement loop tries: a rewritten prompt, few-shot examples, another model, a threshold.

Each function takes the setting that scores best so far and returns new
settings to try. A prompt change becomes a new version in the registry, with
the version it came from as parent. A model or threshold change keeps the
prompt version and changes how the workflow runs it.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from trunkline.config import Settings
from trunkline.errors import ConfigError, WorkflowError
from trunkline.prompts import PromptRegistry, PromptVersion, render
from trunkline.prompts.files import read_prompt_file
from trunkline.prompts.versions import ChatTemplate, PromptContent, PromptMetadata
from trunkline.routing.router import Router
from trunkline.workflows.spec import StepSpec, WorkflowSpec
from trunkline.workflows.steps import ModelStep, Step

#: Room for a whole prompt in the rewrite's reply; a shorter limit cuts the JSON.
REWRITE_MAX_TOKENS = 768
AUTHOR = "trunkline improve"
#: The variables `rewrite` gives the rewrite prompt.
REWRITE_VARIABLES = frozenset({"purpose", "variables", "score", "rows", "messages", "failures"})
_END_RAW = re.compile(r"{%-?\s*endraw\s*-?%}")
#: The name the packaged rewrite prompt is registered under.
REWRITE_PROMPT = "trunkline/rewrite"


@dataclass(frozen=True)
class Setting:
    """The configuration a candidate runs: a prompt version, an optional route, and parameter values."""

    prompt: PromptVersion
    #: A route or deployment for the model step instead of the workflow's own.
    route: str | None = None
    params: tuple[tuple[str, Any], ...] = ()
    #: The content before few-shot examples were added, so that a later
    #: choice of examples replaces them instead of piling up.
    base: PromptContent | None = None

    def key(self) -> tuple[str, str | None, tuple[tuple[str, Any], ...]]:
        return (self.prompt.reference, self.route, self.params)

    def describe(self) -> str:
        parts = [self.prompt.reference]
        if self.route:
            parts.append(f"route {self.route}")
        parts.extend(f"{name}={value}" for name, value in self.params)
        return ", ".join(parts)


@dataclass
class Proposal:
    """A setting to try and what changed, or why no setting came out."""

    adaptation: str
    description: str
    setting: Setting | None
    #: Why no setting came out of it, such as a rewrite that broke a template.
    rejected: str | None = None


def builtin_rewrite_prompt(registry: PromptRegistry) -> PromptVersion:
    """Return the packaged rewrite prompt, registering it (idempotently) on first use."""
    folder = Path(str(resources.files("trunkline.prompts") / "builtin"))
    _, content = read_prompt_file(folder / "rewrite.yaml", folder)
    version, _ = registry.create_version(REWRITE_PROMPT, content, author=AUTHOR)
    return version


async def rewrite(
    setting: Setting,
    *,
    registry: PromptRegistry,
    router: Router,
    rewrite_prompt: PromptVersion,
    route: str,
    score: float,
    rows: int,
    failures: list[dict[str, Any]],
) -> Proposal:
    """Ask a model, through the rewrite prompt, for a better version of the setting's prompt."""
    parent = setting.prompt
    values = {
        "purpose": parent.content.metadata.purpose,
        "variables": sorted(parent.content.variables),
        "score": f"{score:.3f}",
        "rows": rows,
        "messages": json.dumps([message.model_dump() for message in parent.content.messages], indent=1),
        "failures": failures,
    }
    result = await router.complete(
        render(rewrite_prompt, values),
        route=route,
        output=rewrite_prompt.content.output_schema,
        max_tokens=REWRITE_MAX_TOKENS,
        prompt_name=rewrite_prompt.name,
        prompt_version=str(rewrite_prompt.version),
    )
    description = f"rewrite by {rewrite_prompt.reference}"
    reply = result.output if isinstance(result.output, dict) else {}
    note = str(reply.get("note", "")).strip()
    try:
        content = PromptContent(
            messages=reply.get("messages") or [],
            variables=parent.content.variables,
            output_schema=parent.content.output_schema,
            metadata=parent.content.metadata.model_copy(update={"note": f"rewritten: {note}"[:2000]}),
        )
    except (ValidationError, ConfigError) as error:
        reason = str(error).splitlines()[0] if isinstance(error, ConfigError) else _first_problem(error)
        return Proposal("rewrite", description, None, rejected=f"unusable rewrite: {reason}")
    if content.messages == parent.content.messages:
        return Proposal("rewrite", description, None, rejected="the rewrite changed no message")
    version, _ = registry.create_version(parent.name, content, author=AUTHOR, parent_version=parent.version)
    return Proposal("rewrite", description, Setting(version, setting.route, setting.params))


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem["loc"]) or "reply"
    return f"{where}: {problem['msg']}"


async def few_shot(
    setting: Setting,
    *,
    registry: PromptRegistry,
    router: Router,
    workflow: WorkflowSpec,
    steps: list[Step],
    target: ModelStep,
    params: dict[str, Any],
    pool: list[dict[str, Any]],
    row_inputs: Any,
    missed: set[str],
    count: int,
    seed: int,
) -> Proposal:
    """Add `count` worked examples from the pool rows right after the prompt's leading system messages.

    Rows whose expected value the current setting got wrong on the
    development rows come first, one per expected value. Each example is
    the user message the model would see for that row, answered with the
    row's expected value in the step's output format.
    """
    parent = setting.prompt
    base = setting.base or parent.content
    chosen = _choose_examples(pool, workflow.expected or "", missed, count, seed)
    description = f"{len(chosen)} few-shot examples"
    if not chosen:
        return Proposal("few_shot", description, None, rejected="no training rows to take examples from")
    pairs: list[ChatTemplate] = []
    for row in chosen:
        values = {**params, **dict(setting.params), **row_inputs(row)}
        try:
            values = await _values_before(steps, target, values, router)
            rendered = ModelStep(target.spec, workflow, replace_content(parent, base)).messages(values)
        except (WorkflowError, ConfigError) as error:
            return Proposal("few_shot", description, None, rejected=f"cannot prepare an example: {error}")
        question = next((message for message in reversed(rendered) if message.role == "user"), None)
        if question is None:
            return Proposal("few_shot", description, None, rejected=f"{parent.reference} has no user message")
        answer = _expected_reply(row[workflow.expected or ""], target.output_schema(values))
        pairs.append(ChatTemplate(role="user", content=_literal(question.content)))
        pairs.append(ChatTemplate(role="assistant", content=_literal(answer)))
    messages = list(base.messages)
    # After the system messages, so that turns the prompt itself repeats per
    # row (retrieved neighbours, say) stay next to the question.
    first_turn = next((index for index, message in enumerate(messages) if message.role != "system"), len(messages))
    messages[first_turn:first_turn] = pairs
    content = base.model_copy(
        update={
            "messages": messages,
            "metadata": base.metadata.model_copy(
                update={"note": f"{len(chosen)} few-shot examples chosen from training rows (seed {seed})"}
            ),
        }
    )
    try:
        content = PromptContent.model_validate(content.model_dump())
    except (ValidationError, ConfigError) as error:
        reason = str(error).splitlines()[0] if isinstance(error, ConfigError) else _first_problem(error)
        return Proposal("few_shot", description, None, rejected=f"the examples break the prompt: {reason}")
    version, _ = registry.create_version(parent.name, content, author=AUTHOR, parent_version=parent.version)
    if version.version == parent.version:
        return Proposal("few_shot", description, None, rejected="the same examples as before")
    return Proposal("few_shot", description, Setting(version, setting.route, setting.params, base=base))


def replace_content(version: PromptVersion, content: PromptContent) -> PromptVersion:
    return version.model_copy(update={"content": content})


def _choose_examples(
    pool: list[dict[str, Any]], expected: str, missed: set[str], count: int, seed: int
) -> list[dict[str, Any]]:
    shuffled = list(pool)
    random.Random(seed).shuffle(shuffled)
    shuffled.sort(key=lambda row: str(row.get(expected)) not in missed)
    chosen: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in shuffled:
        label = str(row.get(expected))
        if label not in seen:
            chosen.append(row)
            seen.add(label)
        if len(chosen) == count:
            break
    return chosen


async def _values_before(steps: list[Step], target: ModelStep, values: dict[str, Any], router: Router) -> dict[str, Any]:
    """Run the steps before `target` on one row, to see the message the model would get."""
    for step in steps:
        if step is target or target in getattr(step, "stages", []):
            return values
        result = await step.run(values, router)
        values = {**values, **result.values}
    return values


def _expected_reply(expected: Any, schema: type[BaseModel] | dict[str, Any] | None) -> str:
    """Format the expected value as the model should reply: the lone field of an object schema, or text."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        fields = list(schema.model_fields)
        return json.dumps({fields[0]: expected}) if len(fields) == 1 else str(expected)
    if isinstance(schema, dict) and schema.get("type") == "object":
        required = schema.get("required") or list(schema.get("properties", {}))
        if len(required) == 1:
            return json.dumps({required[0]: expected})
    return str(expected)


def _literal(text: str) -> str:
    """Keep an example's text from being read as template syntax."""
    return "{% raw %}" + _END_RAW.sub("", text) + "{% endraw %}"


def other_models(setting: Setting, settings: Settings, route: str) -> list[Proposal]:
    """Propose each other deployment of the step's route, the downgrade ones included."""
    if setting.route is not None:
        return []
    policy = settings.route(route)
    first = policy.deployments[0]
    others = dict.fromkeys(name for name in [*policy.deployments[1:], *policy.downgrade_to] if name != first)
    return [
        Proposal("model", f"deployment {name} instead of {first}", replace(setting, route=name))
        for name in others
    ]


def thresholds(setting: Setting, workflow: WorkflowSpec, params: dict[str, Any], step: float = 0.1) -> list[Proposal]:
    """Propose each cascade threshold parameter one step lower and one step higher."""
    proposals = []
    current = dict(setting.params)
    for spec in _cascades(workflow.steps):
        name = spec.threshold
        if not isinstance(name, str):
            continue
        value = float(current.get(name, params.get(name, 0.5)))
        for moved in (round(value - step, 4), round(value + step, 4)):
            if 0.0 <= moved <= 1.0:
                updated = tuple(sorted({**current, name: moved}.items()))
                proposals.append(
                    Proposal("threshold", f"{name} {value:g} -> {moved:g}", replace(setting, params=updated))
                )
    return proposals


def _cascades(specs: list[StepSpec]) -> list[StepSpec]:
    return [spec for spec in specs if spec.kind == "cascade"]


def imported_prompt(workflow: WorkflowSpec, spec: StepSpec, registry: PromptRegistry) -> PromptVersion:
    """Register a model step's template files as a prompt version, so that candidates can descend from it.

    Raises:
        WorkflowError: the step renders a whole message array (``messages``),
            which has no fixed list of messages to register.
    """
    if spec.messages:
        raise WorkflowError(
            f"step {spec.name!r} renders its messages from {spec.messages}, a template of a whole "
            "message array, which the improvement loop cannot rewrite message by message; register "
            "the prompt (trunkline prompts push DIR) and pass --prompt "
            f"{spec.name}=NAME@VERSION, or set prompt_ref in the workflow"
        )
    messages = []
    for role, relative in (("system", spec.system), ("user", spec.prompt)):
        if relative:
            messages.append(ChatTemplate(role=role, content=workflow.resolve(relative).read_text(encoding="utf-8")))
    content = PromptContent(
        messages=messages,
        metadata=PromptMetadata(purpose=workflow.description, note=f"imported from step {spec.name} of {workflow.name}"),
    )
    version, _ = registry.create_version(f"{workflow.name}/{spec.name}", content, author=AUTHOR)
    return version
