"""What every model request through the gateway shares: admission, per-key limits and budgets, metrics.

A request is admitted when its model is a configured route or deployment the
key may call, and when it fits the key's requests and tokens per minute. The
key's limits go through the router's own `RateLimiter` under the scope
``key:<id>``, in Redis when one is configured, so every worker shares them.
Its daily budget is one more budget scope of the call, ``key:<id>:<UTC
date>``, which the router reserves and settles like any other.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from trunkline.config import Settings
from trunkline.errors import CallError, ConfigError, ErrorKind, TrunklineError
from trunkline.providers.base import estimate_tokens
from trunkline.resilience.limiter import Limits, LimitWaitTooLong, Permit
from trunkline.routing.router import Router
from trunkline.routing.streaming import CallStream
from trunkline.server.errors import ApiError, from_call_error
from trunkline.server.metrics import GatewayMetrics
from trunkline.store.keys import ApiKey
from trunkline.store.writer import API_KEY_TAG
from trunkline.types.calls import CallRecord
from trunkline.types.messages import Message

logger = logging.getLogger(__name__)


@dataclass
class Admission:
    """A request let in: its key, the limiter permit to settle, and what the router needs."""

    key: ApiKey
    model: str
    endpoint: str
    started: float
    permit: Permit | None
    budgets: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)


class Gateway:
    """The router, the models it offers, and the per-key checks around each call."""

    def __init__(self, settings: Settings, router: Router, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.router = router
        self.metrics = metrics
        # Routes first, then bare deployments, in the configuration's order.
        self.models = list(dict.fromkeys([*settings.routes, *settings.deployments]))
        self._known = set(self.models)
        self._key_limits: dict[tuple[int | None, int | None], Limits] = {}

    def models_for(self, key: ApiKey) -> list[str]:
        return [name for name in self.models if key.may_call(name)]

    def serves(self, model: str) -> bool:
        """Return whether `model` is a configured route or deployment."""
        return model in self._known

    def model_label(self, model: str | None) -> str:
        """Return `model` for a metrics label, or ``-`` for a name the gateway does not serve.

        Unknown names come from clients, so they would give the metrics a label value each.
        """
        return model if model is not None and model in self._known else "-"

    async def admit(
        self, key: ApiKey, model: str, messages: tuple[Message, ...], max_tokens: int | None, endpoint: str
    ) -> Admission:
        """Check the model and the key's limits, reserving a request and its tokens.

        Raises:
            ApiError: 404 for an unknown model and 403 for a model the key
                may not call. 429 with the wait when the key is at a limit,
                and 400 for a request larger than the key's tokens per
                minute. 500 when the shared limiter's Redis fails.
        """
        started = time.perf_counter()
        if model not in self._known:
            raise ApiError(
                404,
                "model_not_found",
                f"the model {model!r} is not served here; GET /v1/models lists the ones this key may use",
                param="model",
            )
        if not key.may_call(model):
            self.metrics.count_error("permission")
            raise ApiError(
                403,
                "model_not_allowed",
                f"the key {key.key_id} may not call {model!r}; it may call: {', '.join(key.routes or ())}",
                param="model",
            )
        permit = None
        if key.rpm is not None or key.tpm is not None:
            tokens = self._estimate(model, messages, max_tokens)
            try:
                permit = await self._reserve(key, tokens)
            except ApiError as refusal:
                # Counted here, because a request refused before its call never reaches `finish`.
                kind = "rate_limited" if refusal.status == 429 else None
                elapsed = time.perf_counter() - started
                self.metrics.observe(endpoint, model, refusal.status, elapsed, None, kind)
                refusal.counted = True
                raise
            except ConfigError as error:
                # The Redis of the shared limiter failed: the operator's fault, not the client's.
                refusal = self._misconfigured(key, model, error, None)
                elapsed = time.perf_counter() - started
                self.metrics.observe(endpoint, model, 500, elapsed, None, ErrorKind.CONFIGURATION.value)
                refusal.counted = True
                raise refusal from None
        budgets = {}
        if key.budget_usd_per_day is not None:
            today = datetime.now(UTC).date().isoformat()
            budgets[f"key:{key.key_id}:{today}"] = key.budget_usd_per_day
        return Admission(
            key=key,
            model=model,
            endpoint=endpoint,
            started=started,
            permit=permit,
            budgets=budgets,
            tags={API_KEY_TAG: key.key_id},
        )

    def _estimate(self, model: str, messages: tuple[Message, ...], max_tokens: int | None) -> int:
        prompt = sum(estimate_tokens(message.content) for message in messages)
        if max_tokens is None:
            first = self.settings.route(model).deployments[0]
            max_tokens = self.settings.deployments[first].max_output_tokens
        return prompt + max_tokens

    async def _reserve(self, key: ApiKey, tokens: int) -> Permit:
        limits = self._key_limits.get((key.rpm, key.tpm))
        if limits is None:
            limits = self._key_limits[(key.rpm, key.tpm)] = Limits(rpm=key.rpm, tpm=key.tpm)
        scope = f"key:{key.key_id}"
        try:
            return await self.router.limiter.acquire(scope, limits, tokens, max_wait_s=0.0)
        except LimitWaitTooLong as error:
            if not _behind_own_requests(error):
                raise _limited(key, tokens, error) from None
        # The Redis limiter sends one process's requests of a key to Redis one
        # at a time, and with no wait allowed it rejects a request that finds
        # another one of the key in flight even when both fit. Such a request
        # waits for its turn. A request over a limit is still rejected with 429
        # as soon as its wait is known to be longer than _TURN_WAIT_S.
        try:
            return await self.router.limiter.acquire(scope, limits, tokens, max_wait_s=_TURN_WAIT_S)
        except LimitWaitTooLong as error:
            raise _limited(key, tokens, error) from None

    async def finish(
        self, admission: Admission, status: int, record: CallRecord | None, error_kind: str | None = None
    ) -> None:
        """Settle the key's token reservation with the real count, and count the request."""
        if admission.permit is not None:
            actual = record.usage.total_tokens if record is not None else None
            await self.router.limiter.settle(admission.permit, actual)
        self.metrics.observe(
            admission.endpoint,
            admission.model,
            status,
            time.perf_counter() - admission.started,
            record,
            error_kind,
        )

    async def open_stream(
        self, admission: Admission, messages: tuple[Message, ...], options: dict[str, Any]
    ) -> tuple[CallStream, AsyncIterator[str], str | None]:
        """Start a streamed call and wait for its first delta (None for an empty stream).

        The response starts only after it, so that a failure before the first
        delta, retries and fallbacks spent, still gets its own status code.
        """
        try:
            stream = self.router.stream(messages, **options)
        except TrunklineError as error:
            raise await self.failed(admission, error) from None
        deltas = aiter(stream)
        try:
            first = await anext(deltas, None)
        except TrunklineError as error:
            await stream.aclose()
            raise await self.failed(admission, error) from None
        return stream, deltas, first

    async def close_stream(
        self, admission: Admission, stream: CallStream, record: CallRecord | None, error_kind: str | None
    ) -> None:
        """Close a stream, also one the client left, and account for it like any other call."""
        await stream.aclose()
        if record is None and stream.result is not None:
            record = stream.result.record
        await self.finish(admission, 200, record, error_kind)

    async def failed(self, admission: Admission, error: TrunklineError) -> ApiError:
        """Account for a failed call and return the error response the client gets.

        The router raises a `ConfigError` without a call record before the
        call starts, for the request's own content (an invalid output
        schema), so the client can fix it (400). Any other error that is not
        a `CallError`, such as a missing API key variable, stopped a call
        that had started. That is a fault of the gateway's configuration (500).
        """
        record: CallRecord | None = getattr(error, "record", None)
        call_id = record.call_id if record is not None else "-"
        if isinstance(error, CallError) and error.kind is not ErrorKind.CONFIGURATION:
            api_error = from_call_error(error)
            kind = error.kind.value
            if api_error.retry_after_s is None and api_error.status >= 500 and record is not None:
                api_error.retry_after_s = self._probe_wait(record)
        elif isinstance(error, ConfigError) and record is None:
            api_error = ApiError(400, "invalid_request", str(error))
            kind = ErrorKind.BAD_REQUEST.value
        else:
            api_error = self._misconfigured(admission.key, admission.model, error, record)
            kind = ErrorKind.CONFIGURATION.value
        if kind != ErrorKind.CONFIGURATION.value:
            logger.warning(
                "gateway call failed: key %s, model %s, status %d, kind %s, call %s: %s",
                admission.key.key_id, admission.model, api_error.status, kind, call_id, error,
            )
        if record is not None:
            api_error.headers["x-trunkline-call-id"] = record.call_id
            api_error.headers["x-trunkline-trace-id"] = record.trace_id
        await self.finish(admission, api_error.status, record, kind)
        api_error.counted = True
        return api_error

    def _misconfigured(
        self, key: ApiKey, model: str, error: TrunklineError, record: CallRecord | None
    ) -> ApiError:
        """Log a configuration fault in full and return the 500 that names no server detail."""
        call_id = record.call_id if record is not None else None
        logger.error(
            "gateway call stopped by the gateway's configuration: key %s, model %s, call %s: %s",
            key.key_id, model, call_id or "-", error,
        )
        reference = f" under call id {call_id}" if call_id else ""
        return ApiError(
            500,
            "gateway_configuration",
            f"the gateway is misconfigured for model {model!r}, so the call was not made; "
            f"the operator must fix the gateway's configuration, whose log names the problem{reference}",
        )

    def _probe_wait(self, record: CallRecord) -> float | None:
        """Return the seconds until the circuit breaker of a skipped deployment lets a probe through.

        The shortest wait over the deployments the call skipped for an open
        circuit, or None when it skipped none.
        """
        skipped = {hop.deployment for hop in record.fallbacks if hop.reason == "circuit_open"}
        if not skipped:
            return None
        # The router times its breakers with the event loop's clock.
        now = asyncio.get_running_loop().time()
        waits = [breaker.retry_in_s(now) for name, breaker in self.router.breakers.items() if name in skipped]
        return min(waits) if waits else None


#: How long a request may wait behind other requests of its key in this process.
_TURN_WAIT_S = 5.0


def _behind_own_requests(error: LimitWaitTooLong) -> bool:
    """Return whether the limiter gave up because of requests ahead in this process, not a limit."""
    # Key limits set no max_concurrent, so an unknown wait on rpm or
    # "concurrency" can only come from the limiter's own queue.
    return math.isinf(error.wait_s) and error.limit != "tpm"


def _limited(key: ApiKey, tokens: int, error: LimitWaitTooLong) -> ApiError:
    """Return the error for a request over one of its key's limits: 429, or 400 when no wait helps."""
    if error.limit == "tpm" and math.isinf(error.wait_s):
        # No wait lets it through, so a 429 would only make clients retry in vain.
        return ApiError(
            400,
            "invalid_request",
            f"this request's estimated {tokens} tokens (prompt plus max_tokens) exceed the "
            f"key's limit of {error.limit_value} tokens per minute, so it can never be admitted; "
            "lower max_tokens or ask an admin to raise the key's tpm",
            param="max_tokens",
        )
    if math.isinf(error.wait_s):
        return ApiError(
            429,
            "rate_limit_exceeded",
            f"too many requests of the key {key.key_id} are waiting in this gateway; "
            "retry after 1 s",
            retry_after_s=1.0,
        )
    amount = "requests" if error.limit == "rpm" else "tokens"
    return ApiError(
        429,
        "rate_limit_exceeded",
        f"the key {key.key_id} is at its limit of {error.limit_value} {amount} per minute; "
        f"retry after {error.wait_s:.1f} s",
        retry_after_s=error.wait_s,
    )
