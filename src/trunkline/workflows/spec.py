"""Workflow files: TOML or YAML declaring inputs, parameters and steps.

A minimal file::

    name = "intent-triage"
    data = "sample.csv"          # default dataset, relative to this file
    output = "intent"            # the value compared with the expected column
    expected = "category"

    [inputs]                     # variable = dataset column
    message = "text"

    [params]                     # overridable with --param KEY=VALUE
    memory = { default = "memory.csv", type = "path" }
    neighbours = 8

    [[steps]]
    name = "retrieve"
    kind = "tool"
    function = "tools:retrieve"  # module beside this file, or an importable module

    [[steps]]
    name = "choose"
    kind = "model"
    prompt = "prompt.jinja"
    output_schema = "schema.json"
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trunkline.errors import WorkflowError, validation_problems

WORKFLOW_FILES = ("workflow.toml", "workflow.yaml", "workflow.yml")

ParamType = Literal["str", "int", "float", "bool", "path", "json"]


class Param(BaseModel):
    """A workflow parameter; a ``path`` default is relative to the workflow file."""

    model_config = ConfigDict(extra="forbid")

    default: Any = None
    type: ParamType = "str"
    description: str = ""


class StepSpec(BaseModel):
    """One step: a tool, a model call, an agent, a post-process function, or a cascade of those."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["tool", "model", "agent", "post", "cascade"]
    #: ``module:function`` for tool and post steps.
    function: str | None = None
    #: Jinja2 template files for model steps, relative to the workflow file:
    #: `system` and `prompt` render one message each, while `messages` renders
    #: a JSON array of ``{"role", "content"}`` objects, for few-shot turns.
    prompt: str | None = None
    system: str | None = None
    messages: str | None = None
    #: A registered prompt instead of template files: ``name:label``,
    #: ``name@version`` or ``name`` for the latest version.
    prompt_ref: str | None = None
    #: A JSON Schema file (itself a Jinja2 template), or ``module:Model`` for a Pydantic model.
    output_schema: str | None = None
    route: str | None = None
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    #: Name under which the step's result is stored; defaults to the step name.
    output: str | None = None
    #: ``online`` calls the model row by row. ``batch`` sends the step's
    #: requests for all rows of a run as one job to the provider's Batch API,
    #: at its lower price and with up to a day's wait. Only top-level model
    #: steps on OpenAI or Azure OpenAI deployments can run as batch.
    mode: Literal["online", "batch"] = "online"
    #: A cascade's stages, cheapest first. Each runs only when every stage
    #: before it returned a confidence under the threshold.
    stages: list[StepSpec] = Field(default_factory=list)
    #: A cascade's threshold: a number, or the name of a workflow parameter
    #: holding one, so that ``--param`` and experiments can sweep it.
    threshold: float | str | None = None
    #: The value a cascade stage sets to say how sure it is, from 0 to 1.
    confidence: str = Field(default="confidence", min_length=1)
    #: An agent step's tools, each ``module:function`` as `function` names one.
    tools: list[str] = Field(default_factory=list)
    #: An agent step's maximum model calls and tool calls per row.
    max_steps: int = Field(default=10, ge=1)
    max_tool_calls: int = Field(default=32, ge=0)
    #: An agent step's tool choice: ``auto``, ``none``, ``required`` or a
    #: tool's name; a forced one applies until the model has called a tool.
    tool_choice: str | None = None
    #: Whether an agent step runs a tool call again that the row's agent
    #: already made with the same arguments.
    allow_repeated_calls: bool = True
    #: False requests at most one tool call a step from an agent step's model.
    parallel_tool_calls: bool | None = None

    @field_validator("threshold", mode="before")
    @classmethod
    def _no_boolean_threshold(cls, value: Any) -> Any:
        # Pydantic would read true as 1.0, which no one means by it.
        if isinstance(value, bool):
            raise ValueError(f"threshold = {str(value).lower()} is not a number; give one from 0 to 1 or a parameter name")
        return value

    @model_validator(mode="after")
    def _check_kind(self) -> StepSpec:
        if self.kind == "cascade":
            if len(self.stages) < 2:
                raise ValueError(
                    f"cascade step {self.name!r} needs at least two [[steps.stages]], cheapest first"
                )
            if any(stage.kind == "cascade" for stage in self.stages):
                raise ValueError(f"cascade step {self.name!r} has a cascade among its stages; nest no cascades")
            if self.threshold is None:
                raise ValueError(
                    f"cascade step {self.name!r} needs threshold = <number from 0 to 1> or the name "
                    "of a parameter holding one"
                )
            if isinstance(self.threshold, float) and not 0.0 <= self.threshold <= 1.0:
                raise ValueError(f"cascade step {self.name!r}: threshold must be from 0 to 1, got {self.threshold}")
        elif self.stages:
            raise ValueError(f"{self.kind} step {self.name!r} has stages; only a cascade step has them")
        if self.mode == "batch" and self.kind != "model":
            raise ValueError(
                f"{self.kind} step {self.name!r} sets mode = \"batch\", but only a model step can "
                "run through a provider's Batch API; remove mode or set it on a model step"
            )
        if any(stage.mode == "batch" for stage in self.stages):
            raise ValueError(
                f"cascade step {self.name!r} has a stage with mode = \"batch\"; a cascade needs each "
                "stage's answer at once to decide whether to call the next, so its stages run online"
            )
        if self.kind in ("tool", "post") and not self.function:
            raise ValueError(f"{self.kind} step {self.name!r} needs function = \"module:name\"")
        if self.tool_choice is not None and self.kind != "agent":
            raise ValueError(f"{self.kind} step {self.name!r} sets tool_choice; only an agent step calls tools")
        if self.tools and self.kind != "agent":
            raise ValueError(f"{self.kind} step {self.name!r} lists tools; only an agent step calls tools")
        if self.kind in ("model", "agent") and not (self.prompt or self.messages or self.prompt_ref):
            raise ValueError(
                f"{self.kind} step {self.name!r} needs prompt = \"<template file>\", "
                "messages = \"<template of a JSON message array>\" or "
                "prompt_ref = \"<registered prompt, such as triage:production>\""
            )
        if self.prompt_ref and (self.prompt or self.system or self.messages):
            raise ValueError(
                f"model step {self.name!r} sets prompt_ref together with template files; "
                "use one or the other"
            )
        if self.messages and (self.prompt or self.system):
            raise ValueError(
                f"model step {self.name!r} sets messages together with prompt or system; "
                "use messages alone or prompt (with an optional system) alone"
            )
        return self


class WorkflowSpec(BaseModel):
    """A whole workflow file after validation; `folder` is where it was found."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    data: str | None = None
    inputs: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Param] = Field(default_factory=dict)
    steps: list[StepSpec] = Field(min_length=1)
    output: str
    expected: str | None = None
    route: str | None = None
    folder: Path = Path(".")
    file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _expand_params(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("params"), dict):
            data["params"] = {
                key: value if isinstance(value, dict) else {"default": value, "type": _type_of(value)}
                for key, value in data["params"].items()
            }
        return data

    @model_validator(mode="after")
    def _check_thresholds(self) -> WorkflowSpec:
        names = [step.name for step in self.all_steps()]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"step names must be unique, including cascade stages; repeated: {', '.join(repeated)}")
        for step in self.steps:
            if isinstance(step.threshold, str) and step.threshold not in self.params:
                if _is_number(step.threshold):
                    raise ValueError(
                        f"cascade step {step.name!r} has threshold = {step.threshold!r}, a string; "
                        f"write the number without quotes (threshold = {step.threshold}) or name a parameter"
                    )
                declared = ", ".join(sorted(self.params)) or "none"
                raise ValueError(
                    f"cascade step {step.name!r} takes its threshold from parameter "
                    f"{step.threshold!r}, which [params] does not declare; declared: {declared}"
                )
        return self

    def all_steps(self) -> list[StepSpec]:
        """Return every step, with each cascade's stages right after the cascade."""
        flat: list[StepSpec] = []
        for step in self.steps:
            flat.append(step)
            flat.extend(step.stages)
        return flat

    def content_hash(self) -> str:
        """Hash the workflow file, its templates and its tool modules beside it."""
        files = [self.file] if self.file else []
        for step in self.all_steps():
            for relative in (step.prompt, step.system, step.messages, step.output_schema):
                if relative and ":" not in relative:
                    files.append(self.resolve(relative))
            for reference in (step.function, step.output_schema, *step.tools):
                if reference and ":" in reference:
                    module = reference.partition(":")[0].replace(".", "/") + ".py"
                    files.append(self.resolve(module))
        digest = hashlib.sha256()
        for file in sorted({path for path in files if path.is_file()}):
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
        return digest.hexdigest()

    def resolve(self, relative: str) -> Path:
        return (self.folder / relative).resolve()

    def default_data(self) -> Path:
        if self.data is None:
            raise WorkflowError(
                f"workflow {self.name!r} names no default dataset; pass --data FILE.csv|.jsonl"
            )
        return self.resolve(self.data)

    def parameters(self, overrides: dict[str, str] | None = None) -> dict[str, Any]:
        """Return every parameter's value, with `overrides` (as typed on a command line) applied.

        Raises:
            WorkflowError: an override names an undeclared parameter or has the wrong type.
        """
        values: dict[str, Any] = {}
        for name, param in self.params.items():
            default = param.default
            if param.type == "path" and default is not None:
                default = str(self.resolve(str(default)))
            values[name] = default
        for name, raw in (overrides or {}).items():
            if name not in self.params:
                declared = ", ".join(sorted(self.params)) or "none"
                raise WorkflowError(
                    f"workflow {self.name!r} has no parameter {name!r}; declared: {declared}"
                )
            values[name] = _coerce(name, raw, self.params[name].type)
        return values


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _type_of(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return "json"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def _coerce(name: str, raw: str, kind: ParamType) -> Any:
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return lowered in ("true", "1", "yes")
        if kind == "json":
            return json.loads(raw)
        if kind == "path":
            path = Path(raw).expanduser().resolve()
            if not path.exists():
                raise WorkflowError(f"parameter {name}: {path} does not exist")
            return str(path)
    except ValueError as error:
        raise WorkflowError(f"parameter {name} expects a {kind}, got {raw!r}") from error
    return raw


def find_workflow_file(path: Path | str) -> Path:
    """Return the workflow file itself, or the one inside a folder."""
    target = Path(path)
    if target.is_dir():
        for name in WORKFLOW_FILES:
            if (target / name).is_file():
                return target / name
        raise WorkflowError(f"no workflow file in {target}; expected one of {', '.join(WORKFLOW_FILES)}")
    if not target.is_file():
        raise WorkflowError(f"workflow {target} not found; pass a workflow file or a folder holding one")
    return target


def load_workflow(path: Path | str) -> WorkflowSpec:
    """Read and validate a workflow file (TOML or YAML), or the one inside a folder.

    Raises:
        WorkflowError: the file is missing or invalid; the message names the field.
    """
    file = find_workflow_file(path)
    text = file.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if file.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise WorkflowError(f"{file} cannot be parsed: {error}") from error
    if not isinstance(data, dict):
        raise WorkflowError(f"{file} must hold a table of settings at the top level")
    data["folder"] = file.parent.resolve()
    data["file"] = file.resolve()
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as error:
        raise WorkflowError(f"invalid workflow {file}: {validation_problems(error)}") from error
    _check_files(spec)
    return spec


def _check_files(spec: WorkflowSpec) -> None:
    for step in spec.all_steps():
        for relative in (step.prompt, step.system, step.messages):
            if relative and not spec.resolve(relative).is_file():
                raise WorkflowError(
                    f"step {step.name!r} of workflow {spec.name!r} names {relative}, "
                    f"which is not a file in {spec.folder}"
                )
        schema = step.output_schema
        if schema and ":" not in schema and not spec.resolve(schema).is_file():
            raise WorkflowError(
                f"step {step.name!r} names output schema {schema}, which is not a file in "
                f"{spec.folder}; give a JSON Schema file or module:Model"
            )


def render_schema_text(text: str) -> dict[str, Any]:
    """Decode a rendered JSON Schema template."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise WorkflowError(f"the rendered output schema is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise WorkflowError("the output schema must be a JSON object")
    return value
