"""The filter interface shared by built-in filters and user plugins.

A filter overrides only the phases it needs; the defaults pass through. The engine
looks at which hooks a filter class overrides once, when a snapshot is compiled, and
calls only those on the request path. A hook may be a plain function or ``async``.

- ``on_request(ctx)``: return ``None`` to continue, or a ``LocalReply`` to answer the
  request without going upstream (a redirect, a preflight, a denial). A plain hook
  that only sometimes has to wait may return an awaitable (of ``None`` or a
  ``LocalReply``) for those requests: the others stay on the fast path, where an
  ``async`` hook would put every request on the coroutine path.
- ``on_response(ctx, head)``: change the response head (status, fields) before it is
  sent downstream. Runs for upstream responses and for local replies made after routing.
- ``on_request_body(ctx, body)``: the whole request body, read before anything goes
  upstream (up to ``body_limit`` bytes; a larger body gets 413). Return ``None`` to
  send it as is, ``bytes`` to send those instead, or a ``LocalReply`` to answer.
- ``on_response_body(ctx, head, body)``: the whole upstream response body (up to
  ``body_limit``; a larger one gets 502) before anything is sent downstream, with its
  head; return ``None`` to keep it or ``bytes`` to send those instead. The head's
  fields may be changed; framing (Content-Length) is the engine's.

A rule whose filters have a body hook buffers bodies; every other rule streams them.

A filter that needs background work (a JWKS refresher, a cache sweeper) returns it from
``services()``: objects with ``async start()`` and ``stop()``. The engine starts the
services of a new snapshot before it takes traffic (``start()`` is awaited, bounded, so
keys are loaded before the gateway reports ready) and stops those a reload drops.
Services are compared by identity: a filter that keeps a service across reloads (from
a registry keyed by its config) keeps its state. ``start()`` should launch its
background task first and then await its first load with a deadline of its own; if
the engine stops waiting, the background task goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshgate.proxy.context import LocalReply, RequestContext, ResponseHead


class Filter:
    __slots__ = ()

    #: the name used in logs and config dumps
    name = "filter"

    def on_request(self, ctx: RequestContext) -> LocalReply | None:
        return None

    def on_response(self, ctx: RequestContext, head: ResponseHead) -> None:
        return None

    #: the largest body a body hook of this filter buffers, in bytes
    body_limit = 1024 * 1024
    #: a response body over ``body_limit``: "error" (502) or "pass" (streamed on without
    #: this filter's hook; for filters that only observe, like a cache)
    body_overflow = "error"
    #: give a 304 response to ``on_response_body`` too (with an empty body)
    body_on_not_modified = False

    def on_request_body(self, ctx: RequestContext, body: bytes) -> LocalReply | bytes | None:
        return None

    def on_response_body(self, ctx: RequestContext, head: ResponseHead, body: bytes) -> bytes | None:
        return None

    def services(self) -> tuple:
        """Background work this filter needs running (see the module docstring)."""
        return ()

    def describe(self) -> dict:
        """A JSON-able description for /config_dump."""
        return {"type": self.name}


def overrides(f: Filter, hook: str) -> bool:
    """True when ``f``'s class defines ``hook`` itself rather than inheriting the default."""
    return getattr(type(f), hook) is not getattr(Filter, hook)
