"""Workflow steps: tool and post-process functions, and model calls.

Steps share one dict of values per row: the row's mapped inputs, the
workflow parameters, and what each earlier step returned. A function step
receives the values its parameters name; a model step renders its templates
with all of them.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jinja2
from pydantic import BaseModel, ValidationError

from trunkline.errors import WorkflowError
from trunkline.prompts import PromptRegistry, PromptVersion, render
from trunkline.routing.router import Router
from trunkline.routing.state import CallResult
from trunkline.types.calls import CallRecord
from trunkline.types.messages import Message
from trunkline.workflows.loading import load_object
from trunkline.workflows.spec import StepSpec, WorkflowSpec, render_schema_text


@dataclass
class StepResult:
    """The values a step added to its row, and the model calls it made."""

    values: dict[str, Any]
    calls: list[CallRecord] = field(default_factory=list)
    #: How the step decided, kept with the row, such as the cascade stage whose output was used.
    details: dict[str, Any] | None = None


class Step:
    """Base class: a named unit of work in a workflow."""

    def __init__(self, spec: StepSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.output_name = spec.output or spec.name

    async def run(self, values: dict[str, Any], router: Router) -> StepResult:
        raise NotImplementedError(f"step kind {self.spec.kind!r} has no run method")


class FunctionStep(Step):
    """Calls a plain Python function, sync or async, with the values its parameters name.

    A returned dict is merged into the row's values; any other value is
    stored under the step's output name. Sync functions run on a worker
    thread so that they do not hold up other rows.
    """

    def __init__(self, spec: StepSpec, workflow: WorkflowSpec) -> None:
        super().__init__(spec)
        function = load_object(spec.function or "", workflow.folder)
        if not callable(function):
            raise WorkflowError(f"step {spec.name!r}: {spec.function} is not callable")
        self.function: Callable[..., Any] = function
        self.signature = inspect.signature(function)

    def _arguments(self, values: dict[str, Any]) -> dict[str, Any]:
        parameters = self.signature.parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return dict(values)
        arguments = {}
        for parameter in parameters:
            if parameter.name in values:
                arguments[parameter.name] = values[parameter.name]
            elif parameter.default is inspect.Parameter.empty:
                available = ", ".join(sorted(values))
                raise WorkflowError(
                    f"step {self.name!r}: {self.spec.function} needs {parameter.name!r}, "
                    f"which no input, parameter or earlier step provides; available: {available}"
                )
        return arguments

    async def run(self, values: dict[str, Any], router: Router) -> StepResult:
        return await self.call(values)

    async def call(self, values: dict[str, Any]) -> StepResult:
        """Call the function with the values its parameters name; it needs no router.

        Raises:
            WorkflowError: a parameter without a default names no value.
        """
        arguments = self._arguments(values)
        if inspect.iscoroutinefunction(self.function):
            result = await self.function(**arguments)
        else:
            result = await asyncio.to_thread(self.function, **arguments)
        if isinstance(result, dict):
            return StepResult(values=result)
        return StepResult(values={self.output_name: result})


class ModelStep(Step):
    """Renders its prompt templates, calls the router, and stores the validated output.

    With `registered`, the step renders that prompt version instead of
    template files, and its calls record the version's name and number.
    """

    def __init__(self, spec: StepSpec, workflow: WorkflowSpec, registered: PromptVersion | None = None) -> None:
        super().__init__(spec)
        self.workflow = workflow
        self.registered = registered
        self.route = spec.route or workflow.route
        environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(workflow.folder)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            autoescape=False,
        )
        self.prompt = self._template(environment, spec.prompt)
        self.system = self._template(environment, spec.system)
        self.chat = self._template(environment, spec.messages)
        self.schema_template: jinja2.Template | None = None
        self.schema_model: type[BaseModel] | None = None
        if spec.output_schema and ":" in spec.output_schema:
            try:
                model = load_object(spec.output_schema, workflow.folder)
            except WorkflowError as error:
                raise WorkflowError(f"step {spec.name!r}, output_schema: {error}") from error
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise WorkflowError(f"step {spec.name!r}: {spec.output_schema} is not a Pydantic model")
            self.schema_model = model
        elif spec.output_schema:
            self.schema_template = self._template(environment, spec.output_schema)

    def _template(self, environment: jinja2.Environment, name: str | None) -> jinja2.Template | None:
        if not name:
            return None
        try:
            return environment.get_template(name)
        except jinja2.TemplateSyntaxError as error:
            raise WorkflowError(
                f"step {self.name!r}: template {name}, line {error.lineno}, is invalid: "
                f"{error.message}"
            ) from error

    def _render(self, template: jinja2.Template, values: dict[str, Any]) -> str:
        try:
            return template.render(**values).strip()
        except jinja2.UndefinedError as error:
            raise WorkflowError(
                f"step {self.name!r}: template {template.name} uses an undefined variable: "
                f"{error.message}; available: {', '.join(sorted(values))}"
            ) from error

    def messages(self, values: dict[str, Any]) -> list[Message]:
        if self.registered is not None:
            return render(self.registered, values)
        if self.chat is not None:
            return self._chat_messages(values)
        messages = []
        if self.system is not None:
            messages.append(Message.system(self._render(self.system, values)))
        if self.prompt is not None:
            messages.append(Message.user(self._render(self.prompt, values)))
        return messages

    def _chat_messages(self, values: dict[str, Any]) -> list[Message]:
        assert self.chat is not None
        text = self._render(self.chat, values)
        try:
            items = json.loads(text)
            if not isinstance(items, list) or not items:
                raise ValueError("expected a non-empty JSON array")
            return [Message.model_validate(item) for item in items]
        except (ValueError, ValidationError) as error:
            raise WorkflowError(
                f"step {self.name!r}: template {self.chat.name} must render a JSON array of "
                f"{{\"role\", \"content\"}} objects: {error}"
            ) from error

    def output_schema(self, values: dict[str, Any]) -> type[BaseModel] | dict[str, Any] | None:
        if self.schema_model is not None:
            return self.schema_model
        if self.schema_template is not None:
            return render_schema_text(self._render(self.schema_template, values))
        if self.registered is not None:
            return self.registered.content.output_schema
        return None

    def prompt_name(self) -> str:
        """Return the prompt name the step's calls record: the registered one, else ``workflow/step``."""
        return self.registered.name if self.registered else f"{self.workflow.name}/{self.name}"

    def prompt_version(self) -> str | None:
        return str(self.registered.version) if self.registered else None

    async def run(self, values: dict[str, Any], router: Router) -> StepResult:
        # NOTE: a registered prompt that cannot render one row's values (a for_each over a
        # non-list, a variable of the wrong type) raises ConfigError, which stops the whole run.
        result = await router.complete(
            self.messages(values),
            route=self.route,
            output=self.output_schema(values),
            temperature=self.spec.temperature,
            max_tokens=self.spec.max_tokens,
            prompt_name=self.prompt_name(),
            prompt_version=self.prompt_version(),
        )
        return self.step_result(result)

    def step_result(self, result: CallResult) -> StepResult:
        """Store a call's validated output under the step's output name."""
        output = result.output
        if isinstance(output, BaseModel):
            output = output.model_dump(mode="json")
        return StepResult(values={self.output_name: output}, calls=[result.record])


def build_steps(
    workflow: WorkflowSpec,
    registry: PromptRegistry | None = None,
    prompt_overrides: dict[str, str] | None = None,
) -> list[Step]:
    """Create every step of `workflow`, loading functions, templates and registered prompts up front.

    A registered prompt is resolved once here, so a label moved during a run
    does not change the version its rows use. `prompt_overrides` maps a step
    name to another prompt reference for that step, as ``--prompt`` does.

    Raises:
        WorkflowError: a step refers to a registered prompt and there is no registry.
        ConfigError: the prompt, version or label does not exist.
    """
    from trunkline.workflows.agent_step import AgentStep  # it subclasses ModelStep
    from trunkline.workflows.cascade import CascadeStep  # it subclasses Step

    overrides = dict(prompt_overrides or {})
    model_steps = [spec.name for spec in workflow.all_steps() if spec.kind == "model"]
    unknown = sorted(set(overrides) - set(model_steps))
    if unknown:
        raise WorkflowError(
            f"no model step named {', '.join(unknown)} in workflow {workflow.name!r}; its model "
            f"steps: {', '.join(model_steps) or 'none'}"
        )

    def build(spec: StepSpec) -> Step:
        if spec.kind == "cascade":
            return CascadeStep(spec, [build(stage) for stage in spec.stages])
        if spec.kind not in ("model", "agent"):
            return FunctionStep(spec, workflow)
        reference = overrides.get(spec.name, spec.prompt_ref)
        registered = None
        if reference:
            if registry is None:
                raise WorkflowError(
                    f"step {spec.name!r} uses the registered prompt {reference!r}, which needs "
                    "the store's prompt registry"
                )
            registered = registry.get(reference)
        if spec.kind == "agent":
            return AgentStep(spec, workflow, registered)
        return ModelStep(spec, workflow, registered)

    return [build(spec) for spec in workflow.steps]


def model_steps(steps: list[Step]) -> list[ModelStep]:
    """Return the model steps among `steps`, cascade stages included, in order."""
    found: list[ModelStep] = []
    for step in steps:
        if isinstance(step, ModelStep):
            found.append(step)
        found.extend(model_steps(getattr(step, "stages", [])))
    return found
