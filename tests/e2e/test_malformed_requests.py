"""Malformed and tricky HTTP/1.1 requests sent as raw bytes to a real gateway.

A malformed request must get its status (RFC 9112 / 9110), the connection must be
closed, and the upstream must not receive it: nothing at all when the head is bad; no
complete request when the framing of the body is bad (the head may already be on its
way, since bodies are streamed). Then a few valid-but-unusual requests that must pass.
"""

from __future__ import annotations

import hashlib
import socket
import time

import pytest
from harness import (
    EchoServer,
    Gateway,
    free_port,
    parse_responses,
    raw_request,
    simple_config,
)

MAX_BODY = 1024
HEADER_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def upstreams():
    with EchoServer("main-0") as main, EchoServer("public-0") as public:
        yield main, public


@pytest.fixture(scope="module")
def gateway(upstreams):
    main, public = upstreams
    port = free_port()
    gw = Gateway(
        simple_config(port, {"/": main, "/public": public}),
        extra_args=["--max-body-bytes", str(MAX_BODY), "--header-timeout", str(HEADER_TIMEOUT)],
    )
    gw.listener_port = port
    with gw:
        yield gw


@pytest.fixture
def send(gateway, upstreams):
    """send(bytes) -> (responses, closed) with the upstream logs marked before."""
    for server in upstreams:
        server.mark()

    def _send(data, timeout: float = 3.0, **kw):
        raw, closed = raw_request(gateway.listener_port, data, timeout=timeout, **kw)
        return raw, parse_responses(raw), closed

    return _send


def head(*lines: str, version: str = "HTTP/1.1", method: str = "GET", target: str = "/") -> bytes:
    return (f"{method} {target} {version}\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode()


def post(headers: list[str], body: bytes) -> bytes:
    return head("Host: a", *headers, method="POST") + body


CHUNKED = "Transfer-Encoding: chunked"

# (id, raw request, allowed statuses, bad part: "head" -> nothing may reach the
# upstream; "body" -> the upstream may see the head but never a complete request)
MALFORMED: list[tuple[str, bytes, set[int], str]] = [
    # Content-Length / Transfer-Encoding framing (request smuggling vectors)
    ("cl-and-te", post(["Content-Length: 5", CHUNKED], b"0\r\n\r\n"), {400}, "head"),
    ("te-and-cl", post([CHUNKED, "Content-Length: 5"], b"0\r\n\r\n"), {400}, "head"),
    ("two-different-cl", post(["Content-Length: 5", "Content-Length: 6"], b"hello!"), {400}, "head"),
    ("cl-list-different", post(["Content-Length: 5, 6"], b"hello!"), {400}, "head"),
    ("cl-plus-sign", post(["Content-Length: +5"], b"hello"), {400}, "head"),
    ("cl-hex", post(["Content-Length: 0x5"], b"hello"), {400}, "head"),
    ("cl-underscore", post(["Content-Length: 1_0"], b"helloworld"), {400}, "head"),
    ("cl-negative", post(["Content-Length: -5"], b"hello"), {400}, "head"),
    ("cl-non-numeric", post(["Content-Length: five"], b"hello"), {400}, "head"),
    ("cl-inner-space", post(["Content-Length: 1 0"], b"helloworld"), {400}, "head"),
    ("cl-overflow", post(["Content-Length: 99999999999999999999999"], b"x"), {400, 413}, "head"),
    ("chunk-size-plus-underscore", post([CHUNKED], b"+1_0\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"), {400}, "body"),
    ("chunk-size-0x", post([CHUNKED], b"0x5\r\nhello\r\n0\r\n\r\n"), {400}, "body"),
    ("chunk-size-0_2e", post([CHUNKED], b"0_2e\r\n" + b"x" * 46 + b"\r\n0\r\n\r\n"), {400}, "body"),
    ("chunk-size-negative", post([CHUNKED], b"-1\r\nx\r\n0\r\n\r\n"), {400}, "body"),
    ("chunk-size-junk", post([CHUNKED], b"5zz\r\nhello\r\n0\r\n\r\n"), {400}, "body"),
    ("chunk-size-overflow", post([CHUNKED], b"ffffffffffffffffffff\r\nx\r\n0\r\n\r\n"), {400, 413}, "body"),
    ("chunk-data-without-crlf", post([CHUNKED], b"5\r\nhelloXX0\r\n\r\n"), {400}, "body"),
    ("chunk-size-bare-lf", post([CHUNKED], b"5\nhello\r\n0\r\n\r\n"), {400}, "body"),
    ("te-gzip-alone", post(["Transfer-Encoding: gzip"], b"x"), {501}, "head"),
    ("te-chunked-not-last", post(["Transfer-Encoding: chunked, gzip"], b"0\r\n\r\n"), {400}, "head"),
    ("te-chunked-twice", post(["Transfer-Encoding: chunked, chunked"], b"0\r\n\r\n"), {400}, "head"),
    ("te-in-http-1.0", head("Host: a", CHUNKED, method="POST", version="HTTP/1.0") + b"0\r\n\r\n", {400}, "head"),
    # header syntax
    ("bare-cr-in-header-value", head("Host: a", "X-A: one\rtwo"), {400}, "head"),
    # RFC 9112 2.2 lets a recipient accept a bare LF line ending; meshgate's parser is
    # strict (llhttp strict mode) and rejects it: this asserts that policy.
    ("bare-lf-request-line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", {400}, "head"),
    ("bare-lf-header-line", b"GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", {400}, "head"),
    ("obs-fold", head("Host: a", "X-A: one", " two"), {400}, "head"),
    ("nul-in-header-value", head("Host: a", "X-A: one\x00two"), {400}, "head"),
    ("del-in-header-value", head("Host: a", "X-A: one\x7ftwo"), {400}, "head"),
    ("space-before-colon", head("Host: a", "X-A : b"), {400}, "head"),
    ("space-before-colon-host", head("Host : a"), {400}, "head"),
    ("invalid-header-name-chars", head("Host: a", "X(A): b"), {400}, "head"),
    ("header-name-with-slash", head("Host: a", "X/A: b"), {400}, "head"),
    ("empty-header-name", head("Host: a", ": b"), {400}, "head"),
    ("header-without-colon", head("Host: a", "X-A b"), {400}, "head"),
    # Host
    ("missing-host-http-1.1", head(), {400}, "head"),
    ("duplicate-host", head("Host: a", "Host: b"), {400}, "head"),
    ("invalid-host-space", head("Host: a b"), {400}, "head"),
    ("invalid-host-slash", head("Host: a/b"), {400}, "head"),
    ("invalid-host-ipv6-unclosed", head("Host: [::1"), {400}, "head"),
    ("invalid-host-userinfo", head("Host: user@a"), {400}, "head"),
    # RFC 9110 4.2.1: an http URI with an empty host is invalid and must be rejected.
    ("empty-host", head("Host: "), {400}, "head"),
    # request line
    ("bad-method-token", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", {400}, "head"),
    ("method-with-slash", b"GE/T / HTTP/1.1\r\nHost: a\r\n\r\n", {400}, "head"),
    ("request-line-trailing-space", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", {400}, "head"),
    ("request-line-missing-version", b"GET /\r\nHost: a\r\n\r\n", {400, 505}, "head"),
    ("request-line-lowercase-version", b"GET / http/1.1\r\nHost: a\r\n\r\n", {400}, "head"),
    ("target-relative", head("Host: a", target="foo"), {400}, "head"),
    ("target-with-nul", b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n", {400}, "head"),
    ("target-with-fragment", head("Host: a", target="/a#frag"), {400}, "head"),
    ("target-with-space", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", {400}, "head"),
    ("http-2.0-on-http1", head("Host: a", version="HTTP/2.0"), {400, 505}, "head"),
    ("http-3.0-on-http1", head("Host: a", version="HTTP/3.0"), {400, 505}, "head"),
    ("http-1.2", head("Host: a", version="HTTP/1.2"), {400, 505}, "head"),
    ("http-0.9-style", b"GET /\r\n\r\n", {400, 505}, "head"),
    # limits
    ("request-line-over-8k", head("Host: a", target="/" + "a" * 8300), {414}, "head"),
    ("header-over-60k", head("Host: a", "X-Big: " + "b" * (61 * 1024)), {431}, "head"),
    ("headers-total-over-60k", head("Host: a", *[f"X-H{i}: " + "c" * 1000 for i in range(64)]), {431}, "head"),
    ("101-header-fields", head("Host: a", *[f"X-H{i}: v" for i in range(100)]), {431}, "head"),
    ("body-cl-over-limit", post([f"Content-Length: {MAX_BODY * 2}"], b"x" * (MAX_BODY * 2)), {413}, "head"),
    ("body-chunked-over-limit", post([CHUNKED], b"%x\r\n%s\r\n0\r\n\r\n" % (MAX_BODY * 2, b"x" * (MAX_BODY * 2))),
     {413}, "body"),
]


@pytest.mark.parametrize(("data", "statuses", "bad_part"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_request_rejected(send, upstreams, data: bytes, statuses: set[int], bad_part: str) -> None:
    raw, responses, closed = send(data)
    assert responses, f"no response at all (closed={closed}): {raw[:200]!r}"
    assert responses[0].status in statuses, f"status {responses[0].status}, want {statuses}: {raw[:300]!r}"
    assert len(responses) == 1, "more than one response to one malformed request"
    assert closed, "connection left open after a malformed request"
    for server in upstreams:
        if bad_part == "head":
            assert not server.received_anything(), f"{server.pod} received {server.requests()}"
        else:
            assert server.completed() == [], f"{server.pod} received a complete request"


def test_slow_header_times_out(send, upstreams) -> None:
    """Half a head, then silence past --header-timeout: 408 and the connection closed."""
    started = time.monotonic()
    raw, responses, closed = send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ", timeout=HEADER_TIMEOUT + 3)
    assert responses and responses[0].status == 408, raw[:200]
    assert closed
    assert time.monotonic() - started < HEADER_TIMEOUT + 2.5
    for server in upstreams:
        assert not server.received_anything()


def test_slowloris_trickle_does_not_extend_header_timeout(gateway, upstreams) -> None:
    """Sending one header byte at a time does not reset the head deadline."""
    with socket.create_connection(("127.0.0.1", gateway.listener_port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
        started = time.monotonic()
        data = b""
        while time.monotonic() - started < HEADER_TIMEOUT + 3:
            try:
                sock.sendall(b"X")
            except OSError:
                break
            sock.settimeout(0.2)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        assert time.monotonic() - started < HEADER_TIMEOUT + 2.5, "trickling kept the connection alive"
    assert not data or data.startswith(b"HTTP/1.1 408"), data[:100]


def test_request_line_extra_spaces_rejected_or_canonicalized(send, upstreams) -> None:
    """RFC 9112 3: a recipient MAY split the request line on whitespace runs; if it
    does, what it forwards must be the canonical request line, never the raw one."""
    raw, responses, closed = send(b"GET  /  HTTP/1.1\r\nHost: a\r\n\r\n", expect_responses=1)
    assert responses, raw
    if responses[0].status == 400:
        assert not any(s.received_anything() for s in upstreams)
    else:
        assert responses[0].status == 200
        assert [(r["method"], r["path"], r["proto"]) for r in upstreams[0].requests()] == [("GET", "/", "HTTP/1.1")]


# --------------------------------------------------------------------------- normalization


@pytest.mark.parametrize(
    ("target", "upstream", "path"),
    [
        ("/../../etc/passwd", "main-0", "/etc/passwd"),
        ("/public/../private", "main-0", "/private"),
        ("/public/%2e%2e/private", "main-0", "/private"),
        ("/public/./x", "public-0", "/public/x"),
        ("//a//b", "main-0", "/a/b"),
        ("/%61bc/%7Euser", "main-0", "/abc/~user"),
        # %2F and %5C are kept encoded: not a path separator, so /public is not matched.
        ("/public%2F..%2Fprivate", "main-0", "/public%2F..%2Fprivate"),
        ("/a%5Cb", "main-0", "/a%5Cb"),
        ("/public/x?q=/../y", "public-0", "/public/x?q=/../y"),
    ],
)
def test_path_normalized_before_matching(send, upstreams, target: str, upstream: str, path: str) -> None:
    raw, responses, _ = send(head("Host: a", target=target), expect_responses=1)
    assert responses and responses[0].status == 200, raw[:300]
    got = [(r["pod"], r["path"]) for s in upstreams for r in s.requests()]
    assert got == [(upstream, path)]


def test_absolute_form_target_wins_over_host(send, upstreams) -> None:
    """RFC 9112 3.2.2: with an absolute-form target the Host header is ignored."""
    raw, responses, _ = send(head("Host: a", target="http://other.example/x"), expect_responses=1)
    assert responses, raw
    if responses[0].status == 200:
        (req,) = upstreams[0].requests()
        assert req["host"] == "other.example" and req["path"] == "/x"
    else:
        assert responses[0].status == 400
        assert not any(s.received_anything() for s in upstreams)


# --------------------------------------------------------------------------- valid but tricky


def test_chunked_body_with_extensions_and_trailers(send, upstreams) -> None:
    body = b'5;ext=1\r\nhello\r\n6;a=b;c="d e"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n'
    raw, responses, _ = send(post([CHUNKED], body), expect_responses=1)
    assert responses and responses[0].status == 200, raw[:300]
    echoed = responses[0].json()
    assert echoed["body_len"] == 11
    assert echoed["body_sha256"] == hashlib.sha256(b"hello world").hexdigest()


def test_pipelined_requests_answered_in_order(send) -> None:
    data = b"".join(head("Host: a", target=f"/p{i}") for i in range(3))
    raw, responses, _ = send(data, expect_responses=3)
    assert [r.status for r in responses] == [200, 200, 200], raw[:500]
    assert [r.json()["path"] for r in responses] == ["/p0", "/p1", "/p2"]


def test_pipelined_post_bodies_are_not_mixed(send) -> None:
    data = post(["Content-Length: 5"], b"hello") + head("Host: a", target="/after") + post([CHUNKED], b"3\r\nabc\r\n0\r\n\r\n")
    raw, responses, _ = send(data, expect_responses=3)
    assert [r.status for r in responses] == [200, 200, 200], raw[:500]
    assert [r.json()["body_len"] for r in responses] == [5, 0, 3]
    assert responses[1].json()["path"] == "/after"


def test_http10_keep_alive(gateway, upstreams) -> None:
    with socket.create_connection(("127.0.0.1", gateway.listener_port), timeout=5) as sock:
        for i in range(2):
            sock.sendall(head("Connection: keep-alive", version="HTTP/1.0", target=f"/ten{i}"))
            data = b""
            deadline = time.monotonic() + 5
            while not parse_responses(data) and time.monotonic() < deadline:
                chunk = sock.recv(65536)
                assert chunk, f"connection closed after HTTP/1.0 keep-alive request {i}"
                data += chunk
            (resp,) = parse_responses(data)
            assert resp.status == 200
            assert resp.json()["path"] == f"/ten{i}"


def test_http10_without_keep_alive_is_closed(send) -> None:
    raw, responses, closed = send(head(version="HTTP/1.0", target="/ten"))
    assert responses and responses[0].status == 200, raw[:300]
    assert closed


def test_expect_100_continue(gateway, upstreams) -> None:
    with socket.create_connection(("127.0.0.1", gateway.listener_port), timeout=5) as sock:
        sock.sendall(head("Host: a", "Content-Length: 5", "Expect: 100-continue", method="POST"))
        data = b""
        deadline = time.monotonic() + 3
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            assert chunk, "closed before 100 Continue"
            data += chunk
        assert data.startswith(b"HTTP/1.1 100"), data[:200]
        sock.sendall(b"hello")
        deadline = time.monotonic() + 5
        while not [r for r in parse_responses(data) if r.status >= 200] and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
        final = [r for r in parse_responses(data) if r.status >= 200]
        assert final and final[0].status == 200
        assert final[0].json()["body_len"] == 5
