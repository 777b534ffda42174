"""A small pooled HTTP/1.1 client for posting JSON, on asyncio with httptools parsing.

In a profile of the gateway serving 32 concurrent requests on a 2-core VM,
the `openai` SDK 3.60 took about two thirds of the CPU time, mostly in
httpx, httpcore and anyio. Their pool also checks every idle connection for
readability before each request.
`HttpPool` does only what a JSON POST to one server needs: it keeps
connections open (HTTP/1.1 keep-alive, most recently used first), writes
each request in one call and parses the response with httptools, the C
parser uvicorn uses.

It follows no redirects and applies no timeout. A caller enforces a timeout
by cancelling the request, which closes that connection, because its state
is then unknown.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

#: Idle connections kept per pool, and seconds one may stay idle before it is
#: closed; both are httpx's defaults, which the `openai` SDK keeps.
MAX_IDLE_CONNECTIONS = 100
KEEPALIVE_EXPIRY_S = 5.0
#: Requests in flight at once; more wait for a connection, as in the `openai` SDK.
MAX_CONNECTIONS = 1000


class HttpTransportError(ConnectionError):
    """The connection was reset or closed before a complete response, or the response was invalid."""


@dataclass(frozen=True)
class HttpResponse:
    """One complete response; `headers` has lowercase names, repeated ones joined by ", "."""

    status: int
    headers: dict[str, str]
    body: bytes

    def text(self) -> str:
        """Decode the body with the charset of its content type, UTF-8 by default."""
        return self.body.decode(_charset(self.headers.get("content-type", "")), errors="replace")


class HttpPool:
    """Keep-alive connections to the server of `base_url`, for JSON POST requests.

    Args:
        base_url: ``http://`` or ``https://`` URL; request paths are appended to it.
        headers: sent with every request, after ``Host`` and before ``Content-Length``.
        ssl_context: verifies ``https://`` servers; by default the system's.

    Raises:
        ValueError: `base_url` is not an HTTP URL, or a header contains a line break.
    """

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        secure = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if secure else 80)
        self.ssl_context = (ssl_context or ssl.create_default_context()) if secure else None
        self.base_path = parts.path.rstrip("/")
        default_port = self.port == (443 if secure else 80)
        # IPv6 literals keep their brackets in the Host header.
        host = f"[{self.host}]" if ":" in self.host else self.host
        fields = {"Host": host if default_port else f"{host}:{self.port}", **headers}
        for name, value in fields.items():
            if any(character in f"{name}{value}" for character in "\r\n"):
                raise ValueError(f"the HTTP header {name!r} contains a line break")
        self._header_block = "".join(f"{name}: {value}\r\n" for name, value in fields.items()).encode(
            "latin-1"
        )
        self._idle: list[_Connection] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._closed = False

    async def post(self, path: str, body: bytes) -> HttpResponse:
        """POST `body` to `path` under the base URL and return the complete response.

        Raises:
            HttpTransportError: no complete response arrived.
            OSError: the connection could not be opened.
        """
        request = b"".join(
            (
                b"POST ",
                (self.base_path + path).encode("ascii"),
                b" HTTP/1.1\r\n",
                self._header_block,
                b"Content-Length: ",
                str(len(body)).encode("ascii"),
                b"\r\n\r\n",
                body,
            )
        )
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._move_to(loop)
        async with self._slots:
            connection = self._idle_connection() or await self._connect()
            try:
                response = await connection.exchange(request)
            except BaseException:
                # Cancelled or failed mid-exchange: the connection's state is unknown.
                connection.close()
                raise
            self._release(connection)
        return response

    async def aclose(self) -> None:
        """Close every idle connection; requests in flight close theirs when they end."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _move_to(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start over on `loop`, such as after a second `asyncio.run`.

        Connections belong to the loop that opened them, so the idle ones
        are closed instead of reused.
        """
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        self._loop = loop
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    def _idle_connection(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.usable and now - connection.idle_since < KEEPALIVE_EXPIRY_S:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        if self._closed:
            raise HttpTransportError("the HTTP pool is closed")
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            _Connection,
            self.host,
            self.port,
            ssl=self.ssl_context,
            server_hostname=self.host if self.ssl_context is not None else None,
        )
        return connection

    def _release(self, connection: _Connection) -> None:
        if self._closed or not connection.usable or len(self._idle) >= MAX_IDLE_CONNECTIONS:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection that carries one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._lost = False
        self._keep_alive = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._headers_done = False

    @property
    def usable(self) -> bool:
        """Whether another request may be sent on this connection."""
        return not self._lost and self._keep_alive and self._waiter is None

    async def exchange(self, request: bytes) -> HttpResponse:
        assert self.transport is not None
        self._headers, self._body, self._headers_done = [], [], False
        self._keep_alive = False
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self._waiter

    def close(self) -> None:
        self._lost = True
        if self.transport is None:
            return
        try:
            self.transport.close()
        except RuntimeError:
            # Its event loop is closed already; the socket closes with the transport object.
            pass

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes outside an exchange mean the server broke the protocol.
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(HttpTransportError(f"the server sent an invalid HTTP response: {error}"))
            self.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._waiter is None or self._waiter.done():
            return
        if self._headers_done and self._ends_at_close():
            # A body without a length or chunked framing ends when the server closes.
            self._complete()
            return
        reason = f": {exc}" if exc is not None else ""
        self._fail(HttpTransportError(f"the server closed the connection before a complete response{reason}"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200:
            # An interim response, such as 100 Continue; the real one follows.
            self._headers, self._body, self._headers_done = [], [], False
            return
        self._keep_alive = self._parser.should_keep_alive()
        self._complete()

    # Helpers

    def _ends_at_close(self) -> bool:
        names = {name.lower() for name, _ in self._headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        try:
            response = self._response()
        except (ValueError, zlib.error) as error:
            self._keep_alive = False
            waiter.set_exception(HttpTransportError(f"the response body cannot be decoded: {error}"))
            return
        waiter.set_result(response)

    def _response(self) -> HttpResponse:
        headers: dict[str, str] = {}
        for raw_name, raw_value in self._headers:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        body = b"".join(self._body)
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding and encoding != "identity":
            body = _decompress(body, encoding)
        return HttpResponse(self._parser.get_status_code(), headers, body)

    def _fail(self, error: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


def _decompress(body: bytes, encoding: str) -> bytes:
    """Undo the gzip or deflate content coding, the two that the request accepts."""
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            # Some servers send raw deflate data without the zlib wrapper.
            return zlib.decompress(body, -zlib.MAX_WBITS)
    raise ValueError(f"unsupported content-encoding {encoding!r}")


def _charset(content_type: str) -> str:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
            try:
                "".encode(charset)
            except LookupError:
                break
            return charset
    return "utf-8"
