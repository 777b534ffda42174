"""A zero-latency OpenAI-shaped HTTP server for benchmarks, on 127.0.0.1 only.

It responds to every ``POST .../chat/completions`` with the same small
``chat.completion`` body over keep-alive HTTP/1.1, using nothing but asyncio
(on uvloop where it is installed), so that the server costs as little as
possible next to the client being measured. A request whose body sets
``"stream": true`` gets the same completion as server-sent events: a role
chunk, a content chunk, a finish chunk, a usage chunk and ``data: [DONE]``,
in one chunked body. It stops by itself after ``--max-seconds``.

    python benchmarks/fake_upstream.py --port 18100 --max-seconds 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re

BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_800_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there!"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 9,
            "total_tokens": 21,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
).encode()

RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(BODY)}\r\n\r\n".encode()
    + BODY
)


def _stream_events() -> bytes:
    completion = json.loads(BODY)
    common = {key: completion[key] for key in ("id", "created", "model", "system_fingerprint")}
    common["object"] = "chat.completion.chunk"

    def chunk(delta: dict, finish: str | None) -> dict:
        return {**common, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks = [
        chunk({"role": "assistant", "content": ""}, None),
        chunk({"content": completion["choices"][0]["message"]["content"]}, None),
        chunk({}, "stop"),
        {**common, "choices": [], "usage": completion["usage"]},
    ]
    events = [f"data: {json.dumps(item)}\n\n".encode() for item in chunks]
    return b"".join(events) + b"data: [DONE]\n\n"


_EVENTS = _stream_events()
STREAM_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    + f"{len(_EVENTS):x}\r\n".encode()
    + _EVENTS
    + b"\r\n0\r\n\r\n"
)

_STREAM_FLAG = re.compile(rb'"stream"\s*:\s*true')


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            writer.write(STREAM_RESPONSE if _STREAM_FLAG.search(body) else RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionResetError):
        pass
    finally:
        writer.close()


async def serve(port: int, max_seconds: float) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await asyncio.sleep(max_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18100)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="Stop after this many seconds.")
    arguments = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(arguments.port, arguments.max_seconds))
    else:
        uvloop.run(serve(arguments.port, arguments.max_seconds))


if __name__ == "__main__":
    main()
