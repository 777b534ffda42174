"""A local HTTP server that serves the OpenAI and Anthropic wire formats.

Tests point the real `openai` and `anthropic` SDK clients at `FakeServer.base_url`,
plan the replies they need with `FakeServer.plan`, and read back what the SDK sent
from `FakeServer.requests`. The server binds 127.0.0.1 on an ephemeral port and
serves from a background thread.

Routes:

- ``POST /v1/chat/completions``: OpenAI chat completions.
- ``POST /openai/deployments/{deployment}/chat/completions``: the Azure OpenAI form
  of the same route; the SDK adds ``?api-version=...``.
- ``POST /v1/messages``: the Anthropic Messages API.

A planned reply is used by the next request to any route, in planning order.
Without one, the server returns a successful default reply in the route's format
that echoes the requested model. Bodies carry the fields of the OpenAI chat
completion object and error body, and of the Anthropic Message object and error
body, that the `openai` 3.60 and `anthropic` 2.17 SDK models parse.

Streaming: when the request body has ``"stream": true`` and the planned status is
below 400, the server sends the reply's body as server-sent events instead. A chat
completion becomes ``chat.completion.chunk`` events, then a usage chunk when the
request sets ``stream_options.include_usage``, then ``data: [DONE]``. A Message
becomes ``message_start``, ``ping``, the content block events, ``message_delta``
and ``message_stop``. Text and tool arguments are split with `stream_pieces`. A
planned reply can pause between events, break the stream off after some events,
or send an error event there. The response has no content length, so the body
ends when the server closes the connection.
"""

from __future__ import annotations

import collections
import http.server
import itertools
import json
import re
import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal

#: Longest `PlannedReply.delay_s` accepted, so that no test can hang the server.
MAX_DELAY_S = 30.0

OPENAI_CHAT_PATH = "/v1/chat/completions"
ANTHROPIC_MESSAGES_PATH = "/v1/messages"
_AZURE_CHAT_PATH = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/chat/completions$")

_id_counter = itertools.count(1)


@dataclass(frozen=True)
class PlannedReply:
    """One response the server returns to the next request.

    The fields after `delay_s` apply only to a streamed reply, one whose request
    set ``"stream": true``; the server ignores them otherwise.

    Attributes:
        status: the HTTP status code.
        body: a dict or list sent as JSON, a str sent as plain text, or None for
            the route's default success body. A streamed reply converts a dict
            body to events and sends any other body unchanged.
        headers: extra response headers, such as ``retry-after``.
        delay_s: seconds to wait before responding, at most `MAX_DELAY_S`.
        chunk_delay_s: seconds to wait before each event after the first, at
            most `MAX_DELAY_S`.
        break_after: the number of events sent before the stream breaks off, or
            None to send the whole stream. Every event counts, ``ping`` and
            ``[DONE]`` included, and a count past the last event sends them all.
        break_mode: ``close`` ends the connection normally at the break, so the
            client sees the body end without the final event. ``reset`` aborts
            it with a TCP reset, so the client gets a read error.
        error_event: an error body, as `openai_error` or `anthropic_error` build
            it, sent as one more event at `break_after` before the connection
            closes. It needs `break_after`.
        omit_usage: leave out the OpenAI usage chunk even when the request sets
            ``stream_options.include_usage``, as servers that ignore it do.
    """

    status: int = 200
    body: dict[str, Any] | list[Any] | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    break_after: int | None = None
    break_mode: Literal["close", "reset"] = "close"
    error_event: dict[str, Any] | None = None
    omit_usage: bool = False

    def __post_init__(self) -> None:
        for name in ("delay_s", "chunk_delay_s"):
            value = getattr(self, name)
            if not 0.0 <= value <= MAX_DELAY_S:
                raise ValueError(
                    f"{name} must be between 0 and {MAX_DELAY_S} seconds, got {value}"
                )
        if self.break_after is not None and self.break_after < 0:
            raise ValueError(f"break_after must be 0 or more, got {self.break_after}")
        if self.break_mode not in ("close", "reset"):
            raise ValueError(f"break_mode must be 'close' or 'reset', got {self.break_mode!r}")
        if self.error_event is not None and self.break_after is None:
            raise ValueError("error_event needs break_after, the number of events sent before it")


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the server received it.

    Attributes:
        method: the HTTP method, such as ``POST``.
        path: the URL path without the query string.
        query: the query parameters, each name mapped to its last value.
        headers: the request headers with lowercase names.
        body: the JSON body parsed, or the raw text when it is not valid JSON.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class FakeServer:
    """An HTTP server with a queue of planned replies and a log of received requests.

    Use it as a context manager, or call `start` and `stop`.
    """

    def __init__(self) -> None:
        self._planned: collections.deque[PlannedReply] = collections.deque()
        self._received: list[ReceivedRequest] = []
        self._disconnected_streams = 0
        self._lock = threading.Lock()
        # Set by `stop` so that delayed replies end at once instead of holding shutdown.
        self._stopping = threading.Event()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The server's root URL, such as ``http://127.0.0.1:54321``."""
        if self._httpd is None:
            raise RuntimeError("the fake server is not running; call start() first")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_base_url(self) -> str:
        """The ``base_url`` the OpenAI SDK expects, which includes ``/v1``."""
        return f"{self.base_url}/v1"

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A copy of the requests received so far, oldest first."""
        with self._lock:
            return list(self._received)

    @property
    def pending_replies(self) -> int:
        """The number of planned replies that no request has used yet."""
        with self._lock:
            return len(self._planned)

    @property
    def disconnected_streams(self) -> int:
        """The number of streams whose client closed the connection before the last event.

        The server notices only when a write fails, which takes one or two more
        events after the client has gone.
        """
        with self._lock:
            return self._disconnected_streams

    def plan(self, *replies: PlannedReply) -> None:
        """Queue `replies` for the next requests, in order."""
        with self._lock:
            self._planned.extend(replies)

    def start(self) -> None:
        """Bind an ephemeral port on 127.0.0.1 and serve from a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("the fake server is already running")
        handler = type("BoundHandler", (_Handler,), {"fake_server": self})
        self._stopping.clear()
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-llm-server",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket and wait for the serving thread."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _record(self, request: ReceivedRequest) -> PlannedReply | None:
        """Store `request` and take the next planned reply, if any."""
        with self._lock:
            self._received.append(request)
            return self._planned.popleft() if self._planned else None

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _count_disconnect(self) -> None:
        with self._lock:
            self._disconnected_streams += 1


class _Handler(http.server.BaseHTTPRequestHandler):
    """Request handler for one connection.

    `FakeServer.start` sets `fake_server` on a subclass made for that server.
    """

    fake_server: FakeServer
    # HTTP/1.0 closes the connection after every response, so no test depends on
    # the SDK reusing a pooled connection.
    protocol_version = "HTTP/1.0"

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        """Discard the access log, because tests read `FakeServer.requests` instead."""

    def _serve(self) -> None:
        request = self._read_request()
        planned = self.fake_server._record(request)
        route = _route_of(request)
        if planned is None and route is None:
            self._send(404, openai_error(f"no route for {request.method} {request.path}"), {})
            return
        if planned is None:
            planned = PlannedReply()
        if planned.delay_s:
            self.fake_server._wait(planned.delay_s)

        body = planned.body
        if body is None:
            body = _default_body(route, request) if planned.status < 400 else ""
        headers = _default_headers(route) | planned.headers
        if _wants_stream(request) and planned.status < 400 and isinstance(body, dict):
            events = _stream_events(route, body, request, planned)
            error = _error_event(route, planned.error_event) if planned.error_event else None
            self._send_stream(planned, events, error, headers)
            return
        self._send(planned.status, body, headers)

    def _read_request(self) -> ReceivedRequest:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length).decode("utf-8") if length else ""
        try:
            body: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw
        return ReceivedRequest(
            method=self.command,
            path=url.path,
            query=dict(urllib.parse.parse_qsl(url.query)),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
        )

    def _send(self, status: int, body: object, headers: dict[str, str]) -> None:
        if isinstance(body, str):
            payload = body.encode("utf-8")
            content_type = "text/plain; charset=utf-8"
        else:
            payload = json.dumps(body).encode("utf-8")
            content_type = "application/json"
        # A planned header of the same name replaces the default one instead of repeating it.
        merged = {"content-type": content_type, "content-length": str(len(payload))}
        merged |= {name.lower(): value for name, value in headers.items()}
        self.send_response(status)
        for name, value in merged.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


    def _send_stream(
        self,
        planned: PlannedReply,
        events: list[bytes],
        error: bytes | None,
        headers: dict[str, str],
    ) -> None:
        """Write `events` as an SSE body, and break it off where `planned` sets `break_after`."""
        merged = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
        merged |= {name.lower(): value for name, value in headers.items()}
        self.send_response(planned.status)
        for name, value in merged.items():
            self.send_header(name, value)
        self.end_headers()

        breaks = planned.break_after is not None and planned.break_after < len(events)
        sent = events[: planned.break_after] if breaks else events
        if error is not None:
            sent = [*sent, error]
        try:
            for index, event in enumerate(sent):
                if index and planned.chunk_delay_s:
                    self.fake_server._wait(planned.chunk_delay_s)
                self.wfile.write(event)
        except (BrokenPipeError, ConnectionResetError):
            self.fake_server._count_disconnect()
            return
        if breaks and planned.break_mode == "reset":
            self._reset_connection()

    def _reset_connection(self) -> None:
        """Abort the connection with a TCP reset instead of a normal close."""
        # A zero linger time makes close() send RST. The socket closes only once
        # `rfile`, a file made from it, is closed too. socketserver's later
        # shutdown of the closed socket fails with an OSError that it ignores.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.connection.close()


def _wants_stream(request: ReceivedRequest) -> bool:
    return isinstance(request.body, dict) and request.body.get("stream") is True


def _route_of(request: ReceivedRequest) -> str | None:
    """Return the API that a request path belongs to: ``openai``, ``anthropic`` or None."""
    if request.path == OPENAI_CHAT_PATH or _AZURE_CHAT_PATH.match(request.path):
        return "openai"
    if request.path == ANTHROPIC_MESSAGES_PATH:
        return "anthropic"
    return None


def _requested_model(request: ReceivedRequest) -> str | None:
    if isinstance(request.body, dict):
        model = request.body.get("model")
        if isinstance(model, str):
            return model
    return None


def _default_body(route: str | None, request: ReceivedRequest) -> dict[str, Any]:
    model = _requested_model(request)
    if route == "anthropic":
        return anthropic_message(model=model or "claude-sonnet-4-5")
    azure = _AZURE_CHAT_PATH.match(request.path)
    if azure and model is None:
        model = azure.group("deployment")
    return openai_completion(model=model or "gpt-4o-mini")


def _default_headers(route: str | None) -> dict[str, str]:
    """Return a request id header, under the name that the route's vendor uses."""
    if route == "anthropic":
        return {"request-id": f"req_fake{next(_id_counter):08d}"}
    return {"x-request-id": f"req_fake{next(_id_counter):08d}"}


def openai_completion(
    content: str | None = "Hello from the fake server.",
    *,
    model: str = "gpt-4o-mini",
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    prompt_tokens: int = 12,
    completion_tokens: int = 5,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
    system_fingerprint: str | None = "fp_fake0001",
) -> dict[str, Any]:
    """Build a ``chat.completion`` object as ``POST /v1/chat/completions`` returns it.

    `finish_reason` defaults to ``tool_calls`` when `tool_calls` is set, else ``stop``.
    Cached tokens are part of `prompt_tokens`, and reasoning tokens part of
    `completion_tokens`, as OpenAI reports them.
    """
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": [],
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    if finish_reason is None:
        finish_reason = "tool_calls" if tool_calls else "stop"
    return {
        "id": f"chatcmpl-fake{next(_id_counter):08d}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": system_fingerprint,
        "service_tier": "default",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
    }


def openai_tool_call(
    name: str, arguments: str, *, call_id: str = "call_fake0001"
) -> dict[str, Any]:
    """Build one entry of ``choices[0].message.tool_calls``, whose `arguments` is JSON text."""
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def openai_error(
    message: str,
    *,
    error_type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """Build an OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def anthropic_message(
    content: list[dict[str, Any]] | None = None,
    *,
    model: str = "claude-sonnet-4-5",
    stop_reason: str | None = None,
    input_tokens: int = 12,
    output_tokens: int = 5,
    cache_read_input_tokens: int = 0,
    cache_creation_input_tokens: int = 0,
) -> dict[str, Any]:
    """Build a ``message`` object as ``POST /v1/messages`` returns it.

    `content` defaults to one text block. `stop_reason` defaults to ``tool_use``
    when a block is a ``tool_use`` block, else ``end_turn``. As Anthropic reports
    them, `input_tokens` excludes the cache read and cache creation tokens.
    """
    if content is None:
        content = [anthropic_text_block("Hello from the fake server.")]
    if stop_reason is None:
        uses_tool = any(block.get("type") == "tool_use" for block in content)
        stop_reason = "tool_use" if uses_tool else "end_turn"
    return {
        "id": f"msg_fake{next(_id_counter):08d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": cache_read_input_tokens,
            "cache_creation_input_tokens": cache_creation_input_tokens,
            "service_tier": "standard",
        },
    }


def anthropic_text_block(text: str) -> dict[str, Any]:
    """Build a ``text`` content block."""
    return {"type": "text", "text": text}


def anthropic_tool_use_block(
    name: str, tool_input: dict[str, Any], *, block_id: str = "toolu_fake0001"
) -> dict[str, Any]:
    """Build a ``tool_use`` content block from the parsed input object `tool_input`."""
    return {"type": "tool_use", "id": block_id, "name": name, "input": tool_input}


def anthropic_error(error_type: str, message: str) -> dict[str, Any]:
    """Build an Anthropic error body with `error_type`, such as ``overloaded_error``."""
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": f"req_fake{next(_id_counter):08d}",
    }


def stream_pieces(text: str) -> list[str]:
    """Split `text` into the pieces that a streamed reply sends, one per word.

    Each piece keeps the whitespace that follows its word, so the pieces join
    back to `text`. An empty text gives no pieces.
    """
    return [piece for piece in re.split(r"(?<=\s)(?=\S)", text) if piece]


def openai_stream_events(completion: dict[str, Any], *, include_usage: bool) -> list[bytes]:
    """Convert a ``chat.completion`` object to the SSE events of the same reply streamed.

    A first chunk carries the role, then one chunk per piece of content and
    per piece of each tool call's arguments, then a chunk with the finish
    reason. With `include_usage`, every chunk has ``"usage": null`` and a last
    chunk with no choices carries the usage. ``data: [DONE]`` ends the stream.
    """
    common = {
        key: completion[key]
        for key in ("id", "created", "model", "system_fingerprint", "service_tier")
        if key in completion
    }
    common["object"] = "chat.completion.chunk"
    choice = completion["choices"][0]
    message = choice["message"]

    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": "", "refusal": None}]
    deltas += [{"content": piece} for piece in stream_pieces(message.get("content") or "")]
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        opening = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": function["name"], "arguments": ""},
        }
        deltas.append({"tool_calls": [opening]})
        deltas += [
            {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
            for piece in stream_pieces(function["arguments"])
        ]

    chunks = [_openai_chunk(common, delta, None) for delta in deltas]
    chunks.append(_openai_chunk(common, {}, choice["finish_reason"]))
    if include_usage:
        for chunk in chunks:
            chunk["usage"] = None
        chunks.append({**common, "choices": [], "usage": completion["usage"]})
    return [_sse(chunk) for chunk in chunks] + [_sse("[DONE]")]


def _openai_chunk(
    common: dict[str, Any], delta: dict[str, Any], finish_reason: str | None
) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return {**common, "choices": [choice]}


def anthropic_stream_events(message: dict[str, Any]) -> list[bytes]:
    """Convert a ``message`` object to the SSE events of the same reply streamed.

    ``message_start`` carries the input and cache token counts and an output
    count of 1, as the API sends it. Each text block streams as ``text_delta``
    pieces, and each ``tool_use`` block as ``input_json_delta`` pieces of its
    input in JSON. ``message_delta`` carries the stop reason and the final
    output token count.
    """
    usage = message["usage"]
    opening = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events = [
        _sse({"type": "message_start", "message": opening}, event="message_start"),
        _sse({"type": "ping"}, event="ping"),
    ]
    for index, block in enumerate(message["content"]):
        events += _anthropic_block_events(index, block)
    message_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]},
    }
    events.append(_sse(message_delta, event="message_delta"))
    events.append(_sse({"type": "message_stop"}, event="message_stop"))
    return events


def _anthropic_block_events(index: int, block: dict[str, Any]) -> list[bytes]:
    if block["type"] == "text":
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in stream_pieces(block["text"])]
    elif block["type"] == "tool_use":
        start = {**block, "input": {}}
        pieces = stream_pieces(json.dumps(block["input"]))
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
    else:
        start, deltas = block, []
    frames = [{"type": "content_block_start", "index": index, "content_block": start}]
    frames += [{"type": "content_block_delta", "index": index, "delta": delta} for delta in deltas]
    frames.append({"type": "content_block_stop", "index": index})
    return [_sse(frame, event=frame["type"]) for frame in frames]


def _stream_events(
    route: str | None, body: dict[str, Any], request: ReceivedRequest, planned: PlannedReply
) -> list[bytes]:
    if route == "anthropic":
        return anthropic_stream_events(body)
    options = request.body.get("stream_options") if isinstance(request.body, dict) else None
    usage_requested = isinstance(options, dict) and options.get("include_usage") is True
    return openai_stream_events(body, include_usage=usage_requested and not planned.omit_usage)


def _error_event(route: str | None, body: dict[str, Any]) -> bytes:
    """Frame an error body as Anthropic (``event: error``) or OpenAI (a bare data line) sends it."""
    if route == "anthropic":
        return _sse(body, event="error")
    return _sse(body)


def _sse(data: object, *, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    field_lines = f"event: {event}\n" if event else ""
    return f"{field_lines}data: {payload}\n\n".encode()
