"""Building the message heads the proxy sends: upstream requests, downstream responses.

Both are per-request hot paths. The request head is one pass over ``ctx.headers`` with
the special names in a frozenset. The response head is never split into fields unless a
response filter needs ``Headers``: it is forwarded as the upstream sent it, less the
hop-by-hop lines, cut out with one regex.
"""

from __future__ import annotations

import os
from itertools import count

from meshgate.http.headers import connection_options
from meshgate.proxy.context import RequestContext

# Fields that describe one hop and are never forwarded (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade")
)
_REQUEST_SPECIAL = HOP_BY_HOP | frozenset(
    ("host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "content-length", "x-request-id")
)
_REQUEST_SPECIAL_TRACED = _REQUEST_SPECIAL | frozenset(
    ("traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
     "x-b3-sampled", "x-b3-flags")
)

# X-Request-Id: UUID-shaped, a random per-process prefix and a counter. Unique across
# processes and restarts with overwhelming probability, and a format string per request
# instead of 128 random bits.
_id_prefix = os.urandom(10).hex()
_ID_PREFIX = f"{_id_prefix[:8]}-{_id_prefix[8:12]}-4{_id_prefix[13:16]}-a{_id_prefix[17:20]}-"
_id_counter = count(int.from_bytes(os.urandom(3), "big") << 24)  # 48 bits: never wraps in practice


def new_request_id() -> str:
    return _ID_PREFIX + "%012x" % next(_id_counter)


def upstream_request_head(ctx: RequestContext, chunked: bool, length: int, span=None) -> bytes:
    """Request line and fields for the upstream: hop-by-hop fields dropped, Host as
    rewritten, X-Forwarded-For/-Proto/-Host and X-Request-Id set, framing of our own;
    with tracing on (``span``), W3C traceparent/tracestate of the attempt's span."""
    out = [f"{ctx.method} {ctx.target()} HTTP/1.1\r\n"]
    if span is not None:
        out.append(f"traceparent: {span.traceparent}\r\n")
        if span.tracestate:
            out.append(f"tracestate: {span.tracestate}\r\n")
    special = _REQUEST_SPECIAL if span is None else _REQUEST_SPECIAL_TRACED
    xff = None
    host_seen = False
    request_id = None
    for n, v in ctx.headers.items():
        if n not in special:
            out.append(f"{n}: {v}\r\n")
        elif n == "host":
            host_seen = True
            out.append(f"host: {v if ctx.upstream_host is None else ctx.upstream_host}\r\n")
        elif n == "x-forwarded-for":
            xff = v if xff is None else xff + ", " + v
        elif n == "x-request-id":
            request_id = v
            out.append(f"{n}: {v}\r\n")
        # Connection itself is this hop's; the fields it named were dropped on receipt.
    if not host_seen:
        out.append(f"host: {ctx.upstream_host or ctx.authority or 'localhost'}\r\n")
    if request_id is None:
        request_id = new_request_id()
        out.append(f"x-request-id: {request_id}\r\n")
    ctx.request_id = request_id
    out.append(
        f"x-forwarded-for: {ctx.peer_ip if xff is None else xff + ', ' + ctx.peer_ip}\r\n"
        f"x-forwarded-proto: {ctx.scheme}\r\n"
    )
    if ctx.authority:
        out.append(f"x-forwarded-host: {ctx.authority}\r\n")
    if chunked:
        out.append("transfer-encoding: chunked\r\n\r\n")
    elif length:
        out.append(f"content-length: {length}\r\n\r\n")
    else:
        out.append("\r\n")
    return "".join(out).encode("latin-1")


# Searched in the lowercased head; a field line always follows a "\n". The most
# common first.
_HOP_MARKERS = tuple(
    b"\n" + n + b":"
    for n in (b"connection", b"transfer-encoding", b"keep-alive", b"te", b"trailer",
              b"upgrade", b"proxy-connection")
)


def response_fields(raw_head: bytes) -> tuple[bytes, bytes, bool, bool]:
    """Split an upstream head (status line and field lines, each ending in CRLF) into
    (status line to send, field lines to forward, has Content-Length, was chunked).

    The fields are forwarded byte for byte, less the hop-by-hop lines (and those a
    Connection header names), found by substring search in the lowercased head: no
    Python work per field. The status line keeps the upstream's reason phrase and
    says HTTP/1.1, the version we speak downstream.
    """
    line_end = raw_head.find(b"\r\n")
    status_line = raw_head[:line_end]
    if not status_line.startswith(b"HTTP/1.1 "):
        status_line = b"HTTP/1.1" + status_line[8:]
    lower = raw_head.lower()
    start = line_end + 2
    chunked = False
    named: set[str] | None = None
    cuts = None
    for marker in _HOP_MARKERS:  # substring searches beat one regex scan here
        i = lower.find(marker)
        while i != -1:
            j = lower.find(b"\r\n", i + 1) + 2
            if cuts is None:
                cuts = []
            cuts.append((i + 1, j))
            if marker == b"\ntransfer-encoding:":
                chunked = True
            elif marker == b"\nconnection:":
                value = lower[i + 12 : j - 2].strip()
                if value != b"keep-alive" and value != b"close":
                    extra = connection_options(value.decode("latin-1"))
                    named = extra if named is None else named | extra
            i = lower.find(marker, j - 2)
    pieces = None
    if cuts is not None:
        cuts.sort()
        pieces = []
        for i, j in cuts:
            pieces.append(raw_head[start:i])
            start = j
    if pieces is None:
        return status_line, raw_head[start:], b"\ncontent-length:" in lower, False
    pieces.append(raw_head[start:])
    block = b"".join(pieces)
    if named:
        block = b"".join(
            line + b"\r\n"
            for line in block.split(b"\r\n")
            if line and line.split(b":", 1)[0].strip().lower().decode("latin-1") not in named
        )
    return status_line, block, b"\ncontent-length:" in lower, chunked


def decode_fields(block: bytes) -> list[tuple[str, str]]:
    """Field lines (CRLF-terminated) as lowercase-name str pairs for ``Headers``."""
    pairs = []
    for line in block.split(b"\r\n"):
        if line:
            n, _, v = line.partition(b":")
            pairs.append((n.decode("latin-1").lower(), v.strip(b" \t").decode("latin-1")))
    return pairs
