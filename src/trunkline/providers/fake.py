"""Models that need no provider: a scripted queue for tests and a simulation for load work.

`ScriptedModel` replies from a queue of `FakeReply` and `FakeFailure` items,
in order, so a test can script "429 with Retry-After, then success".
`SimulatedModel` draws latencies and failures at random from a seeded
generator, for load rehearsals. Both stream too: a reply's text arrives in
chunks, and a `FakeReply` can pause between chunks, break off or stall.
Every wait is an `asyncio.sleep`, so tests on a virtual clock such as
looptime's do not really wait.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from trunkline.errors import ConfigError, ErrorKind, ProviderError
from trunkline.providers.base import Provider, estimate_tokens, kind_from_status, parse_retry_after
from trunkline.types.calls import FinishReason, ModelRequest, ModelResponse
from trunkline.types.messages import ToolCall
from trunkline.types.usage import Usage


@dataclass(frozen=True)
class FakeReply:
    """A successful response; token counts left as None are estimated from the text.

    `latency_s` is the wait before the response, or before the first chunk
    of a stream. The fields from `chunks` on apply only to `stream`, because
    `complete` always returns the whole reply.
    """

    text: str
    latency_s: float = 0.0
    finish_reason: FinishReason = "stop"
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0
    model: str | None = None
    #: The text deltas that `stream` yields, which must join to `text`. None
    #: splits `text` after each run of whitespace, about one chunk per word.
    chunks: tuple[str, ...] | None = None
    #: Seconds `stream` waits before each chunk after the first.
    chunk_delay_s: float = 0.0
    #: Number of chunks `stream` yields before it raises `ProviderError`, or None.
    break_after: int | None = None
    #: The kind of the error that `break_after` raises.
    break_kind: ErrorKind = ErrorKind.CONNECTION
    #: Number of chunks `stream` yields before it waits until cancelled, or None.
    stall_after: int | None = None
    #: The tool calls the reply requests. With any, a `finish_reason` left
    #: at ``stop`` is reported as ``tool_calls``, as providers report it.
    tool_calls: tuple[ToolCall, ...] = ()

    def __post_init__(self) -> None:
        if self.chunks is not None and "".join(self.chunks) != self.text:
            raise ConfigError(
                f"FakeReply chunks {self.chunks!r} do not join to its text {self.text!r}"
            )
        if self.latency_s < 0 or self.chunk_delay_s < 0:
            raise ConfigError("FakeReply latency_s and chunk_delay_s must not be negative")
        count = len(self.stream_chunks())
        for name in ("break_after", "stall_after"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= count:
                raise ConfigError(
                    f"FakeReply {name} must be between 0 and its chunk count {count}, "
                    f"got {value}"
                )

    def stream_chunks(self) -> tuple[str, ...]:
        """Return the text deltas that `stream` yields for this reply."""
        if self.chunks is not None:
            return self.chunks
        return tuple(piece for piece in re.split(r"(?<=\s)(?=\S)", self.text) if piece)


@dataclass(frozen=True)
class FakeFailure:
    """A failed attempt, as an HTTP error or, with `status` None, a timeout or dropped connection."""

    status: int | None = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    latency_s: float = 0.0
    #: Used when `status` is None: ``timeout`` or ``connection``.
    kind: ErrorKind | None = None


ScriptItem = FakeReply | FakeFailure | Callable[[ModelRequest], "FakeReply | FakeFailure"]


def _usage(reply: FakeReply, request: ModelRequest) -> Usage:
    prompt = "".join(message.content for message in request.messages)
    estimated = reply.input_tokens is None or reply.output_tokens is None
    return Usage(
        input_tokens=reply.input_tokens
        if reply.input_tokens is not None
        else estimate_tokens(prompt),
        output_tokens=reply.output_tokens
        if reply.output_tokens is not None
        else estimate_tokens(reply.text),
        cache_read_tokens=reply.cache_read_tokens,
        reasoning_tokens=reply.reasoning_tokens,
        estimated=estimated,
    )


class _FakeBase(Provider):
    name = "fake"

    def __init__(self, model: str) -> None:
        self.model = model
        #: Every request received, in order, for tests to inspect.
        self.requests: list[ModelRequest] = []

    async def _play(self, item: FakeReply | FakeFailure, request: ModelRequest) -> ModelResponse:
        if item.latency_s > 0:
            await asyncio.sleep(item.latency_s)
        if isinstance(item, FakeFailure):
            raise self._error(item)
        return self._response(item, request)

    async def _play_stream(
        self, item: FakeReply | FakeFailure, request: ModelRequest
    ) -> AsyncIterator[str | ModelResponse]:
        if item.latency_s > 0:
            await asyncio.sleep(item.latency_s)
        if isinstance(item, FakeFailure):
            raise self._error(item)
        chunks = item.stream_chunks()
        # One step past the last chunk, so that a break or stall can also come
        # after every chunk but before the final response.
        for index in range(len(chunks) + 1):
            if item.break_after == index:
                raise ProviderError(
                    f"fake stream broke off after {index} chunks",
                    kind=item.break_kind,
                    provider=self.name,
                    model=self.model,
                )
            if item.stall_after == index:
                await asyncio.get_running_loop().create_future()
            if index == len(chunks):
                break
            if index and item.chunk_delay_s > 0:
                await asyncio.sleep(item.chunk_delay_s)
            yield chunks[index]
        yield self._response(item, request)

    def _response(self, item: FakeReply, request: ModelRequest) -> ModelResponse:
        finish = item.finish_reason
        if item.tool_calls and finish == "stop":
            finish = "tool_calls"
        return ModelResponse(
            text=item.text,
            model=item.model or self.model,
            finish_reason=finish,
            usage=_usage(item, request),
            response_id=f"fake-{len(self.requests)}",
            tool_calls=item.tool_calls,
        )

    def _error(self, failure: FakeFailure) -> ProviderError:
        if failure.status is None:
            kind = failure.kind or ErrorKind.CONNECTION
            return ProviderError(
                f"fake {kind.value}", kind=kind, provider=self.name, model=self.model
            )
        return ProviderError(
            f"fake HTTP {failure.status}: {failure.body or 'scripted failure'}",
            kind=failure.kind or kind_from_status(failure.status, failure.body),
            provider=self.name,
            model=self.model,
            status_code=failure.status,
            retry_after_s=parse_retry_after(failure.headers),
        )


class ScriptedModel(_FakeBase):
    """Replies to each request with the next item of its script.

    An item may be a callable that receives the request and returns a reply
    or a failure. When the script runs out, `default` is used; with no
    default, the call fails with a `ConfigError` naming the request count.
    """

    def __init__(
        self,
        script: Iterable[ScriptItem] = (),
        *,
        model: str = "fake-model",
        default: ScriptItem | None = None,
    ) -> None:
        super().__init__(model)
        self.script: deque[ScriptItem] = deque(script)
        self.default = default

    def add(self, *items: ScriptItem) -> None:
        self.script.extend(items)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        return await self._play(self._next_item(request), request)

    async def stream(self, request: ModelRequest) -> AsyncIterator[str | ModelResponse]:
        """Stream the next item of the script: its chunks, then the response."""
        self.requests.append(request)
        async for part in self._play_stream(self._next_item(request), request):
            yield part

    def _next_item(self, request: ModelRequest) -> FakeReply | FakeFailure:
        if self.script:
            item = self.script.popleft()
        elif self.default is not None:
            item = self.default
        else:
            raise ConfigError(
                f"the fake model's script ran out at request {len(self.requests)}; "
                "add more items or set a default reply"
            )
        if callable(item):
            item = item(request)
        return item


class SimulatedModel(_FakeBase):
    """Replies after a log-normal latency and fails at a set rate, reproducibly.

    Args:
        latency_ms: median latency in milliseconds.
        latency_sigma: sigma of the log-normal; 0 gives a constant latency.
        error_rate: share of attempts, from 0 to 1, that fail with `error_status`.
        text: the reply text; ``{input_chars}`` is replaced by the prompt length.
        output_tokens: output token count reported with each reply.
        seed: seed of the random generator.
        chunk_delay_ms: pause between streamed chunks in milliseconds. The
            latency then comes before the first chunk.
    """

    def __init__(
        self,
        *,
        model: str = "simulated-model",
        latency_ms: float = 0.0,
        latency_sigma: float = 0.0,
        error_rate: float = 0.0,
        error_status: int = 503,
        text: str = "ok",
        output_tokens: int = 16,
        seed: int = 0,
        chunk_delay_ms: float = 0.0,
    ) -> None:
        super().__init__(model)
        if not 0.0 <= error_rate <= 1.0:
            raise ConfigError(f"error_rate must be between 0 and 1, got {error_rate}")
        if latency_ms < 0 or latency_sigma < 0 or chunk_delay_ms < 0:
            raise ConfigError("latency_ms, latency_sigma and chunk_delay_ms must not be negative")
        self.latency_ms = latency_ms
        self.latency_sigma = latency_sigma
        self.error_rate = error_rate
        self.error_status = error_status
        self.text = text
        self.output_tokens = output_tokens
        self.chunk_delay_ms = chunk_delay_ms
        self.random = random.Random(seed)

    def _latency_s(self) -> float:
        if self.latency_ms <= 0:
            return 0.0
        if self.latency_sigma <= 0:
            return self.latency_ms / 1000.0
        return self.random.lognormvariate(math.log(self.latency_ms), self.latency_sigma) / 1000.0

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        return await self._play(self._draw(request), request)

    async def stream(self, request: ModelRequest) -> AsyncIterator[str | ModelResponse]:
        """Stream a drawn reply in chunks, or fail before the first chunk at the error rate."""
        self.requests.append(request)
        async for part in self._play_stream(self._draw(request), request):
            yield part

    def _draw(self, request: ModelRequest) -> FakeReply | FakeFailure:
        latency = self._latency_s()
        if self.random.random() < self.error_rate:
            return FakeFailure(status=self.error_status, latency_s=latency)
        prompt_chars = sum(len(message.content) for message in request.messages)
        return FakeReply(
            text=self.text.replace("{input_chars}", str(prompt_chars)),
            latency_s=latency,
            output_tokens=self.output_tokens,
            input_tokens=estimate_tokens("x" * prompt_chars),
            chunk_delay_s=self.chunk_delay_ms / 1000.0,
        )


def fake_from_options(model: str, options: dict[str, Any]) -> Provider:
    """Build a fake from a deployment's ``options`` table.

    ``mode = "simulated"`` takes the `SimulatedModel` arguments;
    ``mode = "scripted"`` takes ``replies``, a list of texts returned in
    turn and then repeated from the last one.
    """
    mode = options.get("mode", "simulated")
    settings = {key: value for key, value in options.items() if key != "mode"}
    if mode == "simulated":
        try:
            return SimulatedModel(model=model, **settings)
        except TypeError as error:
            raise ConfigError(f"invalid option for a simulated fake model: {error}") from error
    if mode == "scripted":
        replies = [FakeReply(text=str(text)) for text in settings.get("replies", [])]
        if not replies:
            raise ConfigError("a scripted fake model needs options.replies, a list of texts")
        return ScriptedModel(replies, model=model, default=replies[-1])
    raise ConfigError(f"unknown fake mode {mode!r}; expected 'simulated' or 'scripted'")
