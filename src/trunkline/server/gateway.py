"""What every model request through the gateway shares: admission, per-key limits and budgets, metrics.

A request is admitted when its model is a configured route or deployment the
key may call, and when it fits the key's requests and tokens per minute. The
key's limits go through the router's own `RateLimiter` (in Redis when one is
configured, so every worker shares them) under the scope ``key:<id>``; its
daily budget is one more budget scope of the call, ``key:<id>:<UTC date>``,
which the router reserves and settles like any other.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from trunkline.config import Settings
from trunkline.errors import CallError
from trunkline.providers.base import estimate_tokens
from trunkline.resilience.limiter import Limits, LimitWaitTooLong, Permit
from trunkline.routing.router import Router
from trunkline.server.errors import ApiError, from_call_error
from trunkline.server.metrics import GatewayMetrics
from trunkline.store.keys import ApiKey
from trunkline.store.writer import API_KEY_TAG
from trunkline.types.calls import CallRecord
from trunkline.types.messages import Message


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
            raise ApiError(
                403,
                "model_not_allowed",
                f"the key {key.key_id} may not call {model!r}; it may call: {', '.join(key.routes or ())}",
                param="model",
            )
        permit = None
        if key.rpm is not None or key.tpm is not None:
            tokens = self._estimate(model, messages, max_tokens)
            permit = await self._reserve(key, tokens)
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
        try:
            return await self.router.limiter.acquire(f"key:{key.key_id}", limits, tokens, max_wait_s=0.0)
        except LimitWaitTooLong as error:
            if error.limit == "tpm" and math.isinf(error.wait_s):
                raise ApiError(
                    429,
                    "rate_limit_exceeded",
                    f"this request's estimated {tokens} tokens (prompt plus max_tokens) exceed the "
                    f"key's limit of {error.limit_value} tokens per minute; lower max_tokens or ask "
                    "an admin to raise the key's tpm",
                ) from None
            amount = "requests" if error.limit == "rpm" else "tokens"
            raise ApiError(
                429,
                "rate_limit_exceeded",
                f"the key {key.key_id} is at its limit of {error.limit_value} {amount} per minute; "
                f"retry after {error.wait_s:.1f} s",
                retry_after_s=error.wait_s,
            ) from None

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

    async def failed(self, admission: Admission, error: CallError) -> ApiError:
        """Account for a failed call and return the answer the client gets."""
        answer = from_call_error(error)
        await self.finish(admission, answer.status, getattr(error, "record", None), error.kind.value)
        return answer
