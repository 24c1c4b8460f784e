"""One request/response exchange: route, filters, upstream attempts, streaming.

The phases, in order (Pingora's list, with Gateway API filters):
1. route: listener -> hostname table -> first matching rule (``route()``)
2. request filters of the rule, then of the chosen backendRef; a LocalReply ends here
3. pick a backend by weight, an endpoint by the cluster's balancer, a pooled connection
4. send the head and stream the body upstream (replayable for retries when small)
5. response filters on the upstream head, then stream the body downstream
6. log and metrics, always, with the failure if there was one

Request and response bodies are piped from socket callbacks straight to the other
socket; the coroutine only waits for the response head and for the end. Failures are
``ProxyError``s; ``errors.local_reply_for`` turns them into responses.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from meshgate.http.headers import Headers
from meshgate.proxy.context import LocalReply, RequestContext, ResponseHead
from meshgate.proxy.errors import (
    DownstreamDisconnected,
    DownstreamProtocolError,
    InvalidBackend,
    MisdirectedRequest,
    NoHealthyUpstream,
    NoRoute,
    PayloadTooLarge,
    ProxyError,
    ResponseBodyTooLarge,
    UpstreamProtocolError,
    UpstreamReset,
    local_reply_for,
    reason_phrase,
)
from meshgate.proxy.heads import decode_fields, response_fields, upstream_request_head
from meshgate.proxy.retrying import (
    _WAIT_BODY,
    _WAIT_END,
    _WAIT_HEAD,
    _WAIT_NONE,
    CoroutinePath,
    overflow_passes,
)

if TYPE_CHECKING:
    from meshgate.config.snapshot import Snapshot
    from meshgate.http.server import ServerProtocol
    from meshgate.proxy.engine import Engine
    from meshgate.upstream.connection import UpstreamConnection

_REPLAY_LIMIT = 64 * 1024  # request bodies up to this are kept for retries and mirrors
_NO_BODY_STATUS = frozenset((204, 304))


# Returned by _sync_request_filters when a filter deferred the request to its coroutine.
_DEFERRED = LocalReply(0)


def after_delay(current: str, flag: str) -> str:
    """The response flag to log: an injected delay (DI) stays beside what followed,
    comma-joined as Envoy logs several flags (``DI,UF``)."""
    if current == "DI" and flag and flag != "DI":
        return "DI," + flag
    return flag



class Exchange(CoroutinePath):
    __slots__ = (
        "attempt_span",
        "body_buf",
        "body_buf_len",
        "body_done",
        "body_received",
        "buffer_limit",
        "bytes_sent",
        "cluster",
        "conn",
        "ctx",
        "downstream_keep_alive",
        "engine",
        "expect_continue",
        "finished",
        "head_sent",
        "host",
        "out",
        "pending_body",
        "proto",
        "replay",
        "req_chunked",
        "req_keep_alive",
        "req_length",
        "resp_chunked",
        "resp_head",
        "resp_keep_alive",
        "resp_status",
        "resp_until_close",
        "snapshot",
        "status",
        "streaming",
        "task",
        "upstream",
        "upstream_attempts",
        "upstream_complete",
        "waiter",
        "waiting",
    )

    def __init__(
        self,
        engine: Engine,
        proto: ServerProtocol,
        ctx: RequestContext,
        snapshot: Snapshot,
        chunked: bool,
        content_length: int,
        keep_alive: bool,
    ) -> None:
        self.engine = engine
        self.proto = proto
        self.ctx = ctx
        self.snapshot = snapshot
        self.req_chunked = chunked
        self.req_length = content_length
        self.req_keep_alive = keep_alive
        self.expect_continue = False
        self.body_buf: list[bytes] = []
        self.body_buf_len = 0
        self.body_done = False
        self.body_received = 0
        self.replay: list[bytes] | None = None
        self.conn: UpstreamConnection | None = None
        self.waiting = _WAIT_NONE
        self.waiter: asyncio.Future | None = None
        self.resp_status = 0
        self.resp_head = b""  # upstream status line and field lines, raw
        self.resp_keep_alive = False
        self.upstream_complete = False
        self.pending_body: list[bytes] = []
        self.streaming = False
        self.out: list[bytes] = []
        self.resp_chunked = False
        self.resp_until_close = False
        self.downstream_keep_alive = keep_alive
        self.head_sent = False
        self.status = 0
        self.bytes_sent = 0
        self.task: asyncio.Task | None = None
        self.finished = False
        self.upstream_attempts = 0
        self.upstream = None  # the Endpoint of the last attempt, for the access log
        self.attempt_span = None  # tracing: the CLIENT span of the attempt in progress
        self.cluster = None  # the ClusterRuntime this request counts against
        self.host = None  # the Host of the current (or last) attempt
        # Body hooks: the whole body is being buffered, up to this many bytes (0: not).
        self.buffer_limit = 0

    # -- downstream events (from ServerProtocol) -----------------------------------

    def start(self) -> None:
        """Begin answering. Rules with no retry, timeout or async filter, and an idle
        pooled connection at hand, run entirely in socket callbacks (no task, no
        future): routing and filters here, the rest in ``on_upstream_*``. Anything else
        runs in the ``run()`` coroutine."""
        tracing = self.engine.tracing
        if tracing is not None:
            ctx = self.ctx
            ctx.trace = tracing.start(ctx.headers, ctx.method, ctx.raw_target, ctx.host, time.time_ns())
        try:
            self.route()
            rule = self.ctx.rule
            if rule.needs_task:  # type: ignore[union-attr]
                self.task = self.engine.loop.create_task(self.run())
                return
            reply = self._sync_request_filters()
            if reply is not None:
                if reply is _DEFERRED:
                    return  # a filter must wait: the request's coroutine goes on
                self.send_local(reply)
                self._finish(None)
                return
            pool = self._pick_host(None).pool
            conn = pool.take_idle()
            if conn is None:
                self.task = self.engine.loop.create_task(self._connect_then_send(pool))
                return
            self._send(conn)
        except ProxyError as exc:
            self._answer_error(exc)
            self._finish(exc)
        except Exception as exc:  # a bug: answer 500 once, here, and say why in the log
            self.engine.log_exception(self.ctx, exc)
            error = ProxyError()
            self._answer_error(error)
            self._finish(error)

    def trace_failed_connect(self, pool, error: ProxyError) -> None:
        """A try that never got a connection still shows in the trace, with its flag."""
        trace = self.ctx.trace
        if trace is not None:
            ep = pool.endpoint
            trace.attempt(f"{ep.host}:{ep.port}").end(None, error.flag, time.time_ns())

    def _sync_request_filters(self) -> LocalReply | None:
        ctx = self.ctx
        hooks = ctx.rule.request_hooks  # type: ignore[union-attr]
        for entry in hooks:
            reply = entry[0](ctx)
            if reply is not None:
                if not isinstance(reply, LocalReply):
                    # A plain hook returned an awaitable: this request must wait (a key
                    # refetch, say). The coroutine awaits it and runs the hooks after it.
                    resume = (hooks.index(entry) + 1, reply)
                    self.task = self.engine.loop.create_task(self.run(resume))
                    return _DEFERRED
                return reply
        backend = self._pick_backend()
        for hook, _ in backend.request_hooks:
            reply = hook(ctx)
            if reply is not None:
                return reply
        self._before_upstream()
        return None

    def _pick_host(self, exclude):
        """The host for the next try (not ``exclude`` when another is routable). The
        first pick counts the request against the cluster's circuit breaker."""
        cluster = self.cluster
        if cluster is None:
            cluster = self.engine.upstreams.clusters.get(self.ctx.backend.cluster)  # type: ignore[union-attr]
            if cluster is None:
                raise NoHealthyUpstream()
            cluster.begin_request()
            self.cluster = cluster
        self.host = host = cluster.pick(self.ctx, exclude)
        return host

    def _local_failure(self) -> None:
        """The try failed on our side of the wire (reset, timeout): outlier detection."""
        host = self.host
        if host is not None and host.detector is not None:
            host.detector.on_local_failure(host)

    async def _connect_then_send(self, pool) -> None:
        try:
            conn = await pool.acquire()
        except ProxyError as exc:
            self.trace_failed_connect(pool, exc)
            self._answer_error(exc)
            self._finish(exc)
            return
        except asyncio.CancelledError:
            self._finish(DownstreamDisconnected())
            return
        if self.finished:
            conn.release(True)
            return
        self.task = None
        self._send(conn)

    def on_request_body(self, data: bytes) -> None:
        self.body_received += len(data)
        limit = self.snapshot.limits.max_body_bytes
        if limit and self.body_received > limit:
            if not self.fail_now(PayloadTooLarge()):
                self.proto.abort()
            return
        replay = self.replay
        if replay is not None:
            if self.body_received <= _REPLAY_LIMIT:
                replay.append(data)
            else:
                self.replay = None
        conn = self.conn
        if conn is not None:
            conn.write(b"%x\r\n%b\r\n" % (len(data), data) if self.req_chunked else data)
            return
        if self.finished:
            return  # answered already; the rest of the body is read and dropped
        self.body_buf.append(data)
        self.body_buf_len += len(data)
        if self.buffer_limit:
            # A body hook wants the whole body: keep reading, up to its limit.
            if self.body_buf_len > self.buffer_limit and not self.fail_now(PayloadTooLarge()):
                self.proto.abort()
            return
        if self.body_buf_len > self.proto.limits.buffer_limit:
            self.proto.pause_reading("body")

    def on_request_end(self) -> None:
        self.body_done = True
        if self.waiting == _WAIT_BODY:
            self.waiting = _WAIT_NONE
            self.waiter.set_result(None)  # type: ignore[union-attr]
            return
        conn = self.conn
        if conn is not None and self.req_chunked:
            conn.write(b"0\r\n\r\n")
        ctx = self.ctx
        if ctx.mirrors and not self.finished and ctx.backend is not None and not ctx.rule.request_body_hooks:  # type: ignore[union-attr]
            self.engine.send_mirrors(self)

    def on_downstream_lost(self) -> None:
        if self.finished:
            return
        self.ctx.flag = "DC"
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(DownstreamDisconnected())
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.abort()
        if self.task is not None and self.waiting == _WAIT_NONE:
            self.task.cancel()
        self._finish(DownstreamDisconnected())

    def pause_upstream_reading(self) -> None:
        if self.conn is not None:
            self.conn.pause_reading()

    def resume_upstream_reading(self) -> None:
        if self.conn is not None:
            self.conn.resume_reading()

    def pause_downstream_reading(self, reason: str) -> None:
        self.proto.pause_reading(reason)

    def resume_downstream_reading(self, reason: str) -> None:
        self.proto.resume_reading(reason)

    # -- upstream events (from UpstreamConnection) ---------------------------------

    def on_upstream_head(self, status: int, raw_head: bytes, keep_alive: bool) -> None:
        self.resp_status = status
        self.resp_head = raw_head
        self.resp_keep_alive = keep_alive
        if self.waiting == _WAIT_HEAD:
            self.waiting = _WAIT_NONE
            self.waiter.set_result(None)  # type: ignore[union-attr]
        elif self.task is None:
            # Callback mode: the head goes out with the body bytes of this same read,
            # flushed by the connection once the parser is done with them.
            self._send_upstream_head(flush=False)

    def on_upstream_body(self, data: bytes) -> None:
        if not data:
            return
        if self.streaming:
            self.out.append(b"%x\r\n%b\r\n" % (len(data), data) if self.resp_chunked else data)
            self.bytes_sent += len(data)
        else:
            self.pending_body.append(data)
            if self.buffer_limit and self.waiting == _WAIT_END:
                if sum(len(b) for b in self.pending_body) > self.buffer_limit:
                    self.buffer_limit = 0
                    if overflow_passes(self.ctx.rule):
                        self._send_upstream_head()  # stream it on, past the hooks
                    else:
                        self._upstream_failed(ResponseBodyTooLarge())

    def on_upstream_complete(self, keep_alive: bool) -> None:
        self.upstream_complete = True
        self.resp_keep_alive = keep_alive
        if self.streaming:
            self._end_streamed_response()
        elif self.waiting == _WAIT_END:  # body hooks wanted the whole response
            self.waiting = _WAIT_NONE
            self.waiter.set_result(None)  # type: ignore[union-attr]

    def flush_response(self) -> None:
        out = self.out
        if out:
            self.proto.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def on_upstream_error(self, kind: str) -> None:
        self._upstream_failed(UpstreamProtocolError())

    def on_upstream_lost(self) -> None:
        self.conn = None
        if self.upstream_complete:
            return
        if self.streaming and self.resp_until_close:
            # A close-delimited body ends when the upstream closes.
            self.upstream_complete = True
            self.resp_keep_alive = False
            self._end_streamed_response()
            self.flush_response()
            return
        if self.waiting == _WAIT_END and not self.streaming:
            _, _, has_length, chunked = response_fields(self.resp_head)
            if not has_length and not chunked:
                # Buffering for body hooks, and the body ends with the connection.
                self.on_upstream_complete(False)
                return
        self._local_failure()
        self._upstream_failed(UpstreamReset())

    def _upstream_failed(self, error: ProxyError) -> None:
        if self.waiting != _WAIT_NONE and self.waiter is not None and not self.waiter.done():
            self.waiting = _WAIT_NONE
            self.waiter.set_exception(error)
        elif self.task is None and not self.finished:
            self._answer_error(error)
            self._finish(error)
        elif self.streaming:
            # The head is out; the only honest signal left is to cut the connection.
            self.ctx.flag = after_delay(self.ctx.flag, error.flag)
            self.proto.abort()
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(error)

    def _end_streamed_response(self) -> None:
        if self.resp_chunked:
            self.out.append(b"0\r\n\r\n")
        if self.attempt_span is not None:
            self.attempt_span.end(self.resp_status, None, time.time_ns())
            self.attempt_span = None
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.release(self.resp_keep_alive and self.body_done)
        if self.waiting == _WAIT_END:
            self.waiting = _WAIT_NONE
            self.waiter.set_result(None)  # type: ignore[union-attr]
        elif self.task is None:
            self.flush_response()
            self._finish(None)

    def _answer_error(self, error: ProxyError) -> None:
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.abort()
        if isinstance(error, DownstreamDisconnected):
            return
        if self.head_sent:
            if self.ctx.flag in ("", "DI"):
                self.ctx.flag = after_delay(self.ctx.flag, error.flag)
            self.proto.abort()
            return
        self.send_local(local_reply_for(error))

    def abort_with(self, status: int, detail: str) -> bool:
        """The downstream request turned out malformed mid-body: abandon the upstream
        request (its peer sees a reset, never a complete request) and answer ``status``.
        False when the response has already begun."""
        return self.fail_now(DownstreamProtocolError(status, detail))

    def fail_now(self, error: ProxyError) -> bool:
        """A failure found in a socket callback: stop the upstream try and answer now,
        whichever driver runs the exchange (a cancelled task's handlers only find it
        finished). False when the response has already begun."""
        if self.head_sent or self.finished:
            return False
        if self.task is not None:
            self.task.cancel()
        self.req_keep_alive = False
        self._answer_error(error)
        self._finish(error)
        return True

    def route(self) -> None:
        ctx = self.ctx
        listener, table = self.snapshot.tables_for(ctx.listener_port, ctx.host)
        if listener is not None:  # known even when no rule matches (404 by listener)
            tls = ctx.tls
            if tls is not None and (listener.listener != tls.listener or listener.gateway != tls.gateway):
                ctx.gateway = tls.gateway
                ctx.listener = tls.listener
                raise MisdirectedRequest()
            ctx.gateway = listener.gateway
            ctx.listener = listener.listener
        if table is None:
            raise NoRoute()
        query = None
        if table.needs_query:
            query = parse_qs(ctx.query, keep_blank_values=True) if ctx.query else {}
        match = table.find(ctx.method, ctx.path, ctx.headers, query)
        if match is None:
            raise NoRoute()
        ctx.match = match
        ctx.rule = match.rule

    def _pick_backend(self):
        ctx = self.ctx
        rule = ctx.rule
        if rule.no_backends or rule.total_weight == 0:  # type: ignore[union-attr]
            raise InvalidBackend("no backend for this rule")
        backends = rule.backends  # type: ignore[union-attr]
        if len(backends) == 1:
            backend = backends[0]
        else:
            point = random.random() * rule.total_weight  # type: ignore[union-attr]
            backend = backends[-1]
            for b in backends:
                point -= b.weight
                if point < 0:
                    backend = b
                    break
        ctx.backend = backend
        if backend.cluster is None:
            raise InvalidBackend(backend.error or "backend is not valid")
        return backend

    def _before_upstream(self) -> None:
        """Keep a replayable copy of the body when retries or mirrors need one, and
        answer Expect: 100-continue now that the request will go upstream."""
        ctx = self.ctx
        if (ctx.rule.retry is not None or ctx.mirrors) and (self.req_chunked or self.req_length):  # type: ignore[union-attr]
            if not self.body_buf_len and not self.body_done:
                self.replay = []
            elif self.body_received <= _REPLAY_LIMIT:
                self.replay = list(self.body_buf)
        if self.expect_continue and not self.body_done:
            self.proto.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if ctx.mirrors and self.body_done and not ctx.rule.request_body_hooks:  # type: ignore[union-attr]
            self.engine.send_mirrors(self)  # (with body hooks: once they are done)

    def _send(self, conn: UpstreamConnection) -> None:
        """Write the request head and the body received so far to ``conn``, in one write."""
        self.upstream_attempts += 1
        ctx = self.ctx
        trace = ctx.trace
        if trace is not None:
            # One CLIENT span per attempt; the upstream sees it as its parent.
            if self.attempt_span is not None:
                self.attempt_span.end(self.resp_status or None, "retried", time.time_ns())
            ep = conn.pool.endpoint
            self.attempt_span = span = trace.attempt(f"{ep.host}:{ep.port}")
            data = upstream_request_head(ctx, self.req_chunked, self.req_length, span)
        else:
            data = upstream_request_head(ctx, self.req_chunked, self.req_length)
        retrying = self.upstream_attempts > 1
        chunks = self.replay if retrying else self.body_buf
        if chunks:
            if self.req_chunked:
                data += b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks)
            else:
                data += b"".join(chunks)
        if self.req_chunked and self.body_done:
            data += b"0\r\n\r\n"
        if not retrying and self.body_buf_len:
            self.body_buf = []
            self.body_buf_len = 0
            self.proto.resume_reading("body")
        self.conn = conn
        self.upstream = conn.pool.endpoint
        conn.send(self, data, self.ctx.method == "HEAD")

    def response_head(self) -> ResponseHead:
        """The upstream response head, decoded (hop-by-hop fields already dropped)."""
        status_line, fields, _, _ = response_fields(self.resp_head)
        return ResponseHead(
            self.resp_status, status_line[13:].decode("latin-1"), Headers(decode_fields(fields))
        )

    def _send_upstream_head(self, flush: bool = True, head: ResponseHead | None = None) -> None:
        """Response filters, then the head (and whatever body is already here) downstream.
        ``head``: the head as body hooks left it, with the whole body in ``pending_body``."""
        ctx = self.ctx
        status = self.resp_status
        status_line, fields, has_length, chunked_upstream = response_fields(self.resp_head)
        rule = ctx.rule
        backend = ctx.backend
        if (
            head is not None
            or rule.response_hooks  # type: ignore[union-attr]
            or (backend is not None and backend.response_hooks)
            or ctx.response_headers_to_add
        ):
            reason = status_line[13:].decode("latin-1")
            if head is None:
                head = ResponseHead(status, reason, Headers(decode_fields(fields)))
            self._run_response_hooks(head)
            if head.status != status or head.reason != reason:
                status = head.status
                status_line = b"HTTP/1.1 %d %s" % (
                    status,
                    (head.reason or reason_phrase(status)).encode("latin-1"),
                )
            fields = head.headers.encode()
            has_length = "content-length" in head.headers
        no_body = ctx.method == "HEAD" or status in _NO_BODY_STATUS or status < 200
        keep_alive = self.req_keep_alive and not self.engine.draining
        lines = [status_line, b"\r\n", fields]
        if not no_body and not has_length:
            if chunked_upstream or not self.upstream_complete:
                if ctx.http_version == "1.1":
                    self.resp_chunked = True
                    lines.append(b"transfer-encoding: chunked\r\n")
                else:
                    keep_alive = False
            else:
                # The whole body is here already: frame it with a length.
                lines.append(b"content-length: %d\r\n" % sum(len(b) for b in self.pending_body))
            self.resp_until_close = not chunked_upstream
        if not keep_alive:
            lines.append(b"connection: close\r\n\r\n")
        elif ctx.http_version == "1.0":
            lines.append(b"connection: keep-alive\r\n\r\n")
        else:
            lines.append(b"\r\n")
        self.downstream_keep_alive = keep_alive
        self.status = status
        out = self.out
        out.append(b"".join(lines))
        pending = self.pending_body
        if pending and not no_body:
            if self.resp_chunked:
                for b in pending:
                    out.append(b"%x\r\n%b\r\n" % (len(b), b))
                    self.bytes_sent += len(b)
            else:
                out.extend(pending)
                self.bytes_sent += sum(len(b) for b in pending)
            self.pending_body = []
        self.head_sent = True
        self.streaming = True
        if self.upstream_complete:
            self._end_streamed_response()
        if flush:
            self.flush_response()

    def _run_response_hooks(self, head) -> None:
        ctx = self.ctx
        rule = ctx.rule
        if rule is not None:
            for hook, _ in rule.response_hooks:
                hook(ctx, head)
        backend = ctx.backend
        if backend is not None:
            for hook, _ in backend.response_hooks:
                hook(ctx, head)
        if ctx.response_headers_to_add:
            for n, v in ctx.response_headers_to_add:
                head.headers.add(n, v)

    # -- local replies and the end ---------------------------------------------------

    def send_local(self, reply: LocalReply) -> None:
        if self.head_sent or self.proto.closing:
            return
        ctx = self.ctx
        if reply.flag:
            ctx.flag = after_delay(ctx.flag, reply.flag)
        headers = Headers(list(reply.headers))
        if ctx.rule is not None or ctx.response_headers_to_add:
            head = ResponseHead(reply.status, reason_phrase(reply.status), headers)
            self._run_response_hooks(head)
            status = head.status
        else:
            status = reply.status
        # A request whose body we have not read whole cannot share the connection.
        keep_alive = self.req_keep_alive and self.body_done and not self.engine.draining
        body = reply.body
        if status == 204 or (status == 304 and not body):
            body = b""  # no body; a 204 has no Content-Length, a 304 keeps the one it has
            if status == 204:
                headers.remove("content-length")
        else:
            headers.set("content-length", str(len(body)))
        if not keep_alive:
            headers.set("connection", "close")
        data = f"HTTP/1.1 {status} {reason_phrase(status)}\r\n".encode() + headers.encode() + b"\r\n"
        if ctx.method != "HEAD" and body:
            data += body
        self.proto.write(data)
        self.status = status
        self.bytes_sent = len(body)
        self.head_sent = True
        self.downstream_keep_alive = keep_alive

    def _finish(self, error: ProxyError | None) -> None:
        if self.finished:
            return
        self.finished = True
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.abort()
        if self.attempt_span is not None:
            self.attempt_span.end(
                self.resp_status or None, error.flag if error is not None else "aborted", time.time_ns()
            )
            self.attempt_span = None
        if self.cluster is not None:
            self.cluster.end_request()
        ctx = self.ctx
        if error is not None and ctx.flag in ("", "DI"):
            ctx.flag = after_delay(ctx.flag, error.flag)
        self.engine.on_exchange_done(self, error)
        keep_alive = self.downstream_keep_alive and self.head_sent
        if keep_alive and not self.body_done:
            keep_alive = False
        self.proto.finish(self, keep_alive)
