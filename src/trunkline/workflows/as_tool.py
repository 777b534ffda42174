"""A workflow run on one row at a time, as a function or as a tool an agent can call.

The tool's parameters are the workflow's inputs, each a string, and its
result is the workflow's output (or several of its values). Its model steps
go through the router of the agent that calls it, so they count against
that agent's limits and budget, and their spans sit under the tool call's.
"""

from __future__ import annotations

import inspect
import keyword
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from trunkline.errors import ConfigError, WorkflowError
from trunkline.routing.active import active_router
from trunkline.routing.router import Router
from trunkline.tools import Tool
from trunkline.tracing import span
from trunkline.workflows.spec import load_workflow
from trunkline.workflows.steps import build_steps


def workflow_function(
    path: Path | str,
    *,
    params: dict[str, str] | None = None,
    outputs: Sequence[str] | None = None,
    descriptions: dict[str, str] | None = None,
    router: Router | None = None,
) -> Callable[..., Awaitable[Any]]:
    """Return an async function that runs the workflow's steps on one row of keyword arguments.

    Args:
        path: the workflow's folder or file.
        params: parameter overrides, as ``--param KEY=VALUE`` gives them.
        outputs: the values to return, as a dict; by default only the
            workflow's output value.
        descriptions: a description of each input, for a tool's schema.
        router: the router of the model steps; by default the router of
            the agent run that calls the function.

    Raises:
        WorkflowError: the workflow cannot be loaded or a step's function
            is missing. The function raises it when a row ends without one
            of `outputs`.
        ConfigError: a parameter override is invalid, an input is not a
            valid Python name, `outputs` is empty, or `descriptions` names
            something that is not an input.
    """
    workflow = load_workflow(path)
    unusable = [name for name in workflow.inputs if not name.isidentifier() or keyword.iskeyword(name)]
    if unusable:
        raise ConfigError(
            f"workflow {workflow.name!r} has inputs that cannot be parameter names: "
            f"{', '.join(map(repr, unusable))}; rename them in its [inputs] to letters, digits and underscores"
        )
    if outputs is not None and not outputs:
        raise ConfigError("outputs is empty; name the values to return, or leave it out for the workflow's output")
    unknown = sorted(set(descriptions or {}) - set(workflow.inputs))
    if unknown:
        raise ConfigError(
            f"descriptions names {', '.join(map(repr, unknown))}, not inputs of workflow {workflow.name!r} "
            f"({', '.join(workflow.inputs)})"
        )
    values = workflow.parameters(params)
    steps = build_steps(workflow)
    calls_models = any(step.spec.kind in ("model", "agent", "cascade") for step in steps)
    returned = list(outputs) if outputs is not None else [workflow.output]

    async def run(**inputs: str) -> Any:
        current = router or active_router.get()
        if current is None and calls_models:
            raise ConfigError(
                f"workflow {workflow.name!r} needs a router to run its model steps: "
                "call it from an agent's tool call, or pass router="
            )
        row = {**values, **inputs}
        # The steps' spans sit under the caller's span, such as an agent's tool call.
        for step in steps:
            with span(f"{workflow.name} {step.name}", "step", step_kind=step.spec.kind):
                result = await step.run(row, current)  # type: ignore[arg-type]
            row.update(result.values)
        missing = [name for name in returned if name not in row]
        if missing:
            raise WorkflowError(
                f"workflow {workflow.name!r} produced no value named {', '.join(map(repr, missing))}; "
                f"its values are: {', '.join(sorted(row))}"
            )
        if outputs is None:
            return row[workflow.output]
        return {name: row[name] for name in returned}

    notes = descriptions or {}
    documented = "\n".join(
        f"    {name}: {notes.get(name, f'the {column!r} value of a row')}"
        for name, column in workflow.inputs.items()
    )
    # A resumed run that calls this workflow notices when its files change.
    run.workflow_hash = workflow.content_hash()  # type: ignore[attr-defined]
    run.__name__ = workflow.name.replace("-", "_")
    run.__doc__ = f"{workflow.description or workflow.name}\n\nArgs:\n{documented}\n"
    # Tools read parameters from the signature, and a workflow's inputs are known only now.
    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=str) for name in workflow.inputs],
        return_annotation=dict[str, Any] if outputs is not None else Any,
    )
    return run


def workflow_tool(
    path: Path | str,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
    max_uses: int | None = None,
    **options: Any,
) -> Tool:
    """Return a tool that runs the workflow on the model's arguments; `options` as `workflow_function`.

    The name defaults to the workflow's name with ``-`` as ``_``, and the
    description to the workflow's description.

    Example::

        triage = workflow_tool("examples/intent-triage", name="classify_intent")
        agent = Agent(router, [triage, policy_answer, escalate])
    """
    return Tool(
        workflow_function(path, **options),
        name=name,
        description=description,
        timeout_s=timeout_s,
        max_uses=max_uses,
    )
