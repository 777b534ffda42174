"""A zero-latency OpenAI-shaped HTTP server for benchmarks, on 127.0.0.1 only.

It responds to every ``POST .../chat/completions`` with the same small
``chat.completion`` body over keep-alive HTTP/1.1, using nothing but asyncio,
so that the server costs as little as possible next to the client being
measured. It stops by itself after ``--max-seconds``.

    python benchmarks/fake_upstream.py --port 18100 --max-seconds 300
"""

from __future__ import annotations

import argparse
import asyncio
import json

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


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            writer.write(RESPONSE)
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
    asyncio.run(serve(arguments.port, arguments.max_seconds))


if __name__ == "__main__":
    main()
