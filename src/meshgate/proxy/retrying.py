"""The coroutine path of an exchange: retries, timeouts and async filters.

Most exchanges never come here: ``Exchange.start()`` runs a rule with none of these in
socket callbacks. A rule with ``timeouts``, a ``retry`` policy or an ``async`` filter
gets a task that runs ``run()``: request filters (awaiting what needs awaiting), then
upstream attempts under the per-try and whole-request deadlines, replaying the
request on a retriable failure or status while no response byte has reached the
client. Retries replay only the upstream part; filters do not run again.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

from meshgate.proxy.errors import (
    DownstreamDisconnected,
    PayloadTooLarge,
    ProxyError,
    RequestTimeout,
    ResponseBodyTooLarge,
    UpstreamTimeout,
)

if TYPE_CHECKING:
    from meshgate.config.snapshot import RetryPolicy
    from meshgate.proxy.context import LocalReply

# What the exchange's coroutine is waiting for (socket callbacks resolve its future).
_WAIT_NONE = 0
_WAIT_HEAD = 1
_WAIT_END = 2
_WAIT_BODY = 3  # the whole request body, for body hooks


class CoroutinePath:
    """Mixed into ``Exchange``; uses its state and socket-side methods."""

    __slots__ = ()

    # -- the request's coroutine ---------------------------------------------------

    async def run(self, resume: tuple | None = None) -> None:
        """``resume``: (index of the next request hook, the awaitable a plain hook
        returned) when the socket-callback path handed the request over mid-filters."""
        ctx = self.ctx
        error: ProxyError | None = None
        try:
            reply = await self.apply_request_filters(resume)
            if reply is None and ctx.rule.request_body_hooks:  # type: ignore[union-attr]
                reply = await self.apply_request_body_hooks()
            if reply is None:
                rule = ctx.rule
                if rule.timeout_request is not None:  # type: ignore[union-attr]
                    try:
                        async with asyncio.timeout(rule.timeout_request):  # type: ignore[union-attr]
                            await self.forward()
                    except TimeoutError:
                        raise RequestTimeout() from None
                else:
                    await self.forward()
            else:
                self.send_local(reply)
        except ProxyError as exc:
            error = exc
            self._answer_error(exc)
        except asyncio.CancelledError:
            error = DownstreamDisconnected()
        except Exception as exc:  # a bug: answer 500 once, here, and say why in the log
            self.engine.log_exception(ctx, exc)
            error = ProxyError()
            self._answer_error(error)
        finally:
            self._finish(error)


    async def apply_request_filters(self, resume: tuple | None = None) -> LocalReply | None:
        """The rule's request hooks, then the backend's. A hook may be ``async``, or a
        plain function that returns an awaitable when (rarely) it has to wait."""
        from meshgate.proxy.context import LocalReply

        ctx = self.ctx
        rule = ctx.rule
        hooks = rule.request_hooks  # type: ignore[union-attr]
        if resume is not None:
            start, pending = resume
            reply = await pending
            if reply is not None:
                return reply
            hooks = hooks[start:]
        for hook, is_async in hooks:
            reply = await hook(ctx) if is_async else hook(ctx)
            if reply is not None:
                if not isinstance(reply, LocalReply):
                    reply = await reply
                    if reply is None:
                        continue
                return reply
        backend = self._pick_backend()
        for hook, is_async in backend.request_hooks:
            reply = await hook(ctx) if is_async else hook(ctx)
            if reply is not None:
                return reply
        self._before_upstream()
        return None


    async def apply_request_body_hooks(self) -> LocalReply | None:
        """Read the whole request body (up to the rule's limit; over it: 413), give it to
        the body hooks, and send what they leave."""
        from meshgate.proxy.context import LocalReply

        ctx = self.ctx
        rule = ctx.rule
        self.buffer_limit = rule.body_limit  # type: ignore[union-attr]
        if self.body_buf_len > self.buffer_limit:
            raise PayloadTooLarge()
        self.proto.resume_reading("body")
        if not self.body_done:
            self.waiter = self.engine.loop.create_future()
            self.waiting = _WAIT_BODY
            await self.waiter
        self.buffer_limit = 0
        body = b"".join(self.body_buf)
        for hook, is_async in rule.request_body_hooks:  # type: ignore[union-attr]
            result = await hook(ctx, body) if is_async else hook(ctx, body)
            if isinstance(result, LocalReply):
                return result
            if result is not None:
                body = result
        # The body goes upstream whole, framed with its (new) length.
        self.body_buf = [body] if body else []
        self.body_buf_len = len(body)
        self.req_chunked = False
        self.req_length = len(body)
        self.replay = [body] if body else []
        if ctx.mirrors:
            self.engine.send_mirrors(self)  # the body as the hooks left it
        return None

    async def _apply_response_body_hooks(self) -> None:
        """Wait for the whole response body (up to the rule's limit), give it to the body
        hooks with its head, and send the result downstream."""
        ctx = self.ctx
        rule = ctx.rule
        hooks = rule.response_body_hooks  # type: ignore[union-attr]
        if self.resp_status == 304:
            # Only filters that ask for it see a 304 (a cache turning it into the
            # stored response); for the others it has no body to work on.
            hooks = tuple(h for h in hooks if getattr(h[0].__self__, "body_on_not_modified", False))
            if not hooks:
                self._send_upstream_head()
                return
        if not self.upstream_complete:
            self.buffer_limit = rule.body_limit  # type: ignore[union-attr]
            self.waiter = self.engine.loop.create_future()
            self.waiting = _WAIT_END
            await self.waiter
            self.buffer_limit = 0
            if self.streaming:
                return  # it outgrew the limit and went past the hooks (body_overflow)
        body = b"".join(self.pending_body)
        if len(body) > rule.body_limit:  # type: ignore[union-attr]
            if not overflow_passes(rule):
                raise ResponseBodyTooLarge()
            self._send_upstream_head()
            return
        head = self.response_head()
        for hook, is_async in hooks:
            result = await hook(ctx, head, body) if is_async else hook(ctx, head, body)
            if result is not None:
                body = result
        head.headers.remove("transfer-encoding")
        head.headers.set("content-length", str(len(body)))
        self.pending_body = [body] if body else []
        self._send_upstream_head(head=head)  # complete: it also ends the attempt

    # -- upstream ------------------------------------------------------------------

    async def forward(self) -> None:
        ctx = self.ctx
        rule = ctx.rule
        retry = rule.retry  # type: ignore[union-attr]
        per_try = rule.timeout_backend  # type: ignore[union-attr]
        if retry is not None and retry.per_try_timeout is not None:
            per_try = retry.per_try_timeout
        retries_left = retry.attempts if retry is not None else 0
        retries_done = 0
        host = None
        while True:
            retrying = retries_done > 0
            try:
                if retrying:
                    # Back off inside the try: a request that ends here (its timeout,
                    # the client gone) still gives its retry slot back.
                    delay = backoff_delay(retry, retries_done, random.random)  # type: ignore[arg-type]
                    if delay:
                        await asyncio.sleep(delay)
                # A retry goes to another host when there is one (Envoy's previous_hosts).
                host = self._pick_host(host)
                if per_try is not None:
                    try:
                        async with asyncio.timeout(per_try):
                            retry_status = await self._attempt(host, retry, retries_left)
                    except TimeoutError:
                        self._local_failure()
                        raise UpstreamTimeout() from None
                else:
                    retry_status = await self._attempt(host, retry, retries_left)
                if retry_status is None:
                    return
                # A retriable status arrived and a retry slot is ours: drop this try.
            except ProxyError as exc:
                if not (
                    retry is not None
                    and retries_left > 0
                    and _covers(retry, exc.retry_on)
                    and self._can_replay()
                    and self.cluster.begin_retry()  # type: ignore[union-attr]
                ):
                    raise
            finally:
                if retrying:
                    self.cluster.end_retry()  # type: ignore[union-attr]
            retries_left -= 1
            retries_done += 1
            self._reset_attempt()

    def _can_replay(self) -> bool:
        if self.head_sent:
            return False
        if not (self.req_chunked or self.req_length):
            return True
        return self.replay is not None

    def _reset_attempt(self) -> None:
        span = self.attempt_span
        if span is not None:
            # The abandoned try keeps the status it got (a retried 503 shows as 503).
            status = self.resp_status or None
            span.end(status, None if status else "retried", time.time_ns())
            self.attempt_span = None
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.abort()
        self.resp_status = 0
        self.resp_head = b""
        self.upstream_complete = False
        self.pending_body = []

    async def _attempt(self, host, retry, retries_left: int) -> int | None:
        """One try upstream. Returns a status to retry on (a retry slot is then taken),
        or None when the response is on its way downstream."""
        pool = host.pool
        try:
            conn = await pool.acquire()
        except ProxyError as exc:
            self.trace_failed_connect(pool, exc)
            raise
        if self.finished:
            conn.release(True)
            raise DownstreamDisconnected()
        loop = self.engine.loop
        self.waiter = loop.create_future()
        self.waiting = _WAIT_HEAD
        self._send(conn)
        await self.waiter
        status = self.resp_status
        if (
            retry is not None
            and status in retry.codes
            and retries_left > 0
            and self._can_replay()
            and self.cluster.begin_retry()  # budget and parallel-retry limit permitting
        ):
            return status
        if self.ctx.rule.response_body_hooks and _has_body(self.ctx.method, status):  # type: ignore[union-attr]
            await self._apply_response_body_hooks()
            return None
        self._send_upstream_head()
        if not self.upstream_complete:
            self.waiter = loop.create_future()
            self.waiting = _WAIT_END
            await self.waiter
        return None


# A 304 reaches response body hooks (with an empty body) of filters that set
# ``body_on_not_modified``; the cache checks for this name.
BODY_HOOKS_SEE_NOT_MODIFIED = True


def _has_body(method: str, status: int) -> bool:
    return method != "HEAD" and status >= 200 and status != 204


def overflow_passes(rule) -> bool:
    """Do all the rule's response body hooks let a body over their limit go past them
    (``body_overflow = "pass"``) rather than fail the request with 502?"""
    return all(
        getattr(hook.__self__, "body_overflow", "error") == "pass"
        for hook, _ in rule.response_body_hooks
    )


def _covers(retry: RetryPolicy, retry_on: str) -> bool:
    """Does ``retry`` retry a failure of this kind (``ProxyError.retry_on``)?"""
    if retry_on == "connect-failure":
        return retry.on_connect_failure
    if retry_on == "reset":
        return retry.on_reset
    return False


def backoff_delay(retry: RetryPolicy, n: int, rand) -> float:
    """Seconds to wait before retry ``n`` (1-based): Envoy's fully jittered exponential
    back-off, uniform in [0, min((2**n - 1) * base, max)); ``rand()`` in [0, 1)."""
    base = retry.backoff
    if not base:
        return 0.0
    cap = retry.max_backoff or base * 10
    return rand() * min(base * ((1 << min(n, 30)) - 1), cap)
