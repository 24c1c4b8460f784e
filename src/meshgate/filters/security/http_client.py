"""A small HTTP/1.1 client for the services authentication filters call (external
authorization, token introspection): keep-alive connections over asyncio streams, a
few idle ones kept per endpoint, one deadline per call, https through ``ssl``.

Not the proxy's upstream client: these calls are small (a head and a short JSON body),
answered whole, and never streamed. Each call is bounded: the whole exchange (connect,
send, read) must finish within ``timeout`` seconds, and a response larger than
``MAX_BODY`` is a protocol error.

Errors form a flat tree under ``HTTPClientError`` (``ConnectError``, ``CallTimeout``,
``ProtocolError``); filters map them to their answer at one place. A reused idle
connection the server closed meanwhile (the usual keep-alive race) is retried once on a
fresh connection, only when nothing of a response was read.

``ConnectionPool`` is also a filter *service* (``start``/``stop``): a reload that drops
the filter closes its idle connections; ``shared()`` keeps one pool per key across
reloads so a kept config keeps its warm connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
MAX_IDLE = 8  # idle connections kept per endpoint

_HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade")
)


class HTTPClientError(Exception):
    """A call that got no usable response."""


class ConnectError(HTTPClientError):
    """The connection (or TLS handshake) could not be made."""


class CallTimeout(HTTPClientError):
    """No complete response within the call's deadline."""


class ProtocolError(HTTPClientError):
    """The peer closed early or sent something that is not a valid HTTP/1.1 response."""


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]]  # lowercase names, in order received
    body: bytes

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def end_to_end_headers(self) -> list[tuple[str, str]]:
        """The fields a proxy may pass on: no hop-by-hop, framing or Host fields."""
        return [
            (n, v)
            for n, v in self.headers
            if n not in _HOP_BY_HOP and n != "content-length" and n != "host"
        ]


class _Connection:
    __slots__ = ("loop", "reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.reused = False

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a dead transport must not raise
            self.writer.close()


class _ReadNothing(ProtocolError):
    """Closed before the first byte of a response: safe to retry on a fresh connection."""


class ConnectionPool:
    """Keep-alive connections to one endpoint (``host:port``, TLS when ``tls`` is set)."""

    def __init__(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        max_idle: int = MAX_IDLE,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.server_hostname = server_hostname or host if tls is not None else None
        self.max_idle = max_idle
        self._idle: list[_Connection] = []
        self.active = 0  # calls in progress
        self.opened = 0  # connections opened, ever (tests and /config_dump read it)
        self.closed = False

    def __repr__(self) -> str:
        return (
            f"<ConnectionPool {self.host}:{self.port} [Requests: {self.active} active | "
            f"Connections: {len(self._idle)} idle, {self.opened} opened]>"
        )

    # -- service interface (filters/base.py) ------------------------------------------

    async def start(self) -> None:
        self.closed = False

    def stop(self) -> None:
        self.closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- bookkeeping ------------------------------------------------------------------

    def _take_idle(self) -> _Connection | None:
        loop = asyncio.get_running_loop()
        while self._idle:
            conn = self._idle.pop()
            # A connection from another loop (a test's, a previous run's) is unusable.
            if conn.loop is loop and not conn.reader.at_eof() and not conn.writer.is_closing():
                conn.reused = True
                return conn
            conn.close()
        return None

    def _release(self, conn: _Connection, reusable: bool) -> None:
        if reusable and not self.closed and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()

    async def _open(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=self.tls,
                server_hostname=self.server_hostname,
                limit=MAX_HEAD,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"connect to {self.host}:{self.port} failed: {exc}") from None
        self.opened += 1
        return _Connection(reader, writer)

    # -- calls ------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        timeout: float = 10.0,
    ) -> Response:
        """One exchange, whole, within ``timeout`` seconds. ``headers`` must not carry
        framing fields (Content-Length, Transfer-Encoding, Connection): they are ours."""
        head = _request_head(method, target, headers, len(body))
        self.active += 1
        try:
            async with asyncio.timeout(timeout):
                conn = self._take_idle()
                if conn is not None:
                    try:
                        return await self._exchange(conn, head, body, method)
                    except _ReadNothing:
                        pass  # the server had closed the idle connection: once more, fresh
                return await self._exchange(await self._open(), head, body, method)
        except TimeoutError:
            raise CallTimeout(f"no response from {self.host}:{self.port} within {timeout:g}s") from None
        finally:
            self.active -= 1

    async def _exchange(self, conn: _Connection, head: bytes, body: bytes, method: str) -> Response:
        ok = False
        try:
            conn.writer.write(head + body if body else head)
            await conn.writer.drain()
            response, reusable = await _read_response(conn.reader, method)
            ok = True
            self._release(conn, reusable)
            return response
        except (ConnectionError, OSError) as exc:
            if conn.reused:
                raise _ReadNothing(str(exc)) from None
            raise ProtocolError(f"connection to {self.host}:{self.port} failed: {exc}") from None
        except _ReadNothing:
            if conn.reused:
                raise
            raise ProtocolError(f"{self.host}:{self.port} closed the connection without answering") from None
        finally:
            if not ok:
                conn.close()


def _request_head(method: str, target: str, headers: list[tuple[str, str]], length: int) -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    for n, v in headers:
        lines.append(f"{n}: {v}\r\n")
    lines.append(f"content-length: {length}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


async def _read_response(reader: asyncio.StreamReader, method: str) -> tuple[Response, bool]:
    """The response (interim 1xx skipped) and whether the connection may be reused."""
    while True:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _ReadNothing("closed before a response") from None
            raise ProtocolError("closed in the middle of a response head") from None
        except asyncio.LimitOverrunError:
            raise ProtocolError(f"response head larger than {MAX_HEAD} bytes") from None
        status, version, headers = _parse_head(raw)
        if 100 <= status < 200:
            continue
        break
    fields = dict(headers)  # last value of each: framing fields are single-valued
    keep_alive = version == "HTTP/1.1" and "close" not in fields.get("connection", "").lower()
    if method == "HEAD" or status in (204, 304):
        return Response(status, headers, b""), keep_alive
    try:
        if "chunked" in fields.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in fields:
            try:
                length = int(fields["content-length"])
            except ValueError:
                raise ProtocolError("bad Content-Length") from None
            if length < 0 or length > MAX_BODY:
                raise ProtocolError(f"response body over {MAX_BODY} bytes")
            body = await reader.readexactly(length)
        else:
            body = await reader.read(MAX_BODY + 1)
            while len(body) <= MAX_BODY:
                more = await reader.read(MAX_BODY + 1 - len(body))
                if not more:
                    break
                body += more
            if len(body) > MAX_BODY:
                raise ProtocolError(f"response body over {MAX_BODY} bytes")
            keep_alive = False
    except asyncio.IncompleteReadError:
        raise ProtocolError("closed in the middle of a response body") from None
    return Response(status, headers, body), keep_alive


def _parse_head(raw: bytes) -> tuple[int, str, list[tuple[str, str]]]:
    lines = raw[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"malformed header line: {line[:80]!r}")
        headers.append((name.lower(), value.strip()))
    return int(parts[1]), parts[0], headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        line = await reader.readline()
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError("bad chunk size") from None
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers: read and dropped
            return b"".join(chunks)
        total += size
        if total > MAX_BODY:
            raise ProtocolError(f"response body over {MAX_BODY} bytes")
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


# -- sharing across reloads ------------------------------------------------------------

_SHARED: weakref.WeakValueDictionary[Any, Any] = weakref.WeakValueDictionary()


def shared(key: Any, factory: Callable[[], Any]) -> Any:
    """The object made for ``key`` while something still holds it, else a new one.

    A reload that compiles the same settings gets the same pool (or cache), so warm
    connections and cached answers survive it; the engine stops only the ones a
    reload dropped (services are compared by identity)."""
    found = _SHARED.get(key)
    if found is None or getattr(found, "closed", False):
        found = factory()
        _SHARED[key] = found
    return found


class LogThrottle:
    """At most one line per ``interval`` seconds for a failure that repeats on every
    request while a service is down (the metric counts every one)."""

    __slots__ = ("_next", "interval", "suppressed")

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._next = 0.0
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self.interval
        return True


def default_tls() -> ssl.SSLContext:
    """The system's trust store, hostname checked: what https endpoints are verified with."""
    return ssl.create_default_context()
