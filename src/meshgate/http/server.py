"""The downstream HTTP/1.1 connection: strict parsing, limits, keep-alive, pipelining.

``ServerProtocol`` owns the socket. It parses with httptools (llhttp, strict mode),
enforces what llhttp does not (Host rules, Content-Length and Transfer-Encoding rules,
sizes, the header-read deadline), and hands each complete request head to its
``handler`` as a ``RequestContext``. The handler returns an ``exchange`` object that
receives the body (``on_request_body`` / ``on_request_end``) and later calls
``finish()``. Requests are answered in order; while one is in flight, pipelined ones
wait in a queue and reading pauses.

A malformed request never reaches the handler: the client gets the status the error
carries and the connection closes.

On HTTPS ports the transport hands over a finished handshake: ``connection_made`` asks
``tls.sni.accept`` which listener SNI selected (its limits then apply to the
connection) and whether that listener's own TLS rules are met, and keeps the session
facts for every request's ``ctx.tls``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import deque
from typing import Any

import httptools

from meshgate.config.snapshot import Limits
from meshgate.http.headers import Headers, connection_options
from meshgate.http.paths import InvalidTarget, parse_host, parse_target
from meshgate.proxy.context import RequestContext
from meshgate.proxy.errors import reason_phrase
from meshgate.tls.sni import accept as accept_tls



# Fields a Connection header may not remove: the request is already framed and routed
# by them.
_FRAMING = frozenset(("host", "content-length", "transfer-encoding"))

class BadRequest(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class ServerProtocol(asyncio.Protocol):
    """One downstream connection."""

    def __init__(self, handler: Any, listener_port: int, limits: Limits, scheme: str = "http"):
        self.handler = handler
        self.listener_port = listener_port
        self.limits = limits
        self.scheme = scheme
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = ""
        self.client_port = 0
        self.loop = asyncio.get_event_loop()
        self.closing = False
        self.write_paused = False
        self._read_pause_reasons: set[str] = set()
        # Request being parsed
        self._url: bytes = b""
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._host_count = 0
        self._host = ""
        self._content_length: str | None = None
        self._transfer_encoding: str | None = None
        self._connection: str | None = None  # the Connection field's values, joined
        self._expect_continue = False
        self._receiving = None  # the exchange whose body is arriving
        # A malformed request that follows good pipelined ones: answered after them.
        self._deferred_error: tuple[int, str] | None = None
        # In-flight and queued exchanges, answered in order
        self.current = None
        self.pending: deque = deque()
        self._deadline = 0.0  # loop.time() when the current timeout fires; 0: none
        self._timer_kind = ""
        self._message_start = 0.0  # loop.time() of the request's first byte (request_timeout)
        self.tls = None  # tls.sni.TLSInfo on HTTPS

    # -- connection lifecycle ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip, self.client_port = peer[0], peer[1]
        if self.scheme == "https":
            accepted = accept_tls(transport.get_extra_info("ssl_object"))
            if isinstance(accepted, str):
                # The SNI-selected listener's own version range or client-certificate
                # rule is not met (the port's socket accepts the widest of its listeners).
                self.closing = True
                transport.close()
                return
            listener, self.tls = accepted
            self.limits = listener.limits
        self.handler.connection_opened(self)
        self._arm_timer("header", self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._cancel_timer()
        self.handler.connection_closed(self)
        for ex in (self.current, *self.pending):
            if ex is not None:
                ex.on_downstream_lost()
        self.current = None
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.closing or self._deferred_error is not None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade (WebSocket, h2c) is not proxied yet: refuse it explicitly.
            self.reject(501, "protocol upgrade is not supported")
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, BadRequest):
                self.reject(cause.status, cause.detail)
            else:
                self.reject(400, "bad request")
        except httptools.HttpParserInvalidMethodError:
            self.reject(400, "invalid method")
        except httptools.HttpParserInvalidURLError:
            self.reject(400, "invalid request-target")
        except httptools.HttpParserError as exc:
            msg = str(exc)
            if "Invalid HTTP version" in msg or "HTTP version" in msg:
                self.reject(505 if "Invalid HTTP version" not in msg else 400, msg)
            else:
                self.reject(400, msg or "bad request")

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.current
        if ex is not None:
            ex.pause_upstream_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.current
        if ex is not None:
            ex.resume_upstream_reading()

    def pause_reading(self, reason: str) -> None:
        if not self._read_pause_reasons and self.transport is not None and not self.closing:
            self.transport.pause_reading()
        self._read_pause_reasons.add(reason)

    def resume_reading(self, reason: str) -> None:
        reasons = self._read_pause_reasons
        if reason in reasons:
            reasons.discard(reason)
            if not reasons and self.transport is not None and not self.closing:
                self.transport.resume_reading()

    # -- timers --------------------------------------------------------------------

    def _arm_timer(self, kind: str, delay: float) -> None:
        # No per-request timer handles: the engine sweeps every connection's deadline
        # a few times a second (``check_deadline``), which costs a float per request.
        self._timer_kind = kind
        self._deadline = self.loop.time() + delay

    def _cancel_timer(self) -> None:
        self._deadline = 0.0

    def check_deadline(self, now: float) -> None:
        """Called by the engine's sweep: enforce the header-read and idle timeouts."""
        if not self._deadline or now < self._deadline or self.closing:
            return
        self._deadline = 0.0
        if self._timer_kind == "header":
            if self._url or self._headers:
                self.reject(408, "request header read timeout")
            else:
                self.close()  # idle before any byte of a request: just close
        elif self._timer_kind == "idle":
            self.close()
        elif self._timer_kind == "request":
            # requestReceivedTimeout: the body is still arriving. Once the response has
            # begun the timer no longer applies (Envoy's rule).
            ex = self._receiving
            if ex is not None and not ex.head_sent:
                self.reject(408, "request receive timeout")

    # -- httptools callbacks -------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._host_count = 0
        self._host = ""
        self._content_length = None
        self._transfer_encoding = None
        self._connection = None
        self._expect_continue = False
        if self.limits.request_timeout:
            self._message_start = self.loop.time()
        if self._timer_kind != "header" or not self._deadline:
            self._arm_timer("header", self.limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_request_line:
            raise BadRequest(414, "request-target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.limits.max_header_bytes:
            raise BadRequest(431, "request header fields too large")
        if len(self._headers) >= self.limits.max_header_count:
            raise BadRequest(431, "too many request header fields")
        # llhttp (strict) has already refused invalid name tokens and CTL/NUL/CR/LF in
        # values; what is left is ours to check.
        n = name.decode("latin-1").lower()
        v = value.decode("latin-1")
        if "_" in n:
            # withUnderscoresAction (Envoy Gateway's default: reject): upstreams built on
            # CGI, WSGI or PHP read X_User as X-User, so a header a filter sets or strips
            # could be forged in its underscore spelling.
            action = self.limits.underscore_headers
            if action == "RejectRequest":
                raise BadRequest(400, "header name with an underscore")
            if action == "DropHeader":
                return
        if n == "host":
            self._host_count += 1
            self._host = v
        elif n == "content-length":
            if self._content_length is not None and self._content_length != v:
                raise BadRequest(400, "conflicting content-length")
            if not v.isdigit() or not v.isascii():
                raise BadRequest(400, "invalid content-length")
            self._content_length = v
        elif n == "transfer-encoding":
            self._transfer_encoding = (
                v if self._transfer_encoding is None else self._transfer_encoding + "," + v
            )
        elif n == "connection":
            self._connection = v if self._connection is None else self._connection + "," + v
        elif n == "expect":
            if v.lower() == "100-continue":
                self._expect_continue = True
                return  # handled here, not forwarded
        self._headers.append((n, v))

    def on_headers_complete(self) -> None:
        self._cancel_timer()
        parser = self.parser
        version = parser.get_http_version()
        method = parser.get_method().decode("ascii")
        if version not in ("1.1", "1.0"):
            raise BadRequest(505, "HTTP version not supported")
        if parser.should_upgrade():
            # WebSocket and h2c upgrades are not proxied yet: refuse them explicitly
            # before anything is forwarded.
            raise BadRequest(501, "protocol upgrade is not supported")
        te = self._transfer_encoding
        chunked = False
        if te is not None:
            if version == "1.0":
                raise BadRequest(400, "transfer-encoding in an HTTP/1.0 request")
            if self._content_length is not None:
                raise BadRequest(400, "both content-length and transfer-encoding")
            codings = [c.strip().lower() for c in te.split(",")]
            if any(c != "chunked" for c in codings):
                if "chunked" in codings and codings[-1] != "chunked":
                    raise BadRequest(400, "chunked is not the final transfer-coding")
                raise BadRequest(501, "transfer-coding not implemented")
            if len(codings) != 1:
                raise BadRequest(400, "chunked applied more than once")
            chunked = True
        content_length = int(self._content_length) if self._content_length is not None else 0
        limits = self.limits
        max_body = limits.max_body_bytes
        if max_body and content_length > max_body:
            raise BadRequest(413, "request body too large")
        if self._host_count > 1:
            raise BadRequest(400, "more than one host header")
        if self._host_count == 0 and version == "1.1":
            raise BadRequest(400, "missing host header")
        try:
            target = self._url.decode("ascii")
        except UnicodeDecodeError:
            raise BadRequest(400, "invalid request-target") from None
        headers = Headers(self._headers)
        if self._connection is not None:
            # RFC 9110 7.6.1: fields the Connection header names are this hop's; drop them
            # now, before filters run, so a client cannot have a field a filter sets (an
            # identity header) dropped on its way upstream.
            for nominated in connection_options(self._connection) - _FRAMING:
                headers.remove(nominated)
        authority = self._host
        if self._host_count and not authority:
            raise BadRequest(400, "empty host header")
        if method == "CONNECT":
            raise BadRequest(501, "CONNECT is not supported")
        if target == "*":
            if method != "OPTIONS":
                raise BadRequest(400, "asterisk-form is only for OPTIONS")
            path, query, target_authority = "*", "", None
        else:
            try:
                path, query, target_authority = parse_target(target)
            except InvalidTarget as exc:
                raise BadRequest(400, str(exc)) from None
        if target_authority is not None:
            # RFC 9112 3.2.2: the absolute-form authority replaces Host.
            authority = target_authority
            headers.set("host", authority)
        host = parse_host(authority) if authority else ""
        if host is None:
            raise BadRequest(400, "invalid host")
        client_ip = self.client_ip
        if limits.xff_trusted_hops:
            client_ip = client_address(self._headers, limits.xff_trusted_hops, client_ip)
        ctx = RequestContext(
            method,
            target,
            path,
            query,
            headers,
            host,
            authority,
            self.scheme,
            version,
            client_ip,
            self.client_port,
            self.listener_port,
            "",
            time.monotonic(),
        )
        if client_ip is not self.client_ip:
            ctx.peer_ip = self.client_ip
        ctx.tls = self.tls
        keep_alive = parser.should_keep_alive()
        has_body = chunked or content_length > 0
        if has_body and limits.request_timeout:
            self._timer_kind = "request"
            self._deadline = self._message_start + limits.request_timeout
        exchange = self.handler.new_exchange(self, ctx, chunked, content_length, keep_alive)
        exchange.expect_continue = self._expect_continue
        if has_body:
            self._receiving = exchange
        else:
            # Whole already: an answer made at once (a redirect, a 401, a 429) can keep
            # the connection open.
            exchange.on_request_end()
        if self.current is None:
            self.current = exchange
            exchange.start()
        else:
            self.pending.append(exchange)
            # Pipelined: hold further input until the queue is worked off.
            self.pause_reading("pipeline")

    def on_body(self, body: bytes) -> None:
        ex = self._receiving
        if ex is not None:
            ex.on_request_body(body)

    def on_message_complete(self) -> None:
        if self._timer_kind == "request":
            self._cancel_timer()
        ex = self._receiving
        if ex is not None:
            self._receiving = None
            ex.on_request_end()

    # -- used by exchanges ---------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closing:
            self.transport.write(data)  # type: ignore[union-attr]

    def finish(self, exchange: Any, keep_alive: bool) -> None:
        """``exchange`` has sent its whole response; serve the next one or close."""
        if exchange is not self.current:
            return
        self.current = None
        if self.closing:
            return
        if not keep_alive or self.handler.draining:
            self.close()
            return
        if self.pending:
            nxt = self.pending.popleft()
            if not self.pending:
                self.resume_reading("pipeline")
            self.current = nxt
            nxt.start()
        elif self._deferred_error is not None:
            self._write_error(*self._deferred_error)
        elif self._receiving is None:
            self._arm_timer("idle", self.limits.idle_timeout)

    def is_idle(self) -> bool:
        return self.current is None and not self.pending and self._receiving is None

    def reject(self, status: int, detail: str) -> None:
        """Answer a request we will not forward, then close the connection."""
        if self.closing:
            return
        self.handler.on_rejected(self, status, detail)
        current = self.current
        receiving = self._receiving
        if current is not None and current is not receiving:
            # Earlier pipelined requests were fine: answer them first, in order, then
            # this error, then close. Nothing after the bad bytes is parsed.
            if receiving is not None and receiving in self.pending:
                self.pending.remove(receiving)
                receiving.on_downstream_lost()
            self._receiving = None
            self._deferred_error = (status, detail)
            self.pause_reading("rejected")
            return
        if current is not None:
            # Its body turned out malformed: the exchange stops its upstream request
            # and answers, unless its response has begun (then all we can do is cut).
            if not current.abort_with(status, detail):
                self.abort()
                return
            self.close()
            return
        self._write_error(status, detail)

    def _write_error(self, status: int, detail: str) -> None:
        body = (detail + "\n").encode()
        self.transport.write(  # type: ignore[union-attr]
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, reason_phrase(status).encode(), len(body), body)
        )
        self.close()

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self._cancel_timer()
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.closing = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()


def client_address(headers: list[tuple[str, str]], hops: int, peer: str) -> str:
    """Envoy's rule with ``xff_num_trusted_hops``: the ``hops``-th address from the right
    of X-Forwarded-For (all its lines, in order); the peer address when there are fewer
    addresses than that or the one found is not an IP address."""
    addresses: list[str] = []
    for name, value in headers:
        if name == "x-forwarded-for":
            addresses.extend(a.strip() for a in value.split(","))
    if len(addresses) < hops:
        return peer
    candidate = addresses[-hops]
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return peer
    return candidate
