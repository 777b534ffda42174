"""Model calls served by a provider's Batch API, recorded like online calls.

`prepare_batch_call` builds a row's request as the router would send it
online to the route's first deployment. `finish_batch_call` turns the job's
line for that row into a `CallResult` with a normal call record, priced at
the batch rate. A batch call has one attempt: no retries, no fallbacks and
no repairs, because each of those would be another day-long job.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from trunkline.config import Deployment, Settings
from trunkline.errors import CallError, ConfigError, OutputInvalid, ProviderError
from trunkline.providers.openai_batch import BATCH_PROVIDERS
from trunkline.redaction import redact
from trunkline.routing.output import OutputMismatch, check_tool_arguments
from trunkline.routing.requests import request_for
from trunkline.routing.router import Router
from trunkline.routing.state import CallResult, CallState, finish_call
from trunkline.tracing import open_span
from trunkline.tracing.context import new_span_id
from trunkline.types.calls import Attempt, ModelRequest, ModelResponse
from trunkline.types.messages import Message

@dataclass
class BatchCall:
    """One row's request to a batch job, with the state its record is built from."""

    state: CallState
    base: dict[str, Any]
    deployment_name: str
    deployment: Deployment
    request: ModelRequest


def batch_deployment(settings: Settings, route: str | None, step: str) -> str:
    """Return the deployment a batch step's jobs go to: its route's first one.

    Raises:
        ConfigError: that deployment's provider has no Batch API here.
    """
    route_name = route or settings.default_route
    name = settings.route(route_name).deployments[0]
    provider = settings.deployments[name].provider
    if provider not in BATCH_PROVIDERS:
        raise ConfigError(
            f"step {step!r} sets mode = \"batch\", but its route {route_name!r} sends it to "
            f"deployment {name!r} of provider {provider!r}, which has no Batch API in Trunkline; "
            f"route the step to a deployment of provider {' or '.join(BATCH_PROVIDERS)}, "
            "or remove mode = \"batch\" to run it online"
        )
    return name


def prepare_batch_call(
    router: Router,
    messages: Sequence[Message],
    *,
    deployment_name: str,
    route: str | None,
    output: type[BaseModel] | dict[str, Any] | None,
    temperature: float | None,
    max_tokens: int | None,
    prompt_name: str | None,
    prompt_version: str | None,
) -> BatchCall:
    """Build a row's request to `deployment_name` as an online call would send it.

    Unlike an online attempt, the request is not checked against budgets or
    rate limits, because the provider runs the job's lines when it chooses;
    its cost counts toward the run's spend once it is recorded.
    """
    state, base = router._start(
        list(messages), route, output, temperature, max_tokens, None, (), None,
        prompt_name, prompt_version, None, None, None,
    )  # fmt: skip
    deployment = router.settings.deployments[deployment_name]
    state.deployment, state.provider, state.model = deployment_name, deployment.provider, deployment.model
    return BatchCall(state, base, deployment_name, deployment, request_for(deployment, state))


def finish_batch_call(
    router: Router,
    call: BatchCall,
    outcome: ModelResponse | CallError,
    *,
    batch_id: str | None,
    job_started: datetime,
    job_ended: datetime,
) -> CallResult:
    """Record a row's result from a job and return it as an online call would.

    The record's start is the job's creation and its latency the job's
    duration, because the row waited that long for its output.

    Raises:
        CallError: the line failed or its output is unusable; ``error.record`` is its record.
    """
    state = call.state
    elapsed_s = max((job_ended - job_started).total_seconds(), 0.0)
    state.started_at = job_started
    state.clock = time.perf_counter() - elapsed_s
    base = {**call.base, "batch_id": batch_id}
    live = open_span(f"chat {state.route_name}", "call", state.context, route=state.route_name, batch_id=batch_id)
    base.update(span_id=live.span_id, parent_span_id=live.parent_span_id)
    attempt: dict[str, Any] = {
        "attempt_number": 1,
        "deployment": call.deployment_name,
        "provider": call.deployment.provider,
        "model": call.request.model,
        "started_at": job_started,
        "latency_ms": elapsed_s * 1000.0,
        "span_id": new_span_id(),
    }
    error: CallError | None = None
    parsed: Any = None
    response = outcome if isinstance(outcome, ModelResponse) else None
    if response is None:
        error = outcome  # type: ignore[assignment]
        state.attempts.append(_failed(attempt, error))
    else:
        router.charge(call.deployment, response, state, batch=True)
        try:
            check_tool_arguments(response)
            if state.spec is not None:
                parsed = router._validate(state.spec, response, 0, state)
            state.attempts.append(Attempt(**attempt, outcome="ok"))
        except OutputMismatch as mismatch:
            error = OutputInvalid(
                f"output of {call.deployment.model!r} from batch {batch_id} is unusable, and a "
                f"batch call is not repaired: {mismatch}",
                text=response.text,
                kind=mismatch.kind,
            )
            state.attempts.append(_failed(attempt, error))
    if error is not None:
        finish_call(base, state, live, response, parsed, error)
        raise error
    record = finish_call(base, state, live, response, parsed, None)
    return CallResult(
        output=parsed if state.spec is not None else response.text,  # type: ignore[union-attr]
        record=record,
        tool_calls=response.tool_calls,  # type: ignore[union-attr]
    )


def _failed(attempt: dict[str, Any], error: CallError) -> Attempt:
    return Attempt(
        **attempt,
        outcome="error",
        error_kind=error.kind,
        error_message=redact(str(error)),
        status_code=error.status_code if isinstance(error, ProviderError) else None,
    )
