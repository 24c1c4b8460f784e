"""Failures become responses in one place: the status a client gets, the response flag
the access log shows, and whether a retry may help."""

from __future__ import annotations

import pytest

from meshgate.proxy import errors
from meshgate.proxy.errors import (
    DownstreamDisconnected,
    DownstreamProtocolError,
    InvalidBackend,
    NoHealthyUpstream,
    NoRoute,
    PayloadTooLarge,
    ProxyError,
    RequestTimeout,
    UpstreamConnectError,
    UpstreamOverflow,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
    local_reply_for,
    reason_phrase,
)


@pytest.mark.parametrize(
    ("error", "status", "flag", "source", "retry_on"),
    [
        (UpstreamConnectError(), 503, "UF", "upstream", "connect-failure"),
        (UpstreamOverflow(), 503, "UO", "upstream", ""),
        (NoHealthyUpstream(), 503, "UH", "upstream", ""),
        (UpstreamReset(), 502, "UC", "upstream", "reset"),
        (UpstreamProtocolError(), 502, "UPE", "upstream", ""),
        (UpstreamTimeout(), 504, "UT", "upstream", "reset"),
        (RequestTimeout(), 504, "UT", "upstream", ""),  # all attempts used up
        (NoRoute(), 404, "NR", "internal", ""),
        (InvalidBackend(), 500, "NC", "internal", ""),
        (ProxyError(), 500, "", "internal", ""),
        (PayloadTooLarge(), 413, "DPE", "downstream", ""),
        (DownstreamProtocolError(), 400, "DPE", "downstream", ""),
        (DownstreamProtocolError(431), 431, "DPE", "downstream", ""),
        (DownstreamDisconnected(), 499, "DC", "downstream", ""),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
def test_each_failure_has_its_status_flag_source_and_retry_trigger(
    error, status, flag, source, retry_on
):
    reply = local_reply_for(error)
    assert (reply.status, reply.flag) == (status, flag)
    assert (error.source, error.retry_on) == (source, retry_on)


def test_reply_is_a_short_text_body_with_the_detail():
    reply = local_reply_for(UpstreamConnectError())
    assert reply.headers == [("content-type", "text/plain; charset=utf-8")]
    assert reply.body == b"upstream connect error\n"


def test_a_specific_detail_replaces_the_default_in_the_body():
    reply = local_reply_for(UpstreamConnectError("upstream connect error: refused"))
    assert reply.body == b"upstream connect error: refused\n"
    # ...without changing the class default for later errors
    assert local_reply_for(UpstreamConnectError()).body == b"upstream connect error\n"


def test_detail_is_the_exception_message():
    assert str(NoRoute()) == "no route matched"
    assert str(DownstreamProtocolError(400, "missing host header")) == "missing host header"


def test_every_failure_is_a_proxy_error():
    classes = [
        v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)
    ]
    assert all(issubclass(c, ProxyError) for c in classes)
    assert len(classes) >= 13


@pytest.mark.parametrize(
    ("status", "phrase"),
    [
        (200, "OK"),
        (400, "Bad Request"),
        (404, "Not Found"),
        (408, "Request Timeout"),
        (413, "Content Too Large"),
        (414, "URI Too Long"),
        (431, "Request Header Fields Too Large"),
        (500, "Internal Server Error"),
        (501, "Not Implemented"),
        (502, "Bad Gateway"),
        (503, "Service Unavailable"),
        (504, "Gateway Timeout"),
        (505, "HTTP Version Not Supported"),
    ],
)
def test_reason_phrases(status, phrase):
    assert reason_phrase(status) == phrase


def test_an_unknown_status_still_has_a_phrase():
    # The status line needs some text; a custom status from a filter must not crash it.
    assert reason_phrase(599)
