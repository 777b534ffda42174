"""Sending a plan's requests to a running gateway over its OpenAI-compatible endpoint."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import httpx

from trunkline.errors import ConfigError
from trunkline.loadtest.plan import PlannedRequest
from trunkline.loadtest.runner import CallSample
from trunkline.providers.base import kind_from_status

CHAT_PATH = "/v1/chat/completions"


def check_target_url(url: str) -> str:
    """Return `url` without a trailing slash, or raise when it is not an http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"--target {url!r} is not an http:// or https:// URL; give the gateway's base "
            "URL, such as http://127.0.0.1:8000"
        )
    return url.rstrip("/")


class GatewaySender:
    """Posts each request to ``/v1/chat/completions`` of a gateway, with the route as its model.

    The gateway's router does the retries and fallbacks, and its responses
    do not carry the attempts, so the samples have none. The cost comes
    from the ``x-trunkline-cost-usd`` response header.
    """

    def __init__(
        self, url: str, api_key: str | None, *, clock_start: float, timeout_s: float, max_in_flight: int
    ) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.clock_start = clock_start
        self.client = httpx.AsyncClient(
            base_url=check_target_url(url),
            headers=headers,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def send(self, planned: PlannedRequest, started_s: float) -> CallSample:
        body = {
            "model": planned.route,
            "messages": [{"role": "user", "content": planned.prompt()}],
            "max_tokens": planned.output_tokens,
        }
        clock = time.perf_counter()
        status: int | None = None
        try:
            response = await self.client.post(CHAT_PATH, json=body)
            status = response.status_code
            kind = None if status == 200 else kind_from_status(status, response.text).value
        except httpx.TimeoutException:
            response, kind = None, "timeout"
        except httpx.TransportError:
            response, kind = None, "connection"
        latency_ms = (time.perf_counter() - clock) * 1000.0
        sample = CallSample(
            index=planned.index,
            route=planned.route,
            started_s=started_s,
            ended_s=asyncio.get_running_loop().time() - self.clock_start,
            latency_ms=latency_ms,
            outcome="ok" if kind is None else "error",
            error_kind=kind,
            status_code=status,
        )
        if response is not None and kind is None:
            usage = response.json().get("usage") or {}
            sample.input_tokens = int(usage.get("prompt_tokens", 0))
            sample.output_tokens = int(usage.get("completion_tokens", 0))
            cost = response.headers.get("x-trunkline-cost-usd")
            sample.cost_usd = float(cost) if cost is not None else None
        return sample
