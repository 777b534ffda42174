"""The in-process simulated provider that replaces a deployment during a load test."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from trunkline.config import SimulatedUpstream
from trunkline.errors import ErrorKind, ProviderError
from trunkline.loadtest.faults import FaultModel, UpstreamCounts
from trunkline.loadtest.instances import minimal_instance
from trunkline.providers.base import Provider, estimate_tokens, kind_from_status
from trunkline.types.calls import ModelRequest, ModelResponse
from trunkline.types.usage import Usage

#: Output tokens of a reply to a request that sets no ``max_tokens``.
DEFAULT_OUTPUT_TOKENS = 16


def reply_text(output_schema: dict[str, Any] | None) -> str:
    """Return ``ok``, or the smallest JSON value that `output_schema` accepts."""
    if output_schema is None:
        return "ok"
    return json.dumps(minimal_instance(output_schema))


class SimulatedProvider(Provider):
    """Answers like a real provider under load: latency, 429s, bursts of 5xx and timeouts.

    A successful reply reports the prompt's estimated tokens as input and
    the request's ``max_tokens`` as output, so the load generator sets the
    output size of each request through ``max_tokens``. Its text is
    ``ok``, or with an output schema the smallest JSON value it accepts. Failures are raised
    as the `ProviderError` an HTTP adapter would raise for the same status,
    with the ``Retry-After`` wait on 429s. A timed-out request sleeps for
    ``hang_s``, so the router's attempt timeout cancels it first unless the
    timeout is longer; then it fails with 504.
    """

    name = "simulated"

    def __init__(self, model: str, behaviour: SimulatedUpstream, *, seed: int | str) -> None:
        self.model = model
        self.faults = FaultModel(behaviour, seed=seed)

    @property
    def counts(self) -> UpstreamCounts:
        """Requests received so far, by the outcome drawn for them."""
        return self.faults.counts

    async def complete(self, request: ModelRequest) -> ModelResponse:
        draw = self.faults.draw()
        if draw.latency_s > 0:
            try:
                await asyncio.sleep(draw.latency_s)
            except asyncio.CancelledError:
                self.faults.abandoned(draw)
                raise
        self.faults.answered(draw)
        behaviour = self.faults.behaviour
        if draw.outcome == "rate_limited":
            raise ProviderError(
                f"simulated 429: rate limited, retry after {behaviour.retry_after_s:g}s",
                kind=ErrorKind.RATE_LIMITED,
                provider=self.name,
                model=request.model,
                status_code=429,
                retry_after_s=behaviour.retry_after_s,
            )
        if draw.outcome == "server_error":
            status = behaviour.server_error_status
            raise ProviderError(
                f"simulated HTTP {status}",
                kind=kind_from_status(status),
                provider=self.name,
                model=request.model,
                status_code=status,
            )
        if draw.outcome == "timeout":
            raise ProviderError(
                f"simulated HTTP 504 after hanging {behaviour.hang_s:g}s",
                kind=ErrorKind.TIMEOUT,
                provider=self.name,
                model=request.model,
                status_code=504,
            )
        prompt_chars = sum(len(message.content) for message in request.messages)
        return ModelResponse(
            text=reply_text(request.output_schema),
            model=self.model,
            usage=Usage(
                input_tokens=estimate_tokens("x" * prompt_chars),
                output_tokens=request.max_tokens or DEFAULT_OUTPUT_TOKENS,
            ),
            response_id=f"simulated-{self.counts.requests}",
        )
