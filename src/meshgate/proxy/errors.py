"""Failures and the one place they become HTTP responses.

Every failure the engine can meet on a request is a ``ProxyError`` subclass carrying
where it came from (downstream, upstream, internal), which retry trigger covers it, the
status the client gets and the Envoy-style response flag the access log shows.
``local_reply_for()`` is the only function that turns a failure into a response.
"""

from __future__ import annotations

from http import HTTPStatus

from meshgate.proxy.context import LocalReply


class ProxyError(Exception):
    status = 500
    flag = ""
    source = "internal"  # "downstream" | "upstream" | "internal"
    # The retry trigger that covers this failure: "connect-failure" (nothing was
    # sent), "reset" (no response: reset or per-try timeout), or "" (never retried).
    retry_on = ""
    detail = "internal error"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.detail)
        if detail is not None:
            self.detail = detail


class DownstreamProtocolError(ProxyError):
    """The client sent something we will not forward. The connection is closed."""

    status = 400
    flag = "DPE"
    source = "downstream"
    detail = "bad request"

    def __init__(self, status: int = 400, detail: str | None = None) -> None:
        super().__init__(detail)
        self.status = status


class NoRoute(ProxyError):
    status = 404
    flag = "NR"
    detail = "no route matched"


class MisdirectedRequest(ProxyError):
    """On HTTPS, the Host header names a listener other than the one the TLS handshake
    (SNI) selected: the connection's certificate and TLS settings are not that
    listener's (RFC 9110 15.5.20). Envoy flags it NR too: no route for this connection."""

    status = 421
    flag = "NR"
    source = "downstream"
    detail = "misdirected request: this connection was established for another host"


class InvalidBackend(ProxyError):
    """The rule's backendRef did not resolve (missing, unknown kind, not permitted)."""

    status = 500
    flag = "NC"
    detail = "backend is not valid"


class NoHealthyUpstream(ProxyError):
    status = 503
    flag = "UH"
    source = "upstream"
    detail = "no healthy upstream"


class UpstreamConnectError(ProxyError):
    status = 503
    flag = "UF"
    source = "upstream"
    retry_on = "connect-failure"
    detail = "upstream connect error"


class UpstreamOverflow(ProxyError):
    """The cluster's circuit breaker is open: too many requests, pending requests or
    connections. Not retried: a retry would only add to the overload."""

    status = 503
    flag = "UO"
    source = "upstream"
    detail = "upstream overflow"


class UpstreamReset(ProxyError):
    status = 502
    flag = "UC"
    source = "upstream"
    retry_on = "reset"
    detail = "upstream connection reset"


class UpstreamProtocolError(ProxyError):
    status = 502
    flag = "UPE"
    source = "upstream"
    detail = "upstream sent an invalid response"


class UpstreamTimeout(ProxyError):
    status = 504
    flag = "UT"
    source = "upstream"
    retry_on = "reset"
    detail = "upstream request timeout"


class ResponseBodyTooLarge(ProxyError):
    """A response filter needed the whole body and it was larger than its limit."""

    status = 502
    flag = "UPE"
    source = "upstream"
    detail = "upstream response body too large for the response filters"


class RequestTimeout(ProxyError):
    """timeouts.request elapsed: the whole request, all attempts included."""

    status = 504
    flag = "UT"
    source = "upstream"
    detail = "request timeout"


class PayloadTooLarge(ProxyError):
    status = 413
    flag = "DPE"
    source = "downstream"
    detail = "payload too large"


class DownstreamDisconnected(ProxyError):
    """The client went away; nothing can be sent."""

    status = 499
    flag = "DC"
    source = "downstream"
    detail = "downstream disconnected"


_REASONS = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    421: "Misdirected Request",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


def reason_phrase(status: int) -> str:
    """RFC 9110's reason phrase (the table's names win over older ones Python knows)."""
    phrase = _REASONS.get(status)
    if phrase is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        _REASONS[status] = phrase
    return phrase


def local_reply_for(error: ProxyError) -> LocalReply:
    """The response a client gets for ``error``: status, a short text body, the flag."""
    body = (error.detail + "\n").encode()
    return LocalReply(
        error.status,
        [("content-type", "text/plain; charset=utf-8")],
        body,
        error.flag,
    )
