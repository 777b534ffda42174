"""A keep-alive HTTP/1.1 server that sends scripted raw responses, for `HttpPool` tests.

It runs its own event loop on a background thread and binds 127.0.0.1 on an
ephemeral port. Each request takes the next scripted reply; with none left,
it gets `OK_REPLY`. A reply is the raw bytes to write, `Delayed` bytes, or
`RESET` to abort the connection with a TCP reset. The connection closes
after a reply that contains ``connection: close``.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import struct
import threading
from dataclasses import dataclass

OK_BODY = b'{"ok": true}'
OK_REPLY = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(OK_BODY)}\r\n\r\n".encode()
    + OK_BODY
)
#: Aborts the connection with a TCP reset instead of replying.
RESET = object()


@dataclass(frozen=True)
class Delayed:
    """A reply sent after `seconds`."""

    seconds: float
    reply: bytes


class RawServer:
    """Serves scripted replies; `connections` counts the connections accepted so far."""

    def __init__(self, *replies: bytes | Delayed | object) -> None:
        self._replies = collections.deque(replies)
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, name="raw-http-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RawServer:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("the raw server did not start within 5 s")
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._stopped is not None
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(5)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stopped.wait()
            # Handlers still waiting on open connections end with the server.
            for handler in self._handlers:
                handler.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.requests.append(head + await reader.readexactly(length))
                reply = self._replies.popleft() if self._replies else OK_REPLY
                if reply is RESET:
                    _reset(writer)
                    return
                if isinstance(reply, Delayed):
                    await asyncio.sleep(reply.seconds)
                    reply = reply.reply
                assert isinstance(reply, bytes)
                writer.write(reply)
                await writer.drain()
                if b"connection: close" in reply.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    connection = writer.get_extra_info("socket")
    # A zero linger time makes the close send a reset.
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
