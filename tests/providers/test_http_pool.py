"""`HttpPool` against a scripted keep-alive server: reuse, framing, decoding and failures."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator

import pytest

from rawserver import OK_BODY, RESET, Delayed, RawServer
from trunkline.providers.http_pool import HttpPool, HttpTransportError


def reply(body: bytes, *headers: str, status: str = "200 OK", version: str = "HTTP/1.1") -> bytes:
    """Build a raw response; without a content-length header among `headers`, none is sent."""
    head = [f"{version} {status}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def sized(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    return reply(body, f"content-length: {len(body)}", *headers, status=status)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[RawServer]:
    replies = getattr(request, "param", ())
    with RawServer(*replies) as running:
        yield running


async def post_twice(server: RawServer) -> list[bytes]:
    pool = HttpPool(server.url + "/v1", {"Authorization": "Bearer sk-test"})
    try:
        first = await pool.post("/chat/completions", b"{}")
        second = await pool.post("/chat/completions", b"{}")
    finally:
        await pool.aclose()
    return [first.body, second.body]


async def test_keep_alive_reuses_connection(server: RawServer) -> None:
    bodies = await post_twice(server)

    assert bodies == [OK_BODY, OK_BODY]
    assert server.connections == 1


async def test_request_line_and_headers(server: RawServer) -> None:
    await post_twice(server)

    head = server.requests[0].split(b"\r\n")
    assert head[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in head
    assert b"Authorization: Bearer sk-test" in head
    assert b"Content-Length: 2" in head
    assert server.requests[0].endswith(b"\r\n\r\n{}")


@pytest.mark.parametrize("server", [[sized(b"first", "connection: close")]], indirect=True)
async def test_connection_close_opens_new_connection(server: RawServer) -> None:
    bodies = await post_twice(server)

    assert bodies == [b"first", OK_BODY]
    assert server.connections == 2


@pytest.mark.parametrize(
    "server",
    [[reply(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "transfer-encoding: chunked")]],
    indirect=True,
)
async def test_chunked_body(server: RawServer) -> None:
    bodies = await post_twice(server)

    assert bodies == [b"hello world", OK_BODY]
    assert server.connections == 1


@pytest.mark.parametrize(
    "server", [[reply(b"until the end", "connection: close", version="HTTP/1.0")]], indirect=True
)
async def test_body_ends_at_close(server: RawServer) -> None:
    bodies = await post_twice(server)

    assert bodies == [b"until the end", OK_BODY]
    assert server.connections == 2


@pytest.mark.parametrize(
    "server", [[sized(gzip.compress(b'{"zipped": 1}'), "content-encoding: gzip")]], indirect=True
)
async def test_gzip_body(server: RawServer) -> None:
    bodies = await post_twice(server)

    assert bodies[0] == b'{"zipped": 1}'


@pytest.mark.parametrize(
    "server",
    [[sized(b"error text", "retry-after: 3", "x-Repeated: a", "x-repeated: b", status="429 Too Many Requests")]],
    indirect=True,
)
async def test_status_and_headers_of_error(server: RawServer) -> None:
    pool = HttpPool(server.url, {})
    response = await pool.post("/chat", b"{}")
    await pool.aclose()

    assert response.status == 429
    assert response.headers["retry-after"] == "3"
    assert response.headers["x-repeated"] == "a, b"
    assert response.text() == "error text"


@pytest.mark.parametrize(
    "server",
    [[sized("caf\xe9".encode("latin-1"), "content-type: text/plain; charset=latin-1")]],
    indirect=True,
)
async def test_text_uses_charset(server: RawServer) -> None:
    pool = HttpPool(server.url, {})
    response = await pool.post("/chat", b"{}")
    await pool.aclose()

    assert response.text() == "caf\xe9"


@pytest.mark.parametrize("server", [[RESET]], indirect=True)
async def test_reset_raises_transport_error(server: RawServer) -> None:
    pool = HttpPool(server.url, {})

    with pytest.raises(HttpTransportError):
        await pool.post("/chat", b"{}")
    response = await pool.post("/chat", b"{}")
    await pool.aclose()

    assert response.body == OK_BODY


@pytest.mark.parametrize("server", [[b"this is not HTTP\r\n\r\n"]], indirect=True)
async def test_invalid_response_raises_transport_error(server: RawServer) -> None:
    pool = HttpPool(server.url, {})

    with pytest.raises(HttpTransportError):
        await pool.post("/chat", b"{}")
    await pool.aclose()


@pytest.mark.parametrize("server", [[Delayed(5.0, sized(b"late"))]], indirect=True)
async def test_cancelled_request_closes_its_connection(server: RawServer) -> None:
    pool = HttpPool(server.url, {})

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pool.post("/chat", b"{}"), timeout=0.2)
    response = await pool.post("/chat", b"{}")
    await pool.aclose()

    assert response.body == OK_BODY
    assert server.connections == 2


def test_new_event_loop_opens_new_connection(server: RawServer) -> None:
    pool = HttpPool(server.url, {})

    first = asyncio.run(pool.post("/chat", b"{}"))
    second = asyncio.run(pool.post("/chat", b"{}"))

    assert first.body == second.body == OK_BODY
    assert server.connections == 2


async def test_refused_connection_raises_os_error(closed_port_url: str) -> None:
    pool = HttpPool(closed_port_url, {})

    with pytest.raises(OSError):
        await pool.post("/chat", b"{}")


def test_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        HttpPool("ftp://127.0.0.1/v1", {})


def test_rejects_line_break_in_header() -> None:
    with pytest.raises(ValueError, match="line break"):
        HttpPool("http://127.0.0.1/v1", {"Authorization": "Bearer sk\r\nX-Injected: 1"})
