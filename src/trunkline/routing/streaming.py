"""Streamed calls: text deltas to the caller, one record at the end.

The router retries and falls back until a stream yields its first item.
From then on the text is the caller's, so a failure ends the call: the
record keeps the partial text, the error kind and the estimated usage of
what was sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trunkline.config import Deployment
from trunkline.errors import CallError, ErrorKind, ProviderError, TrunklineError
from trunkline.providers.base import estimate_tokens
from trunkline.redaction import redact
from trunkline.routing.policies import estimate_input_tokens
from trunkline.routing.state import CallResult, CallState, finish_call
from trunkline.tracing import inside_span, open_span
from trunkline.types.calls import Attempt, ModelResponse
from trunkline.types.usage import Usage

if TYPE_CHECKING:
    from trunkline.resilience.budget import Reservation
    from trunkline.resilience.limiter import Permit
    from trunkline.routing.router import Router


@dataclass
class OpenStream:
    """A provider stream that has yielded its first item, with what must be settled at its end."""

    iterator: AsyncIterator[str | ModelResponse]
    first: str | ModelResponse
    attempt: dict[str, Any]
    clock: float
    permit: Permit | None
    reservation: Reservation | None
    name: str
    deployment: Deployment


class CallStream:
    """An iterator of text deltas whose `result` is the `CallResult` once it is exhausted.

    Leaving an ``async with`` block, or closing the iterator, before the
    end records the call as cancelled with the text received so far.
    """

    def __init__(self, router: Router, state: CallState, base: dict[str, Any]) -> None:
        #: The id the call's record will have, known before the first delta.
        self.call_id: str = base["call_id"]
        self._outcome = _Outcome()
        # The generator must not refer to this object: with no cycle between
        # them, dropping the stream after a `break` finalizes the generator at
        # once, which settles its limits and exports its record.
        self._iterator = _run(router, state, base, self._outcome)

    @property
    def result(self) -> CallResult | None:
        """The finished call, once the stream has ended or been closed; None before."""
        return self._outcome.result

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterator

    async def __aenter__(self) -> CallStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End the stream now; a stream that had not finished is recorded as cancelled."""
        await self._iterator.aclose()


@dataclass
class _Outcome:
    result: CallResult | None = None


async def _run(
    router: Router, state: CallState, base: dict[str, Any], outcome: _Outcome
) -> AsyncIterator[str]:
    state.streaming = True
    if state.policy.deadline_s is not None:
        # The deadline counts from the first iteration, when the call starts.
        state.deadline = asyncio.get_running_loop().time() + state.policy.deadline_s
    live = open_span(
        f"chat {state.route_name}", "call", state.context, route=state.route_name, stream=True
    )
    base.update(span_id=live.span_id, parent_span_id=live.parent_span_id)
    parts: list[str] = []
    opened: OpenStream | None = None
    response: ModelResponse | None = None
    error: BaseException | None = None
    try:
        # Set and reset with no yield between, so the consumer's context is untouched.
        with inside_span(live.span_id, state.context):
            opened, _ = await router._run_route(state)  # noqa: SLF001
        item = opened.first
        while not isinstance(item, ModelResponse):
            if item:
                parts.append(item)
                yield item
            item = await _next(state, opened)
        response = item
    except (TrunklineError, asyncio.CancelledError, GeneratorExit) as failure:
        error = failure
    finally:
        record_error = error if not isinstance(error, GeneratorExit) else asyncio.CancelledError()
        if opened is not None:
            await _finish_attempt(router, state, opened, response, record_error, "".join(parts))
        record = finish_call(base, state, live, response, None, record_error, "".join(parts))
        outcome.result = CallResult(
            output=record.output_text or "",
            record=record,
            tool_calls=response.tool_calls if response is not None and error is None else (),
        )
    if error is not None:
        raise error


async def _next(state: CallState, opened: OpenStream) -> str | ModelResponse:
    """Wait for the next item, no longer than the idle timeout and the deadline allow."""
    loop = asyncio.get_running_loop()
    limit = idle = state.policy.stream_idle_timeout_s
    if state.deadline is not None:
        limit = min(limit, state.deadline - loop.time())
    try:
        async with asyncio.timeout(max(limit, 0.0)):
            return await anext(opened.iterator)
    except TimeoutError:
        if limit < idle:
            reason = f"the call's deadline of {state.policy.deadline_s:g}s passed while it was open"
        else:
            reason = f"it sent nothing for {idle:g}s (stream_idle_timeout_s)"
        raise ProviderError(
            f"stream from {opened.name} timed out: {reason}",
            kind=ErrorKind.TIMEOUT,
            provider=opened.deployment.provider,
            model=opened.deployment.model,
        ) from None
    except StopAsyncIteration:
        raise ProviderError(
            f"stream from {opened.name} ended without its final response",
            kind=ErrorKind.SERVER_ERROR,
            provider=opened.deployment.provider,
            model=opened.deployment.model,
        ) from None
    except (CallError, asyncio.CancelledError):
        raise
    except Exception as failure:  # a transport error the adapter did not translate
        raise ProviderError(
            f"stream from {opened.name} broke off: {type(failure).__name__}: {failure}",
            kind=ErrorKind.CONNECTION,
            provider=opened.deployment.provider,
            model=opened.deployment.model,
        ) from failure

async def _finish_attempt(
    router: Router,
    state: CallState,
    opened: OpenStream,
    response: ModelResponse | None,
    error: BaseException | None,
    partial: str,
) -> None:
    """Close the provider stream, charge what it used and record the attempt."""
    if response is None:
        aclose = getattr(opened.iterator, "aclose", None)
        if aclose is not None:
            await aclose()

    cost_usd = 0.0
    if response is not None:
        cost_usd = router.charge(opened.deployment, response, state).total_usd or 0.0
    elif partial:
        # A provider may bill the text it generated before the break, and no
        # usage came back, so the charge is an estimate from the text.
        used = Usage(
            input_tokens=estimate_input_tokens(state.template),
            output_tokens=estimate_tokens(partial),
            estimated=True,
        )
        estimate = ModelResponse(text=partial, model=opened.deployment.model, usage=used)
        cost_usd = router.charge(opened.deployment, estimate, state).total_usd or 0.0
    await router._settle(opened.permit, opened.reservation, response, cost_usd)  # noqa: SLF001

    latency_ms = (time.perf_counter() - opened.clock) * 1000.0
    breaker = router.breakers.get(
        opened.name, state.policy.breaker_failures, state.policy.breaker_cooldown_s
    )
    kind = None
    if error is not None:
        kind = error.kind if isinstance(error, CallError) else ErrorKind.CANCELLED
    if kind is not None and kind.counts_against_deployment:
        breaker.record_failure(asyncio.get_running_loop().time(), kind.value)
    else:
        # The deployment sent a reply, even if the caller left early.
        breaker.record_success()
    if kind is None:
        state.attempts.append(Attempt(**opened.attempt, outcome="ok", latency_ms=latency_ms))
        return
    state.attempts.append(
        Attempt(
            **opened.attempt,
            outcome="error",
            error_kind=kind,
            error_message=redact(str(error)) or type(error).__name__,
            status_code=getattr(error, "status_code", None),
            latency_ms=latency_ms,
        )
    )
