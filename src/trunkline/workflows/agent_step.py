"""The agent step: a model step whose model may call the workflow's tools before it answers.

A minimal declaration::

    [[steps]]
    name = "research"
    kind = "agent"
    prompt = "question.jinja"
    tools = ["tools:search", "tools:fetch_page"]
    max_steps = 6
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from trunkline.agents import Agent, AgentResult
from trunkline.errors import ConfigError, TrunklineError, WorkflowError
from trunkline.prompts import PromptVersion
from trunkline.routing.router import Router
from trunkline.tools import Tool, load_tool
from trunkline.workflows.spec import StepSpec, WorkflowSpec
from trunkline.workflows.steps import ModelStep, StepResult


class AgentStopped(TrunklineError):
    """An agent step ended without an answer because a bound stopped it.

    `partial_result` keeps the calls it made, so the row's record keeps them.
    """

    def __init__(self, message: str, *, partial_result: StepResult) -> None:
        super().__init__(message)
        self.partial_result = partial_result


class AgentStep(ModelStep):
    """Runs an `Agent` on the step's rendered messages and stores its answer under the output name.

    The step's details on the row are the agent's stop reason, steps and
    tool calls. A row whose agent stops without answering fails with the
    stop reason, keeping the calls it made.
    """

    def __init__(self, spec: StepSpec, workflow: WorkflowSpec, registered: PromptVersion | None = None) -> None:
        super().__init__(spec, workflow, registered)
        # Loaded up front, so a missing tool fails the run before any row is paid for.
        self.tools: list[Tool] = []
        for reference in spec.tools:
            try:
                self.tools.append(load_tool(reference, workflow.folder))
            except (WorkflowError, ConfigError) as error:
                raise type(error)(f"agent step {spec.name!r}, tool {reference!r}: {error}") from error
        names = [tool.name for tool in self.tools]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise WorkflowError(
                f"agent step {spec.name!r} lists the tool {', '.join(repeated)} more than once; "
                "list each tool once"
            )
        if spec.tool_choice not in (None, "auto", "none", "required", *names):
            raise WorkflowError(
                f"agent step {spec.name!r}: tool_choice {spec.tool_choice!r} is not auto, none, "
                f"required or one of its tools ({', '.join(names) or 'none'})"
            )

    async def run(self, values: dict[str, Any], router: Router) -> StepResult:
        options = {"temperature": self.spec.temperature, "max_tokens": self.spec.max_tokens}
        schema = self.output_schema(values)
        agent = Agent(
            router,
            self.tools,
            route=self.route,
            name=self.name,
            max_steps=self.spec.max_steps,
            max_tool_calls=self.spec.max_tool_calls,
            tool_choice=self.spec.tool_choice,
            allow_repeated_calls=self.spec.allow_repeated_calls,
            parallel_tool_calls=self.spec.parallel_tool_calls,
            output=schema,
            call_options={key: value for key, value in options.items() if value is not None},
        )
        result = await agent.run(self.messages(values))
        output = result.output if schema is None else result.parsed
        if isinstance(output, BaseModel):
            output = output.model_dump(mode="json")
        step_result = StepResult(
            values={self.output_name: output}, calls=result.calls, details=_details(result)
        )
        if not result.answered:
            detail = f": {result.error}" if result.error else ""
            raise AgentStopped(
                f"the agent stopped by {result.summary.stop_reason} before answering{detail}",
                partial_result=step_result,
            )
        return step_result


def _details(result: AgentResult) -> dict[str, Any]:
    summary = result.summary
    return {
        "stop_reason": summary.stop_reason,
        "steps": summary.steps,
        "tool_calls": summary.tool_call_count,
        "tool_errors": sum(summary.tool_errors.values()),
        "by_tool": summary.by_tool(),
    }
