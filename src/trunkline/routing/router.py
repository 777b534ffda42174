"""The `Router`: one model call, from the route's first deployment to a priced record.

The layers of one call, outermost first:

- `Router.complete` (or `Router.stream`) opens the span and always exports a record.
- `_run_route` walks the route's deployments: it skips those whose breaker
  is open or that earlier failures rule out, downgrades to a cheaper
  deployment where the route allows it, and falls back.
- `_run_deployment` retries one deployment and repairs unusable output.
- `_attempt` reserves budget and rate limit, sends one request under the
  attempt timeout and the call's deadline, and settles both with the real
  usage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit
from datetime import UTC, datetime
from typing import Any

import jsonschema
import redis
from pydantic import BaseModel

from trunkline.config import Deployment, Settings, load_settings
from trunkline.ids import random_hex
from trunkline.redaction import redact
from trunkline.errors import (
    BudgetExceeded,
    CallError,
    ConfigError,
    ErrorKind,
    OutputInvalid,
    ProviderError,
    TrunklineError,
)
from trunkline.pricing import batch_cost, price_usage
from trunkline.providers.base import Provider
from trunkline.providers.registry import build_provider
from trunkline.resilience.breaker import BreakerBoard, BreakerStatus
from trunkline.resilience.budget import BudgetLedger, Reservation, build_ledger
from trunkline.resilience.limiter import LimitWaitTooLong, Limits, Permit, RateLimiter, build_limiter
from trunkline.resilience.retry import RetryPolicy
from trunkline.routing.output import OutputMismatch, OutputSpec, check_tool_arguments
from trunkline.routing.policies import (
    FallbackRules,
    reserved_tokens,
    score_downgrade,
    unit_price_usd,
    worst_case_usd,
)
from trunkline.routing.failures import attempt_failure, deadline_passed, route_failure
from trunkline.routing.requests import repair_request, request_for
from trunkline.routing.state import CallResult, CallState, finish_call
from trunkline.routing.streaming import CallStream, OpenStream
from trunkline.tracing import current_context, inside_span, new_span_id, open_span
from trunkline.types.calls import (
    Attempt,
    Downgrade,
    FallbackHop,
    ModelRequest,
    ModelResponse,
    ToolChoice,
    Validation,
)
from trunkline.types.messages import Message, ToolDefinition
from trunkline.types.scores import TaskScore

logger = logging.getLogger(__name__)

MessagesInput = str | Sequence[Message | Mapping[str, Any]]
#: Reads golden-set scores per deployment for a task and, when not None, one prompt version.
ScoreReader = Callable[[str, str | None], Mapping[str, TaskScore]]

#: Seconds a task's golden-set scores are kept before the store is read again.
SCORES_TTL_S = 60.0


class _Rejected(CallError):
    """A deployment refused the call before anything was sent: budget or rate limit."""

    def __init__(self, reason: str, error: CallError) -> None:
        super().__init__(str(error), kind=error.kind)
        self.reason = reason
        self.error = error


def _output_spec(output: type[BaseModel] | dict[str, Any]) -> OutputSpec:
    try:
        return OutputSpec(output)
    except jsonschema.SchemaError as error:
        where = "/".join(str(part) for part in error.path) or "(root)"
        raise ConfigError(
            f"the output schema is not a valid JSON Schema at {where}: {error.message}"
        ) from None
    except TypeError as error:
        raise ConfigError(str(error)) from None


_TOOL_CHOICE_MODES = ("auto", "none", "required")


def _check_tools(
    tools: tuple[ToolDefinition, ...], tool_choice: ToolChoice | None, spec: OutputSpec | None
) -> None:
    """Raise `ConfigError` for tool definitions or a tool choice that no provider could send."""
    names = [tool.name for tool in tools]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"tool names must be unique, got {', '.join(duplicates)} more than once")
    if tools and spec is not None:
        raise ConfigError(
            "a call cannot send tools and an output schema together; "
            "ask for the structured output in a separate call after the tool calls"
        )
    if tool_choice is None:
        return
    if not tools:
        raise ConfigError(f"tool_choice {tool_choice!r} was given without tools; pass tools or leave it unset")
    if tool_choice in _TOOL_CHOICE_MODES or tool_choice in names:
        return
    raise ConfigError(
        f"tool_choice must be one of {', '.join(_TOOL_CHOICE_MODES)} or a tool name "
        f"({', '.join(names)}), got {tool_choice!r}"
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
        limiter: the rate limiter; by default in-process, or in Redis when
            ``TRUNKLINE_REDIS_URL`` (or ``redis_url``) is set.
        ledger: the budget ledger, chosen the same way.
        scores: reads golden-set scores by deployment for a task and a prompt
            version (``name@version``, or None for any), for score-based
            downgrades; by default from the record store. A call that names
            its prompt version is judged by that version's scores when the
            route's first deployment has one, else by the task's latest.

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
        limiter: RateLimiter | None = None,
        ledger: BudgetLedger | None = None,
        scores: ScoreReader | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self._providers: dict[str, Provider] = dict(providers or {})
        self._limiter = limiter
        self._ledger = ledger
        self._score_reader = scores
        self._scores: dict[tuple[str, str | None], tuple[float, Mapping[str, TaskScore]]] = {}
        self.breakers = BreakerBoard()
        self._limits: dict[str, Limits | None] = {}
        self._retry: dict[str, RetryPolicy] = {}
        self._cheapest: dict[tuple[str, object], list[str]] = {}

    def provider(self, deployment: str) -> Provider:
        """Return the adapter of `deployment`, building it on first use."""
        if deployment not in self._providers:
            self._providers[deployment] = build_provider(self.settings.deployments[deployment])
        return self._providers[deployment]

    @property
    def limiter(self) -> RateLimiter:
        if self._limiter is None:
            with self._shared_state():
                self._limiter = build_limiter(self.settings.shared_redis_url())
        return self._limiter

    @property
    def ledger(self) -> BudgetLedger:
        if self._ledger is None:
            with self._shared_state():
                self._ledger = build_ledger(self.settings.shared_redis_url())
        return self._ledger

    @contextmanager
    def _shared_state(self) -> Iterator[None]:
        """Turn a failure of the Redis that keeps shared limits and budgets into a `ConfigError`."""
        try:
            yield
        except (redis.RedisError, OSError, ValueError) as error:
            url = self.settings.shared_redis_url()
            if not url:
                raise
            raise ConfigError(
                f"the Redis at {safe_redis_url(url)} that keeps shared rate limits and budgets "
                f"failed: {type(error).__name__}: {error}. Start Redis there, fix "
                "TRUNKLINE_REDIS_URL (or redis_url), or unset it to keep limits in this process"
            ) from error

    def health(self) -> list[BreakerStatus]:
        """Return the circuit breaker of every deployment this router has called."""
        now = asyncio.get_running_loop().time() if _in_loop() else time.monotonic()
        return [breaker.status(name, now) for name, breaker in self.breakers.items()]

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
        if self._limiter is not None:
            await self._limiter.aclose()
        if self._ledger is not None:
            await self._ledger.aclose()

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
        task: str | None = None,
        tags: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        budgets: Mapping[str, float] | None = None,
        tools: Sequence[ToolDefinition] = (),
        tool_choice: ToolChoice | None = None,
        parallel_tool_calls: bool | None = None,
    ) -> CallResult:
        """Complete `prompt` on `route` and return the output with its call record.

        The record is exported whether the call succeeds or fails. `task`
        names the golden set whose scores decide score-based downgrades; by
        default the route's ``task``, else the route's name. `budgets` adds
        spending limits in USD by scope name, such as a gateway key's daily
        budget, to those of the configuration and the open run or session.
        `tools` are sent in each provider's native format; the tool calls
        the model requests are in ``result.record.tool_calls``, and their
        arguments reach the caller unchecked, because the caller runs the
        tools and returns a bad call to the model as a tool error.
        `parallel_tool_calls` False allows at most one tool call a reply;
        None leaves the provider's default, which allows several.

        Raises:
            CallError: the call failed; ``error.record`` is its record.
            BudgetExceeded: the call would cross a budget and was not sent.
            ConfigError: the route or one of its deployments is not configured.
        """
        state, base = self._start(
            prompt, route, output, temperature, max_tokens, top_p, stop, seed,
            prompt_name, prompt_version, task, tags, extra, budgets=budgets,
            tools=tuple(tools), tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
        )
        live = open_span(f"chat {state.route_name}", "call", state.context, route=state.route_name)
        base.update(span_id=live.span_id, parent_span_id=live.parent_span_id)
        try:
            # Route-level log lines (retries, fallbacks) carry the call's span id.
            with inside_span(live.span_id, state.context):
                response, parsed = await self._run_route(state)
        except (TrunklineError, asyncio.CancelledError) as error:
            finish_call(base, state, live, None, None, error)
            raise
        record = finish_call(base, state, live, response, parsed, None)
        return CallResult(
            output=parsed if state.spec is not None else response.text,
            record=record,
            tool_calls=response.tool_calls,
        )

    def complete_sync(self, prompt: MessagesInput, **options: Any) -> CallResult:
        """Run `complete` to the end from synchronous code; not from inside an event loop."""
        return asyncio.run(self.complete(prompt, **options))

    def stream(
        self,
        prompt: MessagesInput,
        *,
        route: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        top_p: float | None = None,
        stop: Sequence[str] = (),
        seed: int | None = None,
        prompt_name: str | None = None,
        prompt_version: str | None = None,
        task: str | None = None,
        tags: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        budgets: Mapping[str, float] | None = None,
        tools: Sequence[ToolDefinition] = (),
        tool_choice: ToolChoice | None = None,
        parallel_tool_calls: bool | None = None,
    ) -> CallStream:
        """Stream the completion of `prompt` as text deltas from the returned object.

        Retries and fallbacks happen only before the first delta. Once text
        has reached the caller, a failure ends the call, and its record
        keeps the partial text. After the loop, ``stream.result`` is the
        `CallResult`, and its record has the tool calls that `tools`
        made possible. Example::

            stream = router.stream("Tell a story", route="fast")
            async for delta in stream:
                print(delta, end="")
            print(stream.result.record.time_to_first_token_ms)
        """
        state, base = self._start(
            prompt, route, None, temperature, max_tokens, top_p, stop, seed,
            prompt_name, prompt_version, task, tags, extra, streaming=True, budgets=budgets,
            tools=tuple(tools), tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
        )
        return CallStream(self, state, base)

    def _start(
        self,
        prompt: MessagesInput,
        route: str | None,
        output: type[BaseModel] | dict[str, Any] | None,
        temperature: float | None,
        max_tokens: int | None,
        top_p: float | None,
        stop: Sequence[str],
        seed: int | None,
        prompt_name: str | None,
        prompt_version: str | None,
        task: str | None,
        tags: Mapping[str, str] | None,
        extra: Mapping[str, Any] | None,
        *,
        streaming: bool = False,
        budgets: Mapping[str, float] | None = None,
        tools: tuple[ToolDefinition, ...] = (),
        tool_choice: ToolChoice | None = None,
        parallel_tool_calls: bool | None = None,
    ) -> tuple[CallState, dict[str, Any]]:
        route_name = route or self.settings.default_route
        policy = self.settings.route(route_name)
        spec = _output_spec(output) if output is not None else None
        _check_tools(tools, tool_choice, spec)
        if parallel_tool_calls is not None and not tools:
            raise ConfigError("parallel_tool_calls was given without tools; pass tools or leave it unset")
        messages = _to_messages(prompt)
        if max_tokens is not None and max_tokens < 1:
            raise ConfigError(f"max_tokens must be 1 or more, got {max_tokens}; leave it unset for the default")
        if tags and not all(isinstance(value, str) for value in tags.values()):
            raise ConfigError(f"tag values must be strings, got {dict(tags)!r}; convert them with str()")
        template = ModelRequest(
            # The first deployment's model, so the common one-hop call needs no copy.
            model=self.settings.deployments[policy.deployments[0]].model,
            messages=messages,
            temperature=temperature,
            max_tokens=max_tokens,
            top_p=top_p,
            stop=tuple(stop),
            seed=seed,
            output_schema=spec.json_schema if spec else None,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            extra=dict(extra or {}),
        )
        context = current_context()
        all_tags = {**context.tags, **(tags or {})} if tags else context.tags
        deadline = None
        # A stream's deadline starts at its first iteration, inside the event loop.
        if policy.deadline_s is not None and not streaming:
            deadline = asyncio.get_running_loop().time() + policy.deadline_s
        state = CallState(
            route_name=route_name,
            policy=policy,
            template=template,
            spec=spec,
            deadline=deadline,
            budgets=self._budgets(context.run_id, context.session_id, all_tags, context, budgets),
            task=task or policy.task or route_name,
            context=context,
            prompt=f"{prompt_name}@{prompt_version}" if prompt_name and prompt_version else None,
        )
        base = {
            "call_id": random_hex(),
            "trace_id": context.trace_id,
            "run_id": context.run_id,
            "session_id": context.session_id,
            "tags": dict(all_tags),
            "route": route_name,
            "model_requested": route_name,
            "prompt_name": prompt_name,
            "prompt_version": prompt_version,
            "messages": list(messages),
            "parameters": template.parameters(),
        }
        if tools:
            base["tools"] = list(tools)
            base["tool_choice"] = tool_choice
        return state, base

    def _budgets(self, run_id, session_id, tags, context, extra) -> dict[str, float]:  # noqa: ANN001
        """Return every budget the call falls under, by scope name."""
        configured = self.settings.budgets
        budgets: dict[str, float] = dict(extra or {})
        run_limit = context.run_budget_usd if context.run_budget_usd is not None else configured.run_usd
        if run_id and run_limit is not None:
            budgets[f"run:{run_id}"] = run_limit
        session_limit = (
            context.session_budget_usd
            if context.session_budget_usd is not None
            else configured.session_usd
        )
        if session_id and session_limit is not None:
            budgets[f"session:{session_id}"] = session_limit
        if configured.tags:
            for key, value in tags.items():
                limit = configured.tags.get(f"{key}={value}")
                if limit is not None:
                    budgets[f"tag:{key}={value}"] = limit
        return budgets

    async def _run_route(self, state: CallState) -> tuple[Any, Any]:
        """Walk the deployments in order; return the first usable response and its parsed output."""
        policy = state.policy
        plan = list(policy.deployments)
        candidates = self._cheapest_first(state)
        if candidates and "scores" in policy.downgrade_when:
            scores = await self._task_scores(state.task, state.prompt)
            if state.prompt is not None and policy.deployments[0] not in scores:
                # The prompt version was never scored here: judge by the task's latest results.
                scores = await self._task_scores(state.task, None)
            choice = score_downgrade(policy, dict(scores), candidates, state.task) if scores else None
            if choice is not None:
                plan.insert(0, choice[0])
                state.downgrades.append(
                    Downgrade(
                        from_deployment=policy.deployments[0],
                        to_deployment=choice[0],
                        reason="scores",
                        detail=choice[1],
                    )
                )
        rules = FallbackRules()
        failures: list[CallError] = []
        tried: set[str] = set()
        loop = asyncio.get_running_loop()
        index = 0
        while index < len(plan):
            name = plan[index]
            index += 1
            if name in tried:
                continue
            tried.add(name)
            if state.deadline is not None and loop.time() >= state.deadline:
                for untouched in dict.fromkeys(plan[index - 1 :]):
                    if untouched not in tried or untouched == name:
                        state.fallbacks.append(
                            FallbackHop(
                                deployment=untouched,
                                reason="deadline",
                                detail="not tried: the call's deadline had passed",
                            )
                        )
                raise deadline_passed(state, failures)
            deployment = self.settings.deployments[name]
            skip = rules.reject_reason(name, deployment, policy)
            breaker = self.breakers.get(name, policy.breaker_failures, policy.breaker_cooldown_s)
            if skip is None and not breaker.allow(loop.time()):
                skip = (
                    "circuit_open",
                    f"circuit open after {breaker.consecutive_failures} consecutive failures "
                    f"(last: {breaker.last_error}); next probe in "
                    f"{breaker.retry_in_s(loop.time()):.1f}s",
                )
            if skip is not None:
                state.fallbacks.append(FallbackHop(deployment=name, reason=skip[0], detail=skip[1]))
                continue
            state.deployment, state.provider, state.model = name, deployment.provider, deployment.model
            untried = [candidate for candidate in candidates if candidate not in tried]
            may_downgrade = name in policy.deployments and bool(untried)
            probe_only = may_downgrade and "rate_limit" in policy.downgrade_when
            try:
                return await self._run_deployment(name, deployment, state, probe_only)
            except _Rejected as refusal:
                reason = "budget_exceeded" if refusal.reason == "budget" else "rate_limited"
                state.fallbacks.append(
                    FallbackHop(deployment=name, reason=reason, detail=redact(str(refusal.error)))
                )
                if may_downgrade and refusal.reason in policy.downgrade_when:
                    target = untried[0]
                    state.downgrades.append(
                        Downgrade(
                            from_deployment=name,
                            to_deployment=target,
                            reason=refusal.reason,  # type: ignore[arg-type]
                            detail=redact(str(refusal.error)),
                        )
                    )
                    plan.insert(index, target)
                    logger.info("route %s: downgrading %s to %s (%s)", state.route_name, name, target, refusal.reason)
                    continue
                failures.append(refusal.error)
                if refusal.reason == "budget":
                    break
            except CallError as error:
                failures.append(error)
                if not error.kind.falls_back:
                    break
                rules.learn(error, deployment)
                state.fallbacks.append(
                    FallbackHop(deployment=name, reason=error.kind, detail=redact(str(error)))
                )
                logger.warning(
                    "route %s: leaving deployment %s after %s", state.route_name, name, error.kind.value
                )
        raise route_failure(state, failures)

    async def _run_deployment(
        self, name: str, deployment: Deployment, state: CallState, probe_only: bool
    ) -> tuple[Any, Any]:
        breaker = self.breakers.get(name, state.policy.breaker_failures, state.policy.breaker_cooldown_s)
        try:
            provider = self.provider(name)
        except TrunklineError:
            # No attempt was made, so a probe claimed for this call is given back.
            breaker.release_probe()
            raise
        retry = self._retry_policy(state)
        request = request_for(deployment, state)
        loop = asyncio.get_running_loop()
        failures = 0
        repairs = 0
        while True:
            first = failures == 0 and repairs == 0
            try:
                result = await self._attempt(name, deployment, provider, request, state, probe_only and first)
            except _Rejected as refusal:
                breaker.release_probe()
                if first:
                    raise
                raise refusal.error from None
            except ProviderError as error:
                if error.kind.counts_against_deployment:
                    breaker.record_failure(loop.time(), f"{error.kind.value}")
                else:
                    breaker.record_success()
                failures += 1
                remaining = None if state.deadline is None else state.deadline - loop.time()
                decision = retry.decide(error, failures, remaining)
                last = state.attempts[-1]
                state.attempts[-1] = last.model_copy(
                    update={"wait_s": decision.wait_s, "wait_reason": decision.reason}
                )
                if decision.wait_s is None:
                    raise
                logger.warning(
                    "deployment %s: attempt %d failed with %s; retrying in %.2fs (%s)",
                    name, failures, error.kind.value, decision.wait_s, decision.reason,
                )
                await asyncio.sleep(decision.wait_s)
                continue
            except (asyncio.CancelledError, TrunklineError):
                # Cancelled, or stopped by the configuration, so the deployment sent no reply.
                breaker.release_probe()
                raise
            if isinstance(result, OpenStream):
                # The breaker learns the stream's outcome when it ends.
                return result, None
            breaker.record_success()
            try:
                # With tools sent, the caller runs them and returns bad
                # arguments to the model as a tool error it can act on.
                if not request.tools:
                    check_tool_arguments(result)
                parsed = self._validate(state.spec, result, repairs, state) if state.spec else None
            except OutputMismatch as mismatch:
                # The provider replied, but the output is unusable. The attempt
                # records why, so the record shows what each repair fixed.
                state.attempts[-1] = state.attempts[-1].model_copy(
                    update={
                        "outcome": "error",
                        "error_kind": mismatch.kind,
                        "error_message": redact(str(mismatch)),
                        "wait_reason": "repair"
                        if repairs < state.policy.max_repairs
                        else f"repairs spent ({state.policy.max_repairs})",
                    }
                )
                if repairs >= state.policy.max_repairs:
                    raise OutputInvalid(
                        f"output of {deployment.model!r} was unusable after {repairs} "
                        f"repair(s): {mismatch}",
                        text=result.text,
                        kind=mismatch.kind,
                    ) from mismatch
                repairs += 1
                request = repair_request(request, result, mismatch, state.spec is not None)
                continue
            return result, parsed

    async def _attempt(
        self,
        name: str,
        deployment: Deployment,
        provider: Provider,
        request: ModelRequest,
        state: CallState,
        probe_only: bool,
    ) -> ModelResponse | OpenStream:
        """Send one request; on success the usage and cost are added to `state`."""
        loop = asyncio.get_running_loop()
        policy = state.policy
        reservation = None
        if state.budgets:
            with self._shared_state():
                reservation = await self._reserve_budget(deployment, request, state)
        permit: Permit | None = None
        queued_ms = 0.0
        limits = self._limits_of(name, deployment)
        if limits is not None:
            waited_from = loop.time()
            max_wait = 0.0 if probe_only else policy.limit_wait_max_s
            if state.deadline is not None:
                max_wait = max(min(max_wait, state.deadline - waited_from), 0.0)
            try:
                with self._shared_state():
                    permit = await self.limiter.acquire(
                        name, limits, reserved_tokens(request, deployment), max_wait_s=max_wait
                    )
            except LimitWaitTooLong as refusal:
                if reservation is not None:
                    await self._settle(None, reservation, None, 0.0)
                message = str(refusal)
                if refusal.limit == "tpm" and request.max_tokens is None:
                    message += (
                        f" The request set no max_tokens, so the deployment's "
                        f"max_output_tokens ({deployment.max_output_tokens}) was reserved for "
                        "its output; set max_tokens, or lower max_output_tokens."
                    )
                raise _Rejected(
                    "rate_limit", CallError(message, kind=ErrorKind.RATE_LIMITED)
                ) from refusal
            queued_ms = (loop.time() - waited_from) * 1000.0
        timeout = policy.timeout_s
        if state.deadline is not None:
            timeout = min(timeout, state.deadline - loop.time())
        attempt = {
            "attempt_number": len(state.attempts) + 1,
            "deployment": name,
            "provider": provider.name,
            "model": request.model,
            "started_at": datetime.now(UTC),
            "queued_ms": queued_ms,
            "span_id": new_span_id(),
        }
        # Log lines and spans opened while the attempt runs (the local model's
        # generation on its thread) carry the attempt's span id.
        with inside_span(attempt["span_id"], state.context):
            clock = time.perf_counter()
            try:
                if timeout <= 0:
                    raise TimeoutError
                async with asyncio.timeout(timeout):
                    if state.spec is None and state.streaming:
                        stream = provider.stream(request)
                        first = await anext(stream)
                        state.time_to_first_token_ms = (time.perf_counter() - state.clock) * 1000.0
                        return OpenStream(
                            stream, first, attempt, clock, permit, reservation, name, deployment
                        )
                    response = await provider.complete(request)
            except BaseException as error:
                await self._settle(permit, reservation, None, None)
                if isinstance(error, ProviderError):
                    failure = error
                elif isinstance(error, Exception) and not isinstance(error, TrunklineError):
                    failure = attempt_failure(error, name, provider.name, request.model, timeout)
                else:
                    raise
                self.add_failed_attempt(state, attempt, clock, failure)
                if failure is error:
                    raise
                raise failure from error
            latency_ms = (time.perf_counter() - clock) * 1000.0
            cost = self.charge(deployment, response, state)
            await self._settle(permit, reservation, response, cost.total_usd)
            state.attempts.append(Attempt(**attempt, outcome="ok", latency_ms=latency_ms))
            logger.debug(
                "attempt %d at %s (%s) ok in %.0f ms: %d input and %d output tokens",
                attempt["attempt_number"],
                name,
                request.model,
                latency_ms,
                response.usage.input_tokens,
                response.usage.output_tokens,
            )
            return response

    async def _reserve_budget(
        self, deployment: Deployment, request: ModelRequest, state: CallState
    ) -> Reservation:
        worst = worst_case_usd(self.settings, deployment, request, state.started_at)
        if worst is None:
            scope, limit = next(iter(state.budgets.items()))
            raise _Rejected(
                "budget",
                BudgetExceeded(
                    f"no price is known for model {deployment.model!r}, so its calls cannot be "
                    f"checked against the budget {scope} of ${limit:.4f}; add "
                    f"[prices.{deployment.model}] to trunkline.toml",
                    scope=scope,
                    limit_usd=limit,
                    spent_usd=0.0,
                    needed_usd=float("inf"),
                ),
            )
        try:
            return await self.ledger.reserve(state.budgets, worst)
        except BudgetExceeded as error:
            raise _Rejected("budget", error) from None

    async def _settle(
        self,
        permit: Permit | None,
        reservation: Reservation | None,
        response: ModelResponse | None,
        cost_usd: float | None,
    ) -> None:
        with self._shared_state():
            if permit is not None:
                tokens = None
                if response is not None:
                    tokens = response.usage.input_tokens + response.usage.output_tokens
                await self.limiter.settle(permit, tokens)
            if reservation is not None:
                await self.ledger.settle(reservation, cost_usd or 0.0)

    def charge(  # noqa: ANN201
        self, deployment: Deployment, response: ModelResponse, state: CallState, *, batch: bool = False
    ):
        """Add a response's usage and its cost to the call; `batch` prices it at the Batch API's rate."""
        state.add_usage(response.usage)
        overrides = self.settings.prices
        model = deployment.model if deployment.model in overrides else response.model
        cost = price_usage(
            response.usage, model, provider=deployment.provider, at=state.started_at, overrides=overrides
        )
        if batch:
            cost = batch_cost(cost, deployment.batch_price_factor)
        state.add_cost(cost)
        return cost

    @staticmethod
    def add_failed_attempt(
        state: CallState, attempt: dict[str, Any], clock: float, error: CallError
    ) -> None:
        logger.debug(
            "attempt %d at %s (%s) failed with %s: %s",
            attempt["attempt_number"],
            attempt["deployment"],
            attempt["model"],
            error.kind.value,
            error,
        )
        state.attempts.append(
            Attempt(
                **attempt,
                outcome="error",
                error_kind=error.kind,
                error_message=redact(str(error)),
                status_code=getattr(error, "status_code", None),
                latency_ms=(time.perf_counter() - clock) * 1000.0,
            )
        )

    @staticmethod
    def _validate(spec: OutputSpec, response: ModelResponse, repairs: int, state: CallState) -> Any:
        try:
            parsed = spec.check(response)
        except OutputMismatch as mismatch:
            state.validation = Validation(
                output_schema=spec.json_schema, repairs=repairs, error=f"{mismatch.kind.value}: {mismatch}"
            )
            raise
        state.validation = Validation(output_schema=spec.json_schema, repairs=repairs, valid=True)
        return parsed

    def _limits_of(self, name: str, deployment: Deployment) -> Limits | None:
        if name not in self._limits:
            limits = Limits(rpm=deployment.rpm, tpm=deployment.tpm, max_concurrent=deployment.max_concurrent)
            self._limits[name] = limits if limits.active else None
        return self._limits[name]

    def _retry_policy(self, state: CallState) -> RetryPolicy:
        policy = self._retry.get(state.route_name)
        if policy is None:
            route = state.policy
            policy = RetryPolicy(
                max_attempts=route.max_attempts,
                base_s=route.backoff_base_s,
                max_s=route.backoff_max_s,
                retry_after_max_s=route.retry_after_max_s,
            )
            self._retry[state.route_name] = policy
        return policy

    def _cheapest_first(self, state: CallState) -> list[str]:
        """Return the route's downgrade deployments by price, cheapest first; cached per day."""
        if not state.policy.downgrade_to:
            return []
        key = (state.route_name, state.started_at.date())
        order = self._cheapest.get(key)
        if order is None:
            deployments = self.settings.deployments
            order = sorted(
                state.policy.downgrade_to,
                key=lambda name: unit_price_usd(self.settings, deployments[name], state.started_at),
            )
            self._cheapest[key] = order
        return order

    async def _task_scores(self, task: str, prompt: str | None) -> Mapping[str, TaskScore]:
        now = time.monotonic()
        cached = self._scores.get((task, prompt))
        if cached is not None and now - cached[0] < SCORES_TTL_S:
            return cached[1]
        reader = self._score_reader or _store_scores(self.settings)
        try:
            scores = await asyncio.to_thread(reader, task, prompt)
        except Exception as error:  # a failing reader costs the downgrade, not the call
            logger.warning(
                "cannot read golden-set scores of task %r, so no score-based downgrade: %s: %s",
                task,
                type(error).__name__,
                error,
            )
            scores = {}
        self._scores[(task, prompt)] = (now, scores)
        return scores


def safe_redis_url(url: str) -> str:
    """Return `url` with any password replaced, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _store_scores(settings: Settings) -> ScoreReader:
    """Read scores from the record store; a store that does not exist yet has none."""

    def read(task: str, prompt: str | None) -> Mapping[str, TaskScore]:
        # Imported here: the store is optional for routing, and only this reads it.
        from sqlalchemy.exc import SQLAlchemyError

        from trunkline.errors import StoreError
        from trunkline.store.database import open_store
        from trunkline.store.experiments import golden_scores

        try:
            store = open_store(settings.database_url(), migrate=False, must_exist=True)
        except StoreError:
            return {}
        try:
            return golden_scores(store, task, prompt)
        except SQLAlchemyError as error:
            raise StoreError(f"cannot read experiments from {store.safe_url()}: {error}") from error
        finally:
            store.dispose()

    return read
