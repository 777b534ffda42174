"""What every model request through the gateway shares: admission, per-key limits and budgets, metrics.

A request is admitted when its model is a configured route or deployment the
key may call, and when it fits the key's requests and tokens per minute. The
key's limits go through the router's own `RateLimiter` (in Redis when one is
configured, so every worker shares them) under the scope ``key:<id>``; its
daily budget is one more budget scope of the call, ``key:<id>:<UTC date>``,
which the router reserves and settles like any other.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from trunkline.config import Settings
from trunkline.errors import CallError
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

    async def admit(
        self, key: ApiKey, model: str, messages: tuple[Message, ...], max_tokens: int | None, endpoint: str
    ) -> Admission:
        """Check the model and the key's limits, reserving a request and its tokens.

        Raises:
            ApiError: 404 for an unknown model, 403 for a model the key may
                not call, 429 with the wait when the key is at a limit.
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
            self.metrics.errors.labels("permission").inc()
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
            except ApiError:
                # Counted here, because a request refused before its call never reaches `finish`.
                elapsed = time.perf_counter() - started
                self.metrics.observe(endpoint, model, 429, elapsed, None, "rate_limited")
                raise
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
        stream = self.router.stream(messages, **options)
        deltas = aiter(stream)
        try:
            first = await anext(deltas, None)
        except CallError as error:
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

    async def failed(self, admission: Admission, error: CallError) -> ApiError:
        """Account for a failed call and return the answer the client gets."""
        answer = from_call_error(error)
        record = getattr(error, "record", None)
        logger.warning(
            "gateway call failed: key %s, model %s, status %d, kind %s, call %s: %s",
            admission.key.key_id, admission.model, answer.status, error.kind.value,
            record.call_id if record is not None else "-", error,
        )
        await self.finish(admission, answer.status, getattr(error, "record", None), error.kind.value)
        return answer


#: How long a request may wait behind other requests of its key in this process.
_TURN_WAIT_S = 5.0


def _behind_own_requests(error: LimitWaitTooLong) -> bool:
    """Return whether the limiter gave up because of requests ahead in this process, not a limit."""
    # Key limits set no max_concurrent, so an unknown wait on rpm or
    # "concurrency" can only come from the limiter's own queue.
    return math.isinf(error.wait_s) and error.limit != "tpm"


def _limited(key: ApiKey, tokens: int, error: LimitWaitTooLong) -> ApiError:
    """Return the 429 for a request over one of its key's limits."""
    if error.limit == "tpm" and math.isinf(error.wait_s):
        return ApiError(
            429,
            "rate_limit_exceeded",
            f"this request's estimated {tokens} tokens (prompt plus max_tokens) exceed the "
            f"key's limit of {error.limit_value} tokens per minute; lower max_tokens or ask "
            "an admin to raise the key's tpm",
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
