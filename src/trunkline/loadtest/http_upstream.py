"""A simulated provider over HTTP, speaking OpenAI's chat completions on 127.0.0.1.

It responds to ``POST .../chat/completions`` with the same seeded faults as the
in-process `SimulatedProvider`: log-normal latency, 429s with
``Retry-After``, bursts of server errors, and requests that hang until
``hang_s`` and then get 504. Point an ``openai`` deployment's ``base_url``
at `SimulatedHttpUpstream.openai_base_url` to load-test the whole HTTP path,
or a gateway's deployments at it to load-test a gateway. It serves on its
own thread and event loop, so it costs the caller's loop nothing.

Example::

    with SimulatedHttpUpstream(SimulatedUpstream(latency_ms=200)) as upstream:
        print(upstream.openai_base_url)
        ...
        print(upstream.counts.requests)
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from types import TracebackType

from trunkline.config import SimulatedUpstream
from trunkline.loadtest.faults import Draw, FaultModel, UpstreamCounts
from trunkline.loadtest.simulated import DEFAULT_OUTPUT_TOKENS, reply_text

_REASONS = {200: "OK", 404: "Not Found", 429: "Too Many Requests", 504: "Gateway Timeout"}


def _response(status: int, body: dict, headers: dict[str, str] | None = None) -> bytes:
    payload = json.dumps(body).encode()
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Server Error')}",
        "content-type: application/json",
        f"content-length: {len(payload)}",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def _output_schema(payload: dict) -> dict | None:
    """Return the JSON Schema of an OpenAI ``response_format`` of type json_schema, if any."""
    response_format = payload.get("response_format") or {}
    return (response_format.get("json_schema") or {}).get("schema")


def _error(message: str, kind: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class SimulatedHttpUpstream:
    """An OpenAI-compatible HTTP server whose replies follow a `SimulatedUpstream`.

    Args:
        behaviour: latency and fault rates.
        seed: seed of the fault draws.
        port: the port on 127.0.0.1; 0 picks a free one.
    """

    def __init__(self, behaviour: SimulatedUpstream, *, seed: int | str = 0, port: int = 0) -> None:
        self.faults = FaultModel(behaviour, seed=seed)
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def counts(self) -> UpstreamCounts:
        """Requests received so far, by how each ended; read it after the client is done."""
        return self.faults.counts

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """The ``base_url`` an OpenAI client expects, which includes ``/v1``."""
        return f"{self.base_url}/v1"

    def start(self) -> SimulatedHttpUpstream:
        """Start serving on a background thread; return once the port is bound."""
        self._thread = threading.Thread(target=self._serve_thread, name="simulated-upstream", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._failure is not None:
            raise self._failure
        return self

    def stop(self) -> None:
        """Stop serving and join the thread; open requests are dropped."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> SimulatedHttpUpstream:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _serve_thread(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported to start(), which re-raises it
            self._failure = error
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                request_line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
                if len(request_line) < 2 or not request_line[1].split("?")[0].endswith("/chat/completions"):
                    writer.write(_response(404, _error("only POST /v1/chat/completions is served", "not_found")))
                    await writer.drain()
                    continue
                answer = await self._answer(json.loads(body or b"{}"), reader, writer)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(
        self, payload: dict, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes | None:
        """Draw the request's fate, wait its latency, and return the response, or None if the client left."""
        draw = self.faults.draw()
        if draw.latency_s > 0:
            await asyncio.sleep(draw.latency_s)
        if reader.at_eof() or writer.is_closing():
            self.faults.abandoned(draw)
            return None
        self.faults.answered(draw)
        return self._body(draw, payload)

    def _body(self, draw: Draw, payload: dict) -> bytes:
        behaviour = self.faults.behaviour
        if draw.outcome == "rate_limited":
            wait = behaviour.retry_after_s
            headers = {"retry-after": str(math.ceil(wait)), "retry-after-ms": str(round(wait * 1000))}
            message = f"Rate limit reached; retry after {wait:g}s"
            return _response(429, _error(message, "requests", "rate_limit_exceeded"), headers)
        if draw.outcome == "server_error":
            status = behaviour.server_error_status
            return _response(status, _error(f"simulated server error {status}", "server_error"))
        if draw.outcome == "timeout":
            return _response(504, _error("simulated upstream timeout", "timeout"))
        chars = sum(len(str(message.get("content", ""))) for message in payload.get("messages", []))
        prompt_tokens = max(1, math.ceil(chars / 4))
        completion_tokens = int(payload.get("max_tokens") or DEFAULT_OUTPUT_TOKENS)
        completion = {
            "id": f"chatcmpl-sim-{self.faults.counts.requests}",
            "object": "chat.completion",
            "created": 1_800_000_000,
            "model": payload.get("model", "simulated"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply_text(_output_schema(payload))},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return _response(200, completion)
