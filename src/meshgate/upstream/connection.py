"""One HTTP/1.1 connection to an upstream endpoint.

The protocol parses responses with httptools and hands each event to the exchange
that currently owns the connection (``Exchange.on_upstream_*``); between exchanges it
sits idle in its pool. It knows nothing of routing or of the downstream side.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import httptools

if TYPE_CHECKING:
    from meshgate.upstream.pool import ConnectionPool


# Where a connection stands in its pool's bookkeeping.
ACTIVE = 1
IDLE = 2
GONE = 3


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_acc",
        "_head_request",
        "_write_paused",
        "closed",
        "created",
        "idle_since",
        "in_pool",
        "owner",
        "parser",
        "pool",
        "requests",
        "transport",
    )

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.in_pool = GONE  # set by the pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.owner = None  # the Exchange this connection serves now, or None
        self.closed = False
        self.idle_since = 0.0
        self._acc: bytes | None = None  # raw bytes of the response head being read
        self._head_request = False
        self._write_paused = False
        self.requests = 0  # how many requests this connection carried
        self.created = time.monotonic()

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is None:
            # An idle connection that speaks: the server is closing or misbehaving.
            self.close()
            return
        if self._acc is not None:
            # Inside a response head: keep its raw bytes, which the exchange forwards
            # without a Python call per field.
            self._acc = data if not self._acc else self._acc + data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadResponseDone):
                return  # the parser was replaced and the exchange is done
            self.close()
            owner.on_upstream_error("protocol")
            return
        except httptools.HttpParserError:
            self.close()
            owner.on_upstream_error("protocol")
            return
        owner.flush_response()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        owner = self.owner
        if owner is not None:
            self.owner = None
            # End of a close-delimited body is the normal end of that response.
            owner.on_upstream_lost()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.owner is not None:
            self.owner.pause_downstream_reading("upstream")

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.owner is not None:
            self.owner.resume_downstream_reading("upstream")

    # -- httptools callbacks -----------------------------------------------------

    # No on_header / on_status callbacks: the head is taken raw from ``_acc`` once
    # llhttp has validated it.

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        acc = self._acc or b""
        end = acc.find(b"\r\n\r\n")
        if status < 200:
            # 1xx interim responses (100 Continue, 103 Early Hints) are not passed on;
            # the final response follows on the same connection.
            self._acc = acc[end + 4 :]
            return
        self._acc = None
        host = self.pool.host
        if host is not None:
            host.rq_total += 1
            if status >= 500:
                host.rq_errors += 1
            if host.detector is not None:
                host.detector.on_response(host, status)
        owner = self.owner
        keep_alive = parser.should_keep_alive()
        owner.on_upstream_head(status, acc[: end + 2], keep_alive)
        if self._head_request:
            # httptools cannot be told that a HEAD response has no body: end the
            # message here with a fresh parser for the next response (the exchange
            # may hand this connection on at once), and abort the old parser.
            self.parser = httptools.HttpResponseParser(self)
            owner.on_upstream_complete(keep_alive)
            raise _HeadResponseDone

    def on_body(self, body: bytes) -> None:
        self.owner.on_upstream_body(body)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            return
        self.owner.on_upstream_complete(self.parser.should_keep_alive())

    # -- used by the exchange ----------------------------------------------------

    def send(self, owner, data: bytes, head_request: bool) -> None:
        self.owner = owner
        self._acc = b""
        self._head_request = head_request
        self.requests += 1
        self.transport.write(data)  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    def release(self, reusable: bool) -> None:
        """The owner is done: back to the pool if the connection can carry more."""
        self.owner = None
        if reusable and not self.closed:
            self.idle_since = time.monotonic()
            self.pool.put_idle(self)
        else:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self.pool.discard(self)

    def abort(self) -> None:
        """The owner gives the connection up (a retry, a timeout, the client left): it
        is not told of the close it caused, so no failure is reported for it."""
        self.owner = None
        if self.transport is not None:
            self.transport.abort()
        self.closed = True
        self.pool.discard(self)


class _HeadResponseDone(Exception):
    """Raised from a parser callback to end a HEAD response at its head."""
