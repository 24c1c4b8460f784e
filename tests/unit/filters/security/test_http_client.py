"""The auth services' HTTP client against real servers on 127.0.0.1 (port 0): keep-alive
reuse, the stale-connection retry, framing (length, chunked, close, HEAD), limits, and
the errors a filter maps (connect, timeout, protocol)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from meshgate.filters.security.http_client import (
    MAX_BODY,
    CallTimeout,
    ConnectError,
    ConnectionPool,
    LogThrottle,
    ProtocolError,
    shared,
)


@contextlib.asynccontextmanager
async def raw_server(answer):
    """A server that reads each request and writes ``answer(n, request)``: bytes; a
    1-tuple of bytes, then close; a float, seconds to stall; None: close at once.
    n counts requests on the server."""
    count = 0
    connections = 0

    async def serve(reader, writer):
        nonlocal count, connections
        connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break
                length = 0
                for line in head.decode().split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":")[1])
                body = await reader.readexactly(length) if length else b""
                count += 1
                out = answer(count, head + body)
                if out is None:
                    break
                if isinstance(out, float):
                    await asyncio.sleep(out)
                    continue
                close = isinstance(out, tuple)
                writer.write(out[0] if close else out)
                await writer.drain()
                if close:
                    break
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    state = {"port": port, "requests": lambda: count, "connections": lambda: connections}
    try:
        yield state
    finally:
        server.close()


def ok(body: bytes = b"hello", extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_keep_alive_reuses_one_connection_and_repr_tells() -> None:
    seen = []

    def answer(n, request):
        seen.append(request)
        return ok(b"n=%d" % n)

    async with raw_server(answer) as srv:
        pool = ConnectionPool("127.0.0.1", srv["port"])
        for i in range(3):
            response = await pool.request("GET", f"/x/{i}", [("host", "auth")], timeout=2)
            assert (response.status, response.body) == (200, b"n=%d" % (i + 1))
        assert srv["connections"]() == 1
        assert pool.opened == 1
        assert "Requests: 0 active | Connections: 1 idle, 1 opened" in repr(pool)
        assert seen[0].startswith(b"GET /x/0 HTTP/1.1\r\nhost: auth\r\ncontent-length: 0\r\n\r\n")
        pool.stop()
        assert "1 idle" not in repr(pool)


async def test_post_body_is_framed_by_content_length() -> None:
    seen = []
    async with raw_server(lambda n, r: seen.append(r) or ok()) as srv:
        pool = ConnectionPool("127.0.0.1", srv["port"])
        await pool.request("POST", "/t", [("host", "a")], b"token=abc", timeout=2)
        assert seen[0].endswith(b"content-length: 9\r\n\r\ntoken=abc")


async def test_idle_connection_the_server_drops_is_retried_once_on_a_fresh_one() -> None:
    # The keep-alive race: the server closes an idle connection just as the next call
    # is written on it. Nothing was answered, so the call goes again on a new one.
    def answer(n, request):
        return None if n == 2 else ok(b"n=%d" % n)

    async with raw_server(answer) as srv:
        pool = ConnectionPool("127.0.0.1", srv["port"])
        assert (await pool.request("GET", "/", [], timeout=2)).body == b"n=1"
        second = await pool.request("GET", "/", [], timeout=2)
        assert (second.status, second.body) == (200, b"n=3")
        assert pool.opened == 2 and srv["requests"]() == 3


async def test_server_that_closes_without_answering_is_a_protocol_error() -> None:
    async with raw_server(lambda n, r: None) as srv:
        pool = ConnectionPool("127.0.0.1", srv["port"])
        with pytest.raises(ProtocolError):
            await pool.request("GET", "/", [], timeout=2)


async def test_chunked_and_close_delimited_bodies() -> None:
    chunked = b"HTTP/1.1 403 Forbidden\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    async with raw_server(lambda n, r: chunked) as srv:
        pool = ConnectionPool("127.0.0.1", srv["port"])
        response = await pool.request("GET", "/", [], timeout=2)
        assert (response.status, response.body) == (403, b"hello world")
        assert response.end_to_end_headers() == []
        assert len(pool._idle) == 1

    async with raw_server(lambda n, r: (b"HTTP/1.0 200 OK\r\nx-a: 1\r\n\r\nuntil close",)) as srv:
        pool = ConnectionPool("127.0.0.1", srv["port"])
        response = await pool.request("GET", "/", [], timeout=2)
        assert (response.body, response.header("x-a")) == (b"until close", "1")
        assert pool._idle == []  # delimited by close: never reused


async def test_head_response_has_no_body_and_interim_responses_are_skipped() -> None:
    async with raw_server(lambda n, r: b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"", "content-length: 0\r\n")) as srv:
        pool = ConnectionPool("127.0.0.1", srv["port"])
        response = await pool.request("GET", "/", [], timeout=2)
        assert response.status == 200

    head = b"HTTP/1.1 200 OK\r\ncontent-length: 123\r\n\r\n"
    async with raw_server(lambda n, r: head) as srv:
        pool = ConnectionPool("127.0.0.1", srv["port"])
        response = await pool.request("HEAD", "/", [], timeout=2)
        assert (response.status, response.body) == (200, b"")
        assert len(pool._idle) == 1


async def test_oversized_body_and_garbage_are_protocol_errors() -> None:
    big = f"HTTP/1.1 200 OK\r\ncontent-length: {MAX_BODY + 1}\r\n\r\n".encode()
    async with raw_server(lambda n, r: big) as srv:
        with pytest.raises(ProtocolError, match="over"):
            await ConnectionPool("127.0.0.1", srv["port"]).request("GET", "/", [], timeout=2)
    async with raw_server(lambda n, r: b"SSH-2.0-OpenSSH\r\n\r\n") as srv:
        with pytest.raises(ProtocolError, match="status line"):
            await ConnectionPool("127.0.0.1", srv["port"]).request("GET", "/", [], timeout=2)


async def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = ConnectionPool("127.0.0.1", port)
    with pytest.raises(ConnectError):
        await pool.request("GET", "/", [], timeout=2)
    assert pool.active == 0


async def test_no_answer_within_the_deadline_is_a_timeout_and_the_connection_is_dropped() -> None:
    async with raw_server(lambda n, r: 5.0) as srv:
        pool = ConnectionPool("127.0.0.1", srv["port"])
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(CallTimeout):
            await pool.request("GET", "/", [], timeout=0.2)
        assert loop.time() - started < 1.0
        assert pool._idle == [] and pool.active == 0


def test_shared_returns_the_live_object_for_a_key_and_a_new_one_once_stopped() -> None:
    a = shared(("test-pool", 1), lambda: ConnectionPool("127.0.0.1", 1))
    assert shared(("test-pool", 1), lambda: ConnectionPool("127.0.0.1", 1)) is a
    a.stop()
    b = shared(("test-pool", 1), lambda: ConnectionPool("127.0.0.1", 1))
    assert b is not a


def test_log_throttle_lets_one_line_through_per_interval() -> None:
    throttle = LogThrottle(interval=60)
    assert [throttle.allow() for _ in range(5)] == [True, False, False, False, False]
    assert throttle.suppressed == 4
