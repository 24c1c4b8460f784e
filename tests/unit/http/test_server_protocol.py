"""The downstream HTTP/1.1 connection, driven sans-IO: bytes in, handler calls and bytes
out. A fake transport records what the protocol writes and whether it closed; a fake
handler records the requests it is given and answers when the test says so."""

from __future__ import annotations

import asyncio
import re

import pytest

from meshgate.config.snapshot import Limits
from meshgate.http.server import ServerProtocol

# --- fakes ----------------------------------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        self.pause_calls = 0

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False
        self.pause_calls += 1

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default=None):
        return {"peername": ("127.0.0.1", 5555)}.get(name, default)


class FakeExchange:
    """Records what the protocol tells it; ``respond()`` answers like a real exchange."""

    def __init__(self, proto, ctx, chunked, content_length, keep_alive) -> None:
        self.proto = proto
        self.ctx = ctx
        self.chunked = chunked
        self.content_length = content_length
        self.keep_alive = keep_alive
        self.expect_continue = False
        self.started = False
        self.body: list[bytes] = []
        self.ended = False
        self.lost = False
        self.aborted_with: tuple[int, str] | None = None
        self.can_still_answer = True  # what abort_with() returns

    def start(self) -> None:
        self.started = True

    def on_request_body(self, chunk: bytes) -> None:
        assert not self.ended
        self.body.append(bytes(chunk))

    def on_request_end(self) -> None:
        self.ended = True

    def on_downstream_lost(self) -> None:
        self.lost = True

    def pause_upstream_reading(self) -> None:
        pass

    def resume_upstream_reading(self) -> None:
        pass

    def abort_with(self, status: int, detail: str) -> bool:
        self.aborted_with = (status, detail)
        if self.can_still_answer:
            self.proto.write(b"HTTP/1.1 %d X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n" % status)
        return self.can_still_answer

    def respond(self, body: bytes = b"ok", keep_alive: bool = True) -> None:
        assert self.started, "answered before start()"
        self.proto.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        self.proto.finish(self, keep_alive)


class FakeHandler:
    def __init__(self) -> None:
        self.exchanges: list[FakeExchange] = []
        self.rejected: list[tuple[int, str]] = []
        self.opened = 0
        self.closed = 0
        self.draining = False

    def connection_opened(self, proto) -> None:
        self.opened += 1

    def connection_closed(self, proto) -> None:
        self.closed += 1

    def new_exchange(self, proto, ctx, chunked, content_length, keep_alive) -> FakeExchange:
        ex = FakeExchange(proto, ctx, chunked, content_length, keep_alive)
        self.exchanges.append(ex)
        return ex

    def on_rejected(self, proto, status: int, detail: str) -> None:
        self.rejected.append((status, detail))


class Conn:
    """One downstream connection under test."""

    def __init__(self, limits: Limits | None = None, listener_port: int = 8080) -> None:
        self.limits = limits or Limits()
        self.handler = FakeHandler()
        self.transport = FakeTransport()
        self.proto = ServerProtocol(self.handler, listener_port, self.limits)
        self.proto.connection_made(self.transport)

    def feed(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.proto.data_received(chunk)

    @property
    def out(self) -> bytes:
        return bytes(self.transport.written)

    @property
    def exchanges(self) -> list[FakeExchange]:
        return self.handler.exchanges

    def only_request(self) -> FakeExchange:
        (ex,) = self.handler.exchanges
        return ex

    def later(self, seconds: float) -> float:
        return asyncio.get_running_loop().time() + seconds


def status_of(response: bytes) -> int:
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", response)
    assert m, response
    return int(m.group(1))


def assert_rejected(conn: Conn, status: int) -> None:
    """The client got ``status`` with connection: close, and the connection closed,
    without the request reaching the handler."""
    out = conn.out
    assert status_of(out) == status, out
    head, _, body = out.partition(b"\r\n\r\n")
    fields = head.lower().split(b"\r\n")[1:]
    assert b"connection: close" in fields
    length = next(int(f.split(b":")[1]) for f in fields if f.startswith(b"content-length:"))
    assert len(body) == length
    assert conn.transport.closed
    assert conn.exchanges == []
    assert [s for s, _ in conn.handler.rejected] == [status]


GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


# --- the request the handler receives -------------------------------------------------


async def test_request_context_has_normalized_path_query_host_and_headers():
    conn = Conn(listener_port=8080)
    conn.feed(
        b"GET /a/./b/../c//d?x=1&y=%2F HTTP/1.1\r\n"
        b"Host: Example.COM:8080\r\n"
        b"User-Agent: test\r\n"
        b"X-Multi: 1\r\n"
        b"x-multi: 2\r\n"
        b"\r\n"
    )
    ex = conn.only_request()
    ctx = ex.ctx
    assert ctx.method == "GET"
    assert ctx.raw_target == "/a/./b/../c//d?x=1&y=%2F"
    assert ctx.path == "/a/c/d"
    assert ctx.query == "x=1&y=%2F"
    assert ctx.target() == "/a/c/d?x=1&y=%2F"
    assert ctx.host == "example.com"
    assert ctx.authority == "Example.COM:8080"
    assert ctx.http_version == "1.1"
    assert ctx.scheme == "http"
    assert (ctx.client_ip, ctx.client_port, ctx.listener_port) == ("127.0.0.1", 5555, 8080)
    assert ctx.headers.items() == [
        ("host", "Example.COM:8080"),
        ("user-agent", "test"),
        ("x-multi", "1"),
        ("x-multi", "2"),
    ]
    assert ex.started and ex.ended and ex.body == []
    assert (ex.chunked, ex.content_length, ex.keep_alive) == (False, 0, True)
    assert conn.out == b""  # nothing is written until the exchange answers
    assert not conn.transport.closed


async def test_the_handler_sees_the_connection_open_and_close():
    conn = Conn()
    assert conn.handler.opened == 1
    conn.proto.connection_lost(None)
    assert conn.handler.closed == 1


async def test_request_split_across_many_reads():
    conn = Conn()
    raw = b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world"
    conn.feed(*(raw[i : i + 1] for i in range(len(raw))))
    ex = conn.only_request()
    assert ex.ctx.method == "POST"
    assert b"".join(ex.body) == b"hello world"
    assert ex.ended


async def test_content_length_body_is_delivered_in_order_then_the_end():
    conn = Conn()
    conn.feed(b"PUT /p HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01234")
    ex = conn.only_request()
    assert ex.started and (ex.chunked, ex.content_length) == (False, 10)
    assert b"".join(ex.body) == b"01234"
    assert not ex.ended
    conn.feed(b"567", b"89")
    assert b"".join(ex.body) == b"0123456789"
    assert ex.ended


async def test_chunked_body_is_delivered_decoded():
    conn = Conn()
    conn.feed(
        b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n",
        b"6\r\n world\r\n",
    )
    ex = conn.only_request()
    assert ex.chunked
    assert not ex.ended
    conn.feed(b"0\r\n\r\n")
    assert b"".join(ex.body) == b"hello world"
    assert ex.ended
    assert ex.ctx.headers.get("transfer-encoding") == "chunked"


async def test_expect_100_continue_is_flagged_not_forwarded():
    conn = Conn()
    conn.feed(b"POST /p HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    ex = conn.only_request()
    assert ex.expect_continue
    assert "expect" not in ex.ctx.headers
    conn.feed(b"abc")
    assert ex.body == [b"abc"] and ex.ended


async def test_absolute_form_target_replaces_host():
    conn = Conn()
    conn.feed(b"GET http://Other.example:9000/x?q HTTP/1.1\r\nHost: ignored.example\r\n\r\n")
    ctx = conn.only_request().ctx
    assert (ctx.path, ctx.query, ctx.host) == ("/x", "q", "other.example")
    assert ctx.headers.get_all("host") == ["Other.example:9000"]


async def test_options_asterisk_form():
    conn = Conn()
    conn.feed(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
    assert conn.only_request().ctx.path == "*"


@pytest.mark.parametrize(
    ("request_head", "keep_alive"),
    [
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\n\r\n", False),  # HTTP/1.0 may omit Host
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
    ],
)
async def test_keep_alive_follows_version_and_connection(request_head, keep_alive):
    conn = Conn()
    conn.feed(request_head)
    assert conn.only_request().keep_alive is keep_alive


# --- keep-alive and pipelining ----------------------------------------------------------


async def test_keep_alive_serves_requests_one_after_another():
    conn = Conn()
    conn.feed(GET)
    conn.exchanges[0].respond(b"one")
    assert not conn.transport.closed
    conn.feed(b"GET /two HTTP/1.1\r\nHost: h\r\n\r\n")
    conn.exchanges[1].respond(b"two")
    assert conn.out.count(b"HTTP/1.1 200 OK") == 2
    assert conn.out.endswith(b"two")
    assert not conn.transport.closed


async def test_pipelined_requests_start_one_at_a_time_in_order():
    conn = Conn()
    conn.feed(
        b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
        b"GET /3 HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    first, second, third = conn.exchanges
    assert [e.ctx.path for e in conn.exchanges] == ["/1", "/2", "/3"]
    assert [e.started for e in conn.exchanges] == [True, False, False]
    # Queued requests are fully read but wait; reading pauses meanwhile.
    assert second.body == [b"hi"] and second.ended
    assert not conn.transport.reading

    first.respond(b"r1")
    assert [e.started for e in conn.exchanges] == [True, True, False]
    assert not conn.transport.reading  # /3 still queued
    second.respond(b"r2")
    assert third.started
    assert conn.transport.reading  # queue worked off: read again
    third.respond(b"r3")
    bodies = re.findall(rb"\r\n\r\n(r\d)", conn.out)
    assert bodies == [b"r1", b"r2", b"r3"]
    assert not conn.transport.closed


async def test_finishing_an_exchange_that_is_not_current_is_ignored():
    conn = Conn()
    conn.feed(GET + GET)
    first, second = conn.exchanges
    conn.proto.finish(second, True)  # out of order: must not skip the first
    assert first.started and not second.started
    first.respond()
    assert second.started


async def test_response_without_keep_alive_closes_the_connection():
    conn = Conn()
    conn.feed(GET + GET)
    conn.exchanges[0].respond(keep_alive=False)
    assert conn.transport.closed
    assert not conn.exchanges[1].started


async def test_draining_closes_after_the_response_in_progress():
    conn = Conn()
    conn.feed(GET)
    conn.handler.draining = True
    conn.exchanges[0].respond()
    assert status_of(conn.out) == 200
    assert conn.transport.closed


async def test_downstream_loss_reaches_the_current_and_queued_exchanges():
    conn = Conn()
    conn.feed(GET + GET)
    conn.proto.connection_lost(ConnectionResetError())
    assert [e.lost for e in conn.exchanges] == [True, True]
    assert conn.handler.closed == 1


async def test_idle_keep_alive_connection_closes_after_the_idle_timeout():
    conn = Conn(Limits(idle_timeout=5.0))
    conn.feed(GET)
    conn.exchanges[0].respond()
    written = conn.out
    conn.proto.check_deadline(conn.later(4.0))
    assert not conn.transport.closed
    conn.proto.check_deadline(conn.later(6.0))
    assert conn.transport.closed
    assert conn.out == written  # closed quietly, no response


async def test_bytes_after_close_are_ignored():
    conn = Conn()
    conn.feed(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    conn.exchanges[0].respond(keep_alive=False)
    conn.feed(GET)
    assert len(conn.exchanges) == 1


# --- header read timeout ----------------------------------------------------------------


async def test_partial_head_past_the_header_timeout_gets_408():
    conn = Conn(Limits(header_timeout=2.0))
    conn.feed(b"GET /slow HTTP/1.1\r\nHost: h\r\n")
    conn.proto.check_deadline(conn.later(1.0))
    assert conn.out == b"" and not conn.transport.closed
    conn.proto.check_deadline(conn.later(3.0))
    assert_rejected(conn, 408)


async def test_connection_that_never_sends_a_byte_is_closed_without_a_response():
    conn = Conn(Limits(header_timeout=2.0))
    conn.proto.check_deadline(conn.later(3.0))
    assert conn.transport.closed
    assert conn.out == b""


async def test_a_complete_head_stops_the_header_timeout():
    conn = Conn(Limits(header_timeout=2.0, idle_timeout=60.0))
    conn.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n")
    conn.proto.check_deadline(conn.later(3.0))
    assert not conn.transport.closed
    assert conn.out == b""


# --- malformed requests are answered and the connection closes ---------------------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET\r\n\r\n", 400),
        (b"G@T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 needs Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: bad host\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX@Y: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400),
        (b"GET /p#frag HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET relative HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),  # asterisk-form is for OPTIONS only
        (b"GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        # request smuggling shapes
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        # understood but not served
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 501),
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    ],
)
async def test_malformed_request_is_rejected(raw, status):
    conn = Conn()
    conn.feed(raw)
    assert_rejected(conn, status)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nhi",
    ],
)
async def test_upgrade_request_is_refused_with_501(raw):
    conn = Conn()
    conn.feed(raw)
    assert_rejected(conn, 501)


async def test_request_target_over_the_limit_gets_414():
    conn = Conn(Limits(max_request_line=64))
    conn.feed(b"GET /" + b"a" * 40 + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    conn.only_request().respond()  # under the limit: served
    conn = Conn(Limits(max_request_line=64))
    conn.feed(b"GET /" + b"a" * 100, b"a" * 100 + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    assert_rejected(conn, 414)


async def test_header_section_over_the_limit_gets_431():
    conn = Conn(Limits(max_header_bytes=1024))
    conn.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"v" * 2000 + b"\r\n\r\n")
    assert_rejected(conn, 431)


async def test_too_many_header_fields_gets_431():
    limits = Limits(max_header_count=10)
    conn = Conn(limits)
    conn.feed(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-N: 1\r\n" * 9 + b"\r\n")
    assert len(conn.exchanges) == 1  # 10 fields: at the limit, served
    conn = Conn(limits)
    conn.feed(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-N: 1\r\n" * 10 + b"\r\n")
    assert_rejected(conn, 431)


async def test_declared_body_over_the_limit_gets_413_before_any_byte_of_it():
    limits = Limits(max_body_bytes=100)
    conn = Conn(limits)
    conn.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n")
    assert len(conn.exchanges) == 1
    conn = Conn(limits)
    conn.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n")
    assert_rejected(conn, 413)


async def test_rejection_body_says_why():
    conn = Conn()
    conn.feed(b"GET / HTTP/1.1\r\n\r\n")
    head, _, body = conn.out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"content-type: text/plain" in head.lower()
    assert b"host" in body.lower()


async def test_a_bad_request_after_a_good_one_is_answered_after_it():
    conn = Conn()
    conn.feed(GET + b"BAD REQUEST\r\n\r\n")
    assert len(conn.exchanges) == 1  # the bad one never reaches the handler
    assert [s for s, _ in conn.handler.rejected] == [400]
    assert not conn.transport.closed  # the good one is still being answered
    conn.exchanges[0].respond(b"first")
    # In order: the good request's response, then the 400, then the close.
    assert re.findall(rb"HTTP/1.1 (\d+)", conn.out) == [b"200", b"400"]
    assert b"first" in conn.out.split(b"HTTP/1.1 400")[0]
    assert conn.transport.closed


async def test_malformed_chunked_body_aborts_the_exchange_with_400():
    conn = Conn()
    conn.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    ex = conn.only_request()
    conn.feed(b"zz\r\n")
    assert ex.aborted_with is not None and ex.aborted_with[0] == 400
    assert status_of(conn.out) == 400  # the exchange could still answer
    assert conn.transport.closed and not conn.transport.aborted


async def test_malformed_body_after_the_response_began_cuts_the_connection():
    conn = Conn()
    conn.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    ex = conn.only_request()
    ex.can_still_answer = False
    conn.feed(b"not-hex\r\n")
    assert ex.aborted_with is not None
    assert conn.transport.aborted
    assert conn.out == b""
