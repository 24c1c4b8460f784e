"""The authenticated consumer, sent upstream in a request header (SecurityPolicy
``consumerHeader``, a meshgate extension).

Runs after every authentication stage and before authorization. It always removes the
client's own copy of the header — also when nobody was authenticated, so an upstream
can trust the header whenever it is present — then sets it to ``ctx.consumer``.

``header_value`` is the one way an identity becomes a header value, shared with
``forwardClientIDHeader`` and ``forwardUsernameHeader``: visible ASCII passes as is;
anything else (a UTF-8 user name, a control character in a token's subject) is
percent-encoded as UTF-8, so an identity can never split or end a header line.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from meshgate.filters.base import Filter

if TYPE_CHECKING:
    from meshgate.proxy.context import RequestContext

_NEEDS_ENCODING = re.compile(r"[^\x20-\x7e]|%")
# Printable ASCII except "%" stays as is; "%" is encoded so decoding is unambiguous.
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_value(identity: str) -> str:
    """``identity`` as a safe header value (percent-encoded only when it must be)."""
    if _NEEDS_ENCODING.search(identity) is None:
        return identity
    return quote(identity, safe=_SAFE, encoding="utf-8", errors="replace")


class ConsumerHeader(Filter):
    __slots__ = ("_header",)
    name = "ConsumerHeader"

    def __init__(self, header: str) -> None:
        self._header = header.lower()

    def on_request(self, ctx: RequestContext) -> None:
        headers = ctx.headers
        consumer = ctx.consumer
        if consumer:
            headers.set(self._header, header_value(consumer))
        elif self._header in headers:
            headers.remove(self._header)

    def describe(self) -> dict:
        return {"type": self.name, "header": self._header}


def build(spec: Any, refs: Any) -> tuple:
    """The consumer-header filter; ``spec`` is the header name."""
    return (ConsumerHeader(spec),)
