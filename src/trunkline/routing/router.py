"""The `Router`: one model call, from the route's first deployment to a priced record.

The layers of one call, outermost first:

- `Router.complete` opens the span and always exports a record.
- `_run_route` walks the route's deployments and falls back.
- `_run_deployment` retries one deployment and repairs invalid output.
- `_attempt` sends one request under the attempt timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from trunkline.config import Deployment, Route, Settings, load_settings
from trunkline.errors import (
    AllDeploymentsFailed,
    CallError,
    ErrorKind,
    OutputInvalid,
    ProviderError,
    TrunklineError,
)
from trunkline.pricing import price_usage
from trunkline.providers.base import Provider
from trunkline.providers.registry import build_provider
from trunkline.resilience.retry import RetryPolicy
from trunkline.routing.output import OutputMismatch, OutputSpec
from trunkline.tracing import current_context, export_call, span
from trunkline.types.calls import (
    Attempt,
    CallRecord,
    FallbackHop,
    ModelRequest,
    ModelResponse,
    Validation,
)
from trunkline.types.messages import Message
from trunkline.types.usage import Cost, Usage

logger = logging.getLogger(__name__)

MessagesInput = str | Sequence[Message | Mapping[str, Any]]


@dataclass
class CallResult:
    """A finished call: the output and the record that describes it.

    `output` is the validated object when an output schema was given (a
    model instance for a Pydantic class, decoded JSON for a JSON Schema) and
    the text otherwise.
    """

    output: Any
    record: CallRecord

    @property
    def text(self) -> str:
        return self.record.output_text or ""


@dataclass
class _CallState:
    """The attempts, usage and cost one call has gathered so far."""

    started_at: datetime
    attempts: list[Attempt] = field(default_factory=list)
    fallbacks: list[FallbackHop] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    cost: Cost = field(default_factory=lambda: Cost(total_usd=0.0, input_usd=0.0, output_usd=0.0))
    validation: Validation | None = None
    deployment: str | None = None
    provider: str | None = None

    def add_cost(self, cost: Cost) -> None:
        if self.cost.price_missing or cost.price_missing:
            self.cost = Cost(price_missing=True, source=cost.source)
            return
        self.cost = Cost(
            input_usd=(self.cost.input_usd or 0.0) + (cost.input_usd or 0.0),
            output_usd=(self.cost.output_usd or 0.0) + (cost.output_usd or 0.0),
            total_usd=(self.cost.total_usd or 0.0) + (cost.total_usd or 0.0),
            source=cost.source,
        )


def _to_messages(prompt: MessagesInput) -> tuple[Message, ...]:
    if isinstance(prompt, str):
        return (Message.user(prompt),)
    return tuple(
        item if isinstance(item, Message) else Message.model_validate(item) for item in prompt
    )


class Router:
    """Sends model calls along configured routes and records each one.

    Args:
        settings: the configuration; by default `load_settings()`.
        providers: adapters by deployment name that replace the ones the
            configuration would build, such as fakes in tests.

    Example::

        router = Router()
        result = await router.complete("Say hello", route="local")
        print(result.text, result.record.usage.output_tokens)
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        providers: Mapping[str, Provider] | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self._providers: dict[str, Provider] = dict(providers or {})

    def provider(self, deployment: str) -> Provider:
        """Return the adapter of `deployment`, building it on first use."""
        if deployment not in self._providers:
            self._providers[deployment] = build_provider(self.settings.deployments[deployment])
        return self._providers[deployment]

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()

    async def complete(
        self,
        prompt: MessagesInput,
        *,
        route: str | None = None,
        output: type[BaseModel] | dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        top_p: float | None = None,
        stop: Sequence[str] = (),
        seed: int | None = None,
        prompt_name: str | None = None,
        prompt_version: str | None = None,
        tags: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> CallResult:
        """Complete `prompt` on `route` and return the output with its call record.

        The record is exported whether the call succeeds or fails.

        Raises:
            CallError: the call failed; ``error.record`` is its record.
            ConfigError: the route or one of its deployments is not configured.
        """
        route_name = route or self.settings.default_route
        policy = self.settings.route(route_name)
        spec = OutputSpec(output) if output is not None else None
        messages = _to_messages(prompt)
        template = ModelRequest(
            model="",
            messages=messages,
            temperature=temperature,
            max_tokens=max_tokens,
            top_p=top_p,
            stop=tuple(stop),
            seed=seed,
            output_schema=spec.json_schema if spec else None,
            extra=dict(extra or {}),
        )
        state = _CallState(started_at=datetime.now(UTC))
        clock = time.perf_counter()
        with span(f"chat {route_name}", "call", route=route_name) as live:
            context = current_context()
            base = {
                "call_id": uuid.uuid4().hex,
                "trace_id": context.trace_id,
                "span_id": live.span_id,
                "parent_span_id": live.parent_span_id,
                "run_id": context.run_id,
                "session_id": context.session_id,
                "tags": {**context.tags, **(tags or {})},
                "route": route_name,
                "model_requested": route_name,
                "prompt_name": prompt_name,
                "prompt_version": prompt_version,
                "messages": list(messages),
                "parameters": template.parameters(),
            }
            try:
                response, parsed = await self._run_route(route_name, policy, template, spec, state)
            except (CallError, asyncio.CancelledError) as error:
                record = self._record(base, state, clock, None, None, error)
                live.fail(error)
                live.attributes.update(_span_attributes(record))
                export_call(record)
                if isinstance(error, CallError):
                    error.record = record  # type: ignore[attr-defined]
                raise
            record = self._record(base, state, clock, response, parsed, None)
            live.attributes.update(_span_attributes(record))
        export_call(record)
        output_value = parsed if spec is not None else response.text
        return CallResult(output=output_value, record=record)

    def complete_sync(self, prompt: MessagesInput, **options: Any) -> CallResult:
        """Run `complete` to the end from synchronous code; not from inside an event loop."""
        return asyncio.run(self.complete(prompt, **options))

    async def _run_route(
        self,
        route_name: str,
        policy: Route,
        template: ModelRequest,
        spec: OutputSpec | None,
        state: _CallState,
    ) -> tuple[ModelResponse, Any]:
        failures: list[CallError] = []
        for index, name in enumerate(policy.deployments):
            deployment = self.settings.deployments[name]
            state.deployment, state.provider = name, deployment.provider
            try:
                return await self._run_deployment(name, deployment, policy, template, spec, state)
            except CallError as error:
                failures.append(error)
                is_last = index == len(policy.deployments) - 1
                if is_last or not error.kind.falls_back:
                    break
                state.fallbacks.append(FallbackHop(deployment=name, reason=error.kind))
                logger.warning(
                    "route %s: leaving deployment %s after %s; falling back to %s",
                    route_name,
                    name,
                    error.kind.value,
                    policy.deployments[index + 1],
                )
        last = failures[-1]
        if len(failures) == 1:
            raise last
        raise AllDeploymentsFailed(
            f"every deployment of route {route_name!r} failed; last error: {last}",
            kind=last.kind,
            causes=failures,
        )

    async def _run_deployment(
        self,
        name: str,
        deployment: Deployment,
        policy: Route,
        template: ModelRequest,
        spec: OutputSpec | None,
        state: _CallState,
    ) -> tuple[ModelResponse, Any]:
        provider = self.provider(name)
        retry = RetryPolicy(
            max_attempts=policy.max_attempts,
            base_s=policy.backoff_base_s,
            max_s=policy.backoff_max_s,
            retry_after_max_s=policy.retry_after_max_s,
        )
        request = template.model_copy(update={"model": deployment.model})
        tries = 0
        repairs = 0
        while True:
            tries += 1
            try:
                response = await self._attempt(name, provider, request, policy, state)
            except ProviderError as error:
                decision = retry.decide(error, tries)
                if decision.wait_s is None:
                    raise
                state.attempts[-1] = state.attempts[-1].model_copy(
                    update={"wait_s": decision.wait_s, "wait_reason": decision.reason}
                )
                logger.warning(
                    "deployment %s: attempt %d of %d failed with %s; retrying in %.2fs (%s)",
                    name,
                    tries,
                    retry.max_attempts,
                    error.kind.value,
                    decision.wait_s,
                    decision.reason,
                )
                await asyncio.sleep(decision.wait_s)
                continue
            self._add_usage(deployment, response, state)
            if spec is None:
                return response, None
            try:
                parsed = self._validate(spec, response, repairs, state)
            except OutputMismatch as mismatch:
                if repairs >= policy.max_repairs:
                    raise OutputInvalid(
                        f"output of {deployment.model!r} failed validation after "
                        f"{repairs} repair(s): {mismatch}",
                        text=response.text,
                    ) from mismatch
                repairs += 1
                request = _repair_request(request, response.text, str(mismatch))
                continue
            return response, parsed

    async def _attempt(
        self,
        name: str,
        provider: Provider,
        request: ModelRequest,
        policy: Route,
        state: _CallState,
    ) -> ModelResponse:
        started_at = datetime.now(UTC)
        clock = time.perf_counter()
        attempt = {
            "attempt_number": len(state.attempts) + 1,
            "deployment": name,
            "provider": provider.name,
            "model": request.model,
            "started_at": started_at,
        }
        try:
            async with asyncio.timeout(policy.timeout_s):
                response = await provider.complete(request)
        except ProviderError as error:
            self._add_failed_attempt(state, attempt, clock, error)
            raise
        except TrunklineError:
            raise
        except Exception as error:
            failure = _attempt_failure(error, name, provider.name, request.model, policy.timeout_s)
            self._add_failed_attempt(state, attempt, clock, failure)
            raise failure from error
        latency_ms = (time.perf_counter() - clock) * 1000.0
        state.attempts.append(Attempt(**attempt, outcome="ok", latency_ms=latency_ms))
        logger.info(
            "call to %s/%s ok in %.0f ms", provider.name, request.model, latency_ms
        )
        return response

    @staticmethod
    def _add_failed_attempt(
        state: _CallState, attempt: dict[str, Any], clock: float, error: ProviderError
    ) -> None:
        state.attempts.append(
            Attempt(
                **attempt,
                outcome="error",
                error_kind=error.kind,
                error_message=str(error),
                status_code=error.status_code,
                latency_ms=(time.perf_counter() - clock) * 1000.0,
            )
        )

    def _add_usage(self, deployment: Deployment, response: ModelResponse, state: _CallState) -> None:
        state.usage = state.usage + response.usage
        overrides = self.settings.prices
        model = deployment.model if deployment.model in overrides else response.model
        state.add_cost(
            price_usage(
                response.usage,
                model,
                provider=deployment.provider,
                at=state.started_at,
                overrides=overrides,
            )
        )

    @staticmethod
    def _validate(spec: OutputSpec, response: ModelResponse, repairs: int, state: _CallState) -> Any:
        state.validation = Validation(output_schema=spec.json_schema, repairs=repairs)
        try:
            if response.finish_reason == "length":
                raise OutputMismatch("output was cut by the max_tokens limit before it was complete")
            parsed = spec.parse(response.text)
        except OutputMismatch as mismatch:
            state.validation = state.validation.model_copy(update={"error": str(mismatch)})
            raise
        state.validation = state.validation.model_copy(update={"valid": True})
        return parsed

    def _record(
        self,
        base: dict[str, Any],
        state: _CallState,
        clock: float,
        response: ModelResponse | None,
        parsed: Any,
        error: BaseException | None,
    ) -> CallRecord:
        deployment = self.settings.deployments.get(state.deployment or "")
        fields: dict[str, Any] = {
            **base,
            "provider": state.provider,
            "deployment": state.deployment,
            "model_requested": deployment.model if deployment else base["model_requested"],
            "usage": state.usage,
            "cost": state.cost,
            "started_at": state.started_at,
            "ended_at": datetime.now(UTC),
            "latency_ms": (time.perf_counter() - clock) * 1000.0,
            "attempts": state.attempts,
            "fallbacks": state.fallbacks,
            "validation": state.validation,
        }
        if response is not None:
            fields.update(
                model_served=response.model,
                model_version=response.model_version,
                response_id=response.response_id,
                output_text=response.text,
                output_parsed=_jsonable(parsed),
                finish_reason=response.finish_reason,
                tool_calls=list(response.tool_calls),
                outcome="ok",
            )
        else:
            kind = error.kind if isinstance(error, CallError) else ErrorKind.CANCELLED
            text = error.text if isinstance(error, OutputInvalid) else None
            fields.update(
                outcome="error",
                error_kind=kind,
                error_message=str(error) or type(error).__name__,
                output_text=text,
                finish_reason="error",
            )
        return CallRecord(**fields)


def _attempt_failure(
    error: Exception, deployment: str, provider: str, model: str, timeout_s: float
) -> ProviderError:
    """Turn a timeout, or an adapter's failure to read a response, into a `ProviderError`."""
    if isinstance(error, TimeoutError):
        return ProviderError(
            f"attempt at {deployment} timed out after {timeout_s}s",
            kind=ErrorKind.TIMEOUT,
            provider=provider,
            model=model,
        )
    # An adapter that cannot read the response (an HTML page, a body with no
    # choices) is treated as a server fault, so the attempt is recorded,
    # retried and can fall back like any other.
    logger.warning("deployment %s returned a response the adapter cannot read: %r", deployment, error)
    return ProviderError(
        f"{provider} returned a malformed response for model {model!r}: "
        f"{type(error).__name__}: {error}",
        kind=ErrorKind.SERVER_ERROR,
        provider=provider,
        model=model,
    )


def _repair_request(request: ModelRequest, bad_output: str, problem: str) -> ModelRequest:
    """Append the invalid output and the validation error so the model can correct itself."""
    messages = (
        *request.messages,
        Message.assistant(bad_output),
        Message.user(
            f"That output is invalid: {problem}. Reply again with only output that matches "
            "the required JSON schema."
        ),
    )
    return request.model_copy(update={"messages": messages})


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def _span_attributes(record: CallRecord) -> dict[str, Any]:
    return {
        "call_id": record.call_id,
        "provider": record.provider,
        "model": record.model_served or record.model_requested,
        "input_tokens": record.usage.input_tokens,
        "output_tokens": record.usage.output_tokens,
        "cost_usd": record.cost.total_usd,
        "attempts": len(record.attempts),
        "outcome": record.outcome,
    }
