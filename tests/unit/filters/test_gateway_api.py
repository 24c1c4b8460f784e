"""The Gateway API HTTPRoute filters, checked against the spec's tables and the cases
of the upstream conformance tests (conformance/tests/httproute-*.go), one by one."""

from __future__ import annotations

import random

import pytest

from meshgate.config.snapshot import (
    PATH_EXACT,
    PATH_PREFIX,
    PATH_REGEX,
    CompiledMatch,
    CompiledRule,
)
from meshgate.filters.base import overrides
from meshgate.filters.gateway_api import (
    CORS,
    RequestHeaderModifier,
    RequestMirror,
    RequestRedirect,
    ResponseHeaderModifier,
    URLRewrite,
)
from meshgate.http.headers import Headers
from meshgate.proxy.context import LocalReply, Mirror, RequestContext, ResponseHead

_RULE = CompiledRule(
    route="gateway-conformance-infra/test", rule_index=0, name=None, filters=(), backends=(),
    total_weight=0,
)


def match(value: str, kind: int = PATH_PREFIX) -> CompiledMatch:
    return CompiledMatch(
        path_kind=kind, path=value, path_regex=None, method=None, headers=(), query=(),
        rule=_RULE,
    )


def request(
    path: str = "/",
    *,
    method: str = "GET",
    query: str = "",
    headers: dict[str, str] | None = None,
    host: str = "gw.example",
    scheme: str = "http",
    listener_port: int = 80,
    matched: CompiledMatch | None = None,
) -> RequestContext:
    target = path + "?" + query if query else path
    ctx = RequestContext(
        method, target, path, query, Headers.from_pairs((headers or {}).items()), host, host,
        scheme, "1.1", "127.0.0.1", 40000, listener_port, "req-1", 0.0,
    )
    ctx.match = matched if matched is not None else match("/")
    return ctx


def response(headers: dict[str, str] | None = None) -> ResponseHead:
    return ResponseHead(200, "OK", Headers.from_pairs((headers or {}).items()))


def sent(h: Headers) -> dict[str, str]:
    """What an echo backend reports: each name once, repeated values joined with ","."""
    out: dict[str, str] = {}
    for n, v in h:
        out[n] = out[n] + "," + v if n in out else v
    return out


# --- RequestHeaderModifier / ResponseHeaderModifier ----------------------------------

# (filter config, request headers, expected headers, absent) from
# httproute-request-header-modifier.go; the response test uses the same shapes.
HEADER_CASES = [
    pytest.param(
        {"set": [("X-Header-Set", "set-overwrites-values")]},
        {"Some-Other-Header": "val"},
        {"some-other-header": "val", "x-header-set": "set-overwrites-values"},
        [],
        id="set",
    ),
    pytest.param(
        {"set": [("X-Header-Set", "set-overwrites-values")]},
        {"Some-Other-Header": "val", "X-Header-Set": "some-other-value"},
        {"some-other-header": "val", "x-header-set": "set-overwrites-values"},
        [],
        id="set-overwrites",
    ),
    pytest.param(
        {"add": [("X-Header-Add", "add-appends-values")]},
        {"Some-Other-Header": "val"},
        {"some-other-header": "val", "x-header-add": "add-appends-values"},
        [],
        id="add",
    ),
    pytest.param(
        {"add": [("X-Header-Add", "add-appends-values")]},
        {"Some-Other-Header": "val", "X-Header-Add": "some-other-value"},
        {"some-other-header": "val", "x-header-add": "some-other-value,add-appends-values"},
        [],
        id="add-appends",
    ),
    pytest.param(
        {"remove": ["X-Header-Remove"]},
        {"X-Header-Remove": "val"},
        {},
        ["x-header-remove"],
        id="remove",
    ),
    pytest.param(
        {
            "set": [("X-Header-Set-1", "header-set-1"), ("X-Header-Set-2", "header-set-2")],
            "add": [
                ("X-Header-Add-1", "header-add-1"),
                ("X-Header-Add-2", "header-add-2"),
                ("X-Header-Add-3", "header-add-3"),
            ],
            "remove": ["X-Header-Remove-1", "X-Header-Remove-2"],
        },
        {
            "X-Header-Set-2": "set-val-2",
            "X-Header-Add-2": "add-val-2",
            "X-Header-Remove-2": "remove-val-2",
            "Another-Header": "another-header-val",
        },
        {
            "x-header-set-1": "header-set-1",
            "x-header-set-2": "header-set-2",
            "x-header-add-1": "header-add-1",
            "x-header-add-2": "add-val-2,header-add-2",
            "x-header-add-3": "header-add-3",
            "another-header": "another-header-val",
        },
        ["x-header-remove-1", "x-header-remove-2"],
        id="multiple",
    ),
    pytest.param(
        {
            "set": [("X-Header-Set", "header-set")],
            "add": [("X-Header-Add", "header-add")],
            "remove": ["X-Header-Remove"],
        },
        {
            "x-header-set": "original-val-set",
            "x-header-add": "original-val-add",
            "x-header-remove": "original-val-remove",
            "Another-Header": "another-header-val",
        },
        {
            "x-header-set": "header-set",
            "x-header-add": "original-val-add,header-add",
            "another-header": "another-header-val",
        },
        ["x-header-remove"],
        id="case-insensitivity",
    ),
    pytest.param(
        # httproute-rewrite-path.go, the "modify headers" cases
        {
            "set": [("X-Header-Set", "set-overwrites-values")],
            "add": [("X-Header-Add", "header-val-1"), ("X-Header-Add-Append", "header-val-2")],
            "remove": ["X-Header-Remove"],
        },
        {"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1",
         "X-Header-Set": "set-val"},
        {
            "x-header-add": "header-val-1",
            "x-header-add-append": "append-val-1,header-val-2",
            "x-header-set": "set-overwrites-values",
        },
        ["x-header-remove"],
        id="rewrite-and-modify",
    ),
]


def _modifier(cls, cfg):
    return cls(cfg.get("set", []), cfg.get("add", []), cfg.get("remove", []))


@pytest.mark.parametrize(("cfg", "given", "expected", "absent"), HEADER_CASES)
def test_request_header_modifier_conformance(cfg, given, expected, absent):
    ctx = request("/", headers=given)
    assert _modifier(RequestHeaderModifier, cfg).on_request(ctx) is None
    got = sent(ctx.headers)
    for name, value in expected.items():
        assert got[name] == value
    for name in absent:
        assert name not in got


@pytest.mark.parametrize(("cfg", "given", "expected", "absent"), HEADER_CASES)
def test_response_header_modifier_conformance(cfg, given, expected, absent):
    ctx = request("/")
    head = response(given)
    _modifier(ResponseHeaderModifier, cfg).on_response(ctx, head)
    got = sent(head.headers)
    for name, value in expected.items():
        assert got[name] == value
    for name in absent:
        assert name not in got
    assert len(ctx.headers) == 0  # the request is not touched


def test_add_joins_into_one_field_line():
    ctx = request("/", headers={"X-Header-Add": "original"})
    RequestHeaderModifier([], [("X-Header-Add", "appended")], []).on_request(ctx)
    assert ctx.headers.get_all("x-header-add") == ["original,appended"]


def test_add_joins_repeated_lines_and_the_new_value():
    ctx = request("/")
    ctx.headers.add("x-a", "1")
    ctx.headers.add("x-a", "2")
    RequestHeaderModifier([], [("X-A", "3")], []).on_request(ctx)
    assert ctx.headers.get_all("x-a") == ["1,2,3"]


def test_response_add_of_set_cookie_keeps_separate_lines():
    # Cookies cannot be comma-joined: a joined Set-Cookie would set one broken cookie.
    head = response({"Set-Cookie": "a=1; Path=/"})
    ResponseHeaderModifier([], [("Set-Cookie", "b=2; Path=/")], []).on_response(request(), head)
    assert head.headers.get_all("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]


def test_mixed_case_names_from_config_are_sent_lowercase():
    # the response conformance case adds x-Mixedcase-ADD-1 and X-UPPERCASE-ADD
    head = response()
    ResponseHeaderModifier(
        [], [("x-Mixedcase-ADD-1", "mixedcase-add-1"), ("X-UPPERCASE-ADD", "uppercase-add")], []
    ).on_response(request(), head)
    assert sent(head.headers) == {
        "x-mixedcase-add-1": "mixedcase-add-1",
        "x-uppercase-add": "uppercase-add",
    }


def test_remove_applies_before_set_and_add():
    ctx = request("/", headers={"X-A": "old", "X-B": "old"})
    RequestHeaderModifier([("X-A", "new")], [("X-B", "added")], ["X-A", "X-B"]).on_request(ctx)
    assert sent(ctx.headers) == {"x-a": "new", "x-b": "added"}


def test_header_modifiers_override_only_their_phase():
    req = RequestHeaderModifier([], [], [])
    resp = ResponseHeaderModifier([], [], [])
    assert overrides(req, "on_request") and not overrides(req, "on_response")
    assert overrides(resp, "on_response") and not overrides(resp, "on_request")


def test_header_modifier_describe():
    f = RequestHeaderModifier([("X-Set", "1")], [("X-Add", "2")], ["X-Rm"])
    assert f.name == "RequestHeaderModifier"
    assert f.describe() == {
        "type": "RequestHeaderModifier",
        "set": [{"name": "X-Set", "value": "1"}],
        "add": [{"name": "X-Add", "value": "2"}],
        "remove": ["X-Rm"],
    }
    assert ResponseHeaderModifier([], [], []).describe()["type"] == "ResponseHeaderModifier"


# --- ReplacePrefixMatch: the HTTPPathModifier table, every row -----------------------

PREFIX_TABLE = [
    ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
    ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
    ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
    ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
    ("/foo", "/foo", "/xyz", "/xyz"),
    ("/foo/", "/foo", "/xyz", "/xyz/"),
    ("/foo/bar", "/foo", "", "/bar"),
    ("/foo/", "/foo", "", "/"),
    ("/foo", "/foo", "", "/"),
    ("/foo/", "/foo", "/", "/"),
    ("/foo", "/foo", "/", "/"),
]


@pytest.mark.parametrize(("path", "prefix", "replacement", "expected"), PREFIX_TABLE)
def test_url_rewrite_replace_prefix_table(path, prefix, replacement, expected):
    ctx = request(path, matched=match(prefix))
    URLRewrite(None, "ReplacePrefixMatch", replacement).on_request(ctx)
    assert ctx.upstream_path == expected
    assert ctx.target() == expected


@pytest.mark.parametrize(("path", "prefix", "replacement", "expected"), PREFIX_TABLE)
def test_url_rewrite_replace_prefix_table_compiled_prefix(path, prefix, replacement, expected):
    # The compiler stores PathPrefix values without their trailing "/".
    ctx = request(path, matched=match(prefix.rstrip("/") or "/"))
    URLRewrite(None, "ReplacePrefixMatch", replacement).on_request(ctx)
    assert ctx.upstream_path == expected


@pytest.mark.parametrize(("path", "prefix", "replacement", "expected"), PREFIX_TABLE)
def test_redirect_replace_prefix_table(path, prefix, replacement, expected):
    ctx = request(path, matched=match(prefix))
    reply = redirect(ctx, path_type="ReplacePrefixMatch", path_value=replacement)
    assert location(reply) == "http://gw.example" + expected


# --- URLRewrite: httproute-rewrite-path.go and httproute-rewrite-host.go -------------


@pytest.mark.parametrize(
    ("path", "prefix", "path_type", "value", "expected"),
    [
        ("/prefix/one/two", "/prefix/one", "ReplacePrefixMatch", "/one", "/one/two"),
        ("/full/one/two", "/full/one", "ReplaceFullPath", "/one", "/one"),
        ("/full/rewrite-path-and-modify-headers/test", "/full/rewrite-path-and-modify-headers",
         "ReplaceFullPath", "/test", "/test"),
        ("/prefix/rewrite-path-and-modify-headers/one", "/prefix/rewrite-path-and-modify-headers",
         "ReplacePrefixMatch", "/prefix", "/prefix/one"),
        ("/strip-prefix/three", "/strip-prefix", "ReplacePrefixMatch", "/", "/three"),
        ("/strip-prefix", "/strip-prefix", "ReplacePrefixMatch", "/", "/"),
    ],
)
def test_url_rewrite_path_conformance(path, prefix, path_type, value, expected):
    ctx = request(path, matched=match(prefix))
    assert URLRewrite(None, path_type, value).on_request(ctx) is None
    assert ctx.upstream_path == expected
    assert ctx.upstream_host is None


def test_url_rewrite_keeps_query():
    ctx = request("/prefix/one/two", query="a=1&b=2", matched=match("/prefix/one"))
    URLRewrite(None, "ReplacePrefixMatch", "/one").on_request(ctx)
    assert ctx.target() == "/one/two?a=1&b=2"
    ctx = request("/full/x", query="q", matched=match("/full"))
    URLRewrite(None, "ReplaceFullPath", "/one").on_request(ctx)
    assert ctx.target() == "/one?q"


def test_url_rewrite_prefix_slash_match_prepends():
    # A rule without matches is PathPrefix "/": the replacement is put in front.
    ctx = request("/a/b", matched=match("/"))
    URLRewrite(None, "ReplacePrefixMatch", "/api").on_request(ctx)
    assert ctx.upstream_path == "/api/a/b"


def test_url_rewrite_prefix_on_exact_match_replaces_whole_path():
    ctx = request("/exact", matched=match("/exact", PATH_EXACT))
    URLRewrite(None, "ReplacePrefixMatch", "/new").on_request(ctx)
    assert ctx.upstream_path == "/new"


def test_url_rewrite_prefix_on_regex_match_keeps_path():
    ctx = request("/r/1", matched=match("/r/.*", PATH_REGEX))
    URLRewrite(None, "ReplacePrefixMatch", "/new").on_request(ctx)
    assert ctx.upstream_path is None
    assert ctx.target() == "/r/1"


@pytest.mark.parametrize(
    ("path", "hostname"),
    [("/one", "one.example.org"), ("/", "example.org"),
     ("/rewrite-host-and-modify-headers", "test.example.org")],
)
def test_url_rewrite_host_conformance(path, hostname):
    ctx = request(path, host="rewrite.example", matched=match(path))
    URLRewrite(hostname, None, None).on_request(ctx)
    assert ctx.upstream_host == hostname
    assert ctx.upstream_path is None  # the path goes upstream as received
    assert ctx.host == "rewrite.example"  # the downstream view is unchanged


def test_url_rewrite_host_and_path_together():
    ctx = request("/p/x", matched=match("/p"))
    URLRewrite("up.example", "ReplaceFullPath", "/y").on_request(ctx)
    assert (ctx.upstream_host, ctx.upstream_path) == ("up.example", "/y")


def test_url_rewrite_describe():
    f = URLRewrite("h.example", "ReplacePrefixMatch", "/x")
    assert f.name == "URLRewrite"
    assert f.describe() == {
        "type": "URLRewrite",
        "hostname": "h.example",
        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/x"},
    }
    assert URLRewrite(None, None, None).describe()["path"] is None


def test_unknown_path_modifier_type_is_refused_at_build_time():
    with pytest.raises(ValueError):
        URLRewrite(None, "ReplaceSomething", "/x")


# --- RequestRedirect ----------------------------------------------------------------


def redirect(ctx: RequestContext, **kw) -> LocalReply:
    args = {"scheme": None, "hostname": None, "port": None, "path_type": None,
            "path_value": None, "status_code": 302}
    args.update(kw)
    reply = RequestRedirect(**args).on_request(ctx)
    assert isinstance(reply, LocalReply)
    return reply


def location(reply: LocalReply) -> str:
    return dict(reply.headers)["location"]


# httproute-redirect-port-and-scheme.go: (listener port, listener scheme, config, Location)
PORT_AND_SCHEME = [
    (80, "http", {}, "http://example.org/p"),
    (80, "http", {"port": 80}, "http://example.org/p"),
    (80, "http", {"port": 8080}, "http://example.org:8080/p"),
    (80, "http", {"scheme": "https"}, "https://example.org/p"),
    (80, "http", {"scheme": "https", "port": 443}, "https://example.org/p"),
    (80, "http", {"scheme": "https", "port": 8443}, "https://example.org:8443/p"),
    (8080, "http", {}, "http://example.org:8080/p"),
    (8080, "http", {"port": 80}, "http://example.org/p"),
    (8080, "http", {"scheme": "https"}, "https://example.org/p"),
    (443, "https", {}, "https://example.org/p"),
    (443, "https", {"port": 443}, "https://example.org/p"),
    (443, "https", {"port": 8443}, "https://example.org:8443/p"),
    (443, "https", {"scheme": "http"}, "http://example.org/p"),
    (443, "https", {"scheme": "http", "port": 80}, "http://example.org/p"),
    (443, "https", {"scheme": "http", "port": 8080}, "http://example.org:8080/p"),
]


@pytest.mark.parametrize(("listener_port", "scheme", "cfg", "expected"), PORT_AND_SCHEME)
def test_redirect_port_and_scheme_conformance(listener_port, scheme, cfg, expected):
    ctx = request("/p", scheme=scheme, listener_port=listener_port, matched=match("/p"))
    reply = redirect(ctx, hostname="example.org", **cfg)
    assert reply.status == 302
    assert location(reply) == expected


@pytest.mark.parametrize(
    ("path", "cfg", "status", "expected"),
    [
        # httproute-redirect-path.go
        ("/original-prefix/lemon",
         {"path_type": "ReplacePrefixMatch", "path_value": "/replacement-prefix"},
         302, "http://gw.example/replacement-prefix/lemon"),
        ("/full/path/original",
         {"path_type": "ReplaceFullPath", "path_value": "/full-path-replacement"},
         302, "http://gw.example/full-path-replacement"),
        ("/path-and-host",
         {"hostname": "example.org", "path_type": "ReplacePrefixMatch",
          "path_value": "/replacement-prefix"},
         302, "http://example.org/replacement-prefix"),
        ("/path-and-status",
         {"path_type": "ReplacePrefixMatch", "path_value": "/replacement-prefix",
          "status_code": 301},
         301, "http://gw.example/replacement-prefix"),
        ("/full-path-and-host",
         {"hostname": "example.org", "path_type": "ReplaceFullPath",
          "path_value": "/replacement-full"},
         302, "http://example.org/replacement-full"),
        ("/full-path-and-status",
         {"path_type": "ReplaceFullPath", "path_value": "/replacement-full", "status_code": 301},
         301, "http://gw.example/replacement-full"),
        # httproute-redirect-port.go
        ("/port", {"port": 8083}, 302, "http://gw.example:8083/port"),
        ("/port-and-host", {"hostname": "example.org", "port": 8083},
         302, "http://example.org:8083/port-and-host"),
        ("/port-and-status", {"port": 8083, "status_code": 301},
         301, "http://gw.example:8083/port-and-status"),
        ("/port-and-host-and-status", {"port": 8083, "hostname": "example.org"},
         302, "http://example.org:8083/port-and-host-and-status"),
        # httproute-redirect-scheme.go
        ("/scheme", {"scheme": "https"}, 302, "https://gw.example/scheme"),
        ("/scheme-and-host", {"scheme": "https", "hostname": "example.org"},
         302, "https://example.org/scheme-and-host"),
        ("/scheme-and-status", {"scheme": "https", "status_code": 301},
         301, "https://gw.example/scheme-and-status"),
        ("/scheme-and-host-and-status", {"scheme": "https", "hostname": "example.org"},
         302, "https://example.org/scheme-and-host-and-status"),
        # httproute-redirect-host-and-status.go
        ("/hostname-redirect", {"hostname": "example.org"},
         302, "http://example.org/hostname-redirect"),
        ("/host-and-status", {"hostname": "example.org", "status_code": 301},
         301, "http://example.org/host-and-status"),
        # httproute-303/307/308-redirect.go
        ("/see-other", {"status_code": 303}, 303, "http://gw.example/see-other"),
        ("/temporary-redirect", {"status_code": 307}, 307, "http://gw.example/temporary-redirect"),
        ("/permanent-redirect", {"status_code": 308}, 308, "http://gw.example/permanent-redirect"),
    ],
)
def test_redirect_conformance(path, cfg, status, expected):
    ctx = request(path, matched=match("/" + path.split("/")[1]))  # the rule's PathPrefix
    reply = redirect(ctx, **cfg)
    assert reply.status == status
    assert location(reply) == expected


def test_redirect_reply_is_empty_and_unflagged():
    reply = redirect(request("/x"), hostname="example.org")
    assert reply.headers == [("location", "http://example.org/x"), ("content-length", "0")]
    assert reply.body == b""
    assert reply.flag == ""


def test_redirect_keeps_query():
    ctx = request("/original-prefix/lemon", query="a=1&b=%20", matched=match("/original-prefix"))
    reply = redirect(ctx, scheme="https", hostname="example.org",
                     path_type="ReplacePrefixMatch", path_value="/new")
    assert location(reply) == "https://example.org/new/lemon?a=1&b=%20"


def test_redirect_to_the_same_place_on_a_non_default_listener_keeps_its_port():
    ctx = request("/a", host="gw.example", listener_port=8080)
    assert location(redirect(ctx)) == "http://gw.example:8080/a"


def test_redirect_brackets_an_ipv6_host():
    ctx = request("/a", host="::1", listener_port=8080)
    assert location(redirect(ctx)) == "http://[::1]:8080/a"


def test_redirect_describe():
    f = RequestRedirect("https", "example.org", 8443, "ReplaceFullPath", "/x", 301)
    assert f.name == "RequestRedirect"
    assert f.describe() == {
        "type": "RequestRedirect",
        "scheme": "https",
        "hostname": "example.org",
        "port": 8443,
        "path": {"type": "ReplaceFullPath", "replaceFullPath": "/x"},
        "statusCode": 301,
    }


# --- RequestMirror --------------------------------------------------------------------


def test_mirror_always_at_100_percent(monkeypatch):
    monkeypatch.setattr(random, "random", lambda: 0.9999999)
    ctx = request("/mirror")
    RequestMirror("service/ns/infra-backend-v2:8080", 100).on_request(ctx)
    assert ctx.mirrors == [Mirror("service/ns/infra-backend-v2:8080")]


def test_mirror_never_at_0_percent(monkeypatch):
    monkeypatch.setattr(random, "random", lambda: 0.0)
    ctx = request("/mirror")
    RequestMirror("c", 0).on_request(ctx)
    assert ctx.mirrors is None


def test_mirror_threshold(monkeypatch):
    f = RequestMirror("c", 20)
    monkeypatch.setattr(random, "random", lambda: 0.1999)
    ctx = request("/percent-mirror")
    f.on_request(ctx)
    assert ctx.mirrors == [Mirror("c")]
    monkeypatch.setattr(random, "random", lambda: 0.2)
    ctx = request("/percent-mirror")
    f.on_request(ctx)
    assert ctx.mirrors is None


@pytest.mark.parametrize("percent", [20, 35, 50])
def test_mirror_share_over_many_requests(percent):
    # httproute-request-percentage-mirror.go: 20%, 35%, and fraction 25/50.
    random.seed(1234)
    f = RequestMirror("c", percent)
    n = 20000
    mirrored = 0
    for _ in range(n):
        ctx = request("/percent-mirror")
        f.on_request(ctx)
        mirrored += ctx.mirrors is not None
    assert abs(mirrored / n - percent / 100) < 0.02


def test_mirror_unresolved_backend_sends_nothing():
    ctx = request("/mirror")
    RequestMirror(None, 100).on_request(ctx)
    assert ctx.mirrors is None


def test_multiple_mirrors_accumulate():
    ctx = request("/multi-mirror")
    RequestMirror("v2", 100).on_request(ctx)
    RequestMirror("v3", 100).on_request(ctx)
    assert ctx.mirrors == [Mirror("v2"), Mirror("v3")]


def test_mirror_describe():
    f = RequestMirror("c", 35.0)
    assert f.name == "RequestMirror"
    assert f.describe() == {"type": "RequestMirror", "cluster": "c", "percent": 35.0}


# --- CORS: httproute-cors.yaml routes and httproute-cors.go cases --------------------

CORS_1 = dict(  # cors-multiple-origins-methods-headers
    allow_origins=["https://www.foo.com", "https://*.bar.com"],
    allow_methods=["GET", "OPTIONS"],
    allow_headers=["x-header-1", "x-header-2"],
    expose_headers=["x-header-3", "x-header-4"],
    max_age=3600,
    allow_credentials=True,
)
CORS_2 = dict(  # cors-wildcard-methods (maxAge defaults to 5)
    allow_origins=["https://www.foo.com"], allow_methods=["*"], allow_headers=[],
    expose_headers=[], max_age=5, allow_credentials=False,
)
CORS_WILDCARD_ORIGIN = dict(
    allow_origins=["*"], allow_methods=["PUT"], allow_headers=[], expose_headers=[],
    max_age=5, allow_credentials=False,
)
CORS_WILDCARD_AUTH = dict(
    allow_origins=["*"], allow_methods=["*"], allow_headers=["*"], expose_headers=[],
    max_age=5, allow_credentials=True,
)
CORS_WILDCARD_UNAUTH = dict(CORS_WILDCARD_AUTH, allow_credentials=False)


def preflight(cfg: dict, origin: str, method: str, req_headers: str | None = None):
    headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if req_headers is not None:
        headers["Access-Control-Request-Headers"] = req_headers
    ctx = request("/cors", method="OPTIONS", headers=headers)
    f = CORS(**cfg)
    reply = f.on_request(ctx)
    assert isinstance(reply, LocalReply)
    # The engine runs on_response on local replies too: the result must not change.
    head = ResponseHead(reply.status, "OK", Headers(reply.headers))
    f.on_response(ctx, head)
    return reply.status, sent(head.headers)


def simple(cfg: dict, origin: str, method: str = "GET", extra: dict | None = None):
    ctx = request("/cors", method=method, headers={"Origin": origin, **(extra or {})})
    f = CORS(**cfg)
    assert f.on_request(ctx) is None  # goes upstream
    head = response({"content-type": "application/json"})
    f.on_response(ctx, head)
    return sent(head.headers)


@pytest.mark.parametrize(
    "origin", ["https://www.foo.com", "https://www.bar.com", "https://xpto.www.bar.com"]
)
def test_cors_preflight_allowed_origins(origin):
    status, h = preflight(CORS_1, origin, "GET", "x-header-1, x-header-2")
    assert status == 200
    assert h["access-control-allow-origin"] == origin
    assert h["access-control-allow-methods"] == "GET, OPTIONS"
    assert h["access-control-allow-headers"] == "x-header-1, x-header-2"
    assert h["access-control-expose-headers"] == "x-header-3, x-header-4"
    assert h["access-control-max-age"] == "3600"
    assert h["access-control-allow-credentials"] == "true"
    assert h["vary"] == "Origin"
    assert h["content-length"] == "0"


def test_cors_preflight_from_other_origin_gets_no_cors_fields():
    status, h = preflight(CORS_1, "https://foobar.com", "GET")
    assert status == 200
    assert not [n for n in h if n.startswith("access-control-")]


@pytest.mark.parametrize("origin", ["https://www.foo.com", "https://www.bar.com"])
def test_cors_simple_request_allowed_origin(origin):
    h = simple(CORS_1, origin, extra={"access-control-request-method": "GET"})
    assert h["access-control-allow-origin"] == origin
    assert h["access-control-allow-credentials"] == "true"
    assert h["access-control-expose-headers"] == "x-header-3, x-header-4"
    assert h["vary"] == "Origin"
    assert h["content-type"] == "application/json"


def test_cors_simple_request_other_origin_untouched():
    h = simple(CORS_1, "https://foobar.com")
    assert h == {"content-type": "application/json"}


def test_cors_preflight_wildcard_methods_without_credentials():
    status, h = preflight(CORS_2, "https://www.foo.com", "POST")
    assert status == 200
    assert h["access-control-allow-origin"] == "https://www.foo.com"
    assert h["access-control-allow-methods"] in ("POST", "*")
    assert "access-control-allow-credentials" not in h
    assert "access-control-allow-headers" not in h


@pytest.mark.parametrize("origin", ["https://foobar.com", "https://foobar.com:12345"])
def test_cors_preflight_wildcard_origin(origin):
    status, h = preflight(CORS_WILDCARD_ORIGIN, origin, "PUT")
    assert status == 200
    assert h["access-control-allow-origin"] == origin
    assert h["access-control-allow-methods"] == "PUT"
    assert "access-control-allow-credentials" not in h


@pytest.mark.parametrize("origin", ["https://foobar.com", "https://foobar.com:12345"])
def test_cors_simple_request_wildcard_origin(origin):
    h = simple(CORS_WILDCARD_ORIGIN, origin, method="PUT")
    assert h["access-control-allow-origin"] == origin
    assert "access-control-allow-credentials" not in h


def test_cors_preflight_wildcards_with_credentials_echo_the_request():
    status, h = preflight(CORS_WILDCARD_AUTH, "https://other.foo.com", "PUT",
                          "x-header-1, x-header-2")
    assert status == 200
    assert h["access-control-allow-origin"] == "https://other.foo.com"
    assert h["access-control-allow-methods"] == "PUT"
    assert h["access-control-allow-headers"] == "x-header-1, x-header-2"
    assert h["access-control-allow-credentials"] == "true"


def test_cors_preflight_wildcard_headers_with_credentials_and_none_requested():
    _, h = preflight(CORS_WILDCARD_AUTH, "https://other.foo.com", "PUT")
    assert "access-control-allow-headers" not in h


def test_cors_preflight_wildcards_without_credentials():
    status, h = preflight(CORS_WILDCARD_UNAUTH, "https://other.foo.com", "PUT",
                          "x-header-1, x-header-2")
    assert status == 200
    assert h["access-control-allow-origin"] in ("https://other.foo.com", "*")
    assert h["access-control-allow-methods"] in ("PUT", "*")
    assert h["access-control-allow-headers"] in ("x-header-1, x-header-2", "*")
    assert "access-control-allow-credentials" not in h


def test_cors_simple_request_with_credentials():
    h = simple(CORS_WILDCARD_AUTH, "https://other.foo.com",
               extra={"Authorization": "Bearer test"})
    assert h["access-control-allow-origin"] == "https://other.foo.com"
    assert h["access-control-allow-credentials"] == "true"


def test_cors_simple_request_with_credentials_on_unauth_route():
    h = simple(CORS_WILDCARD_UNAUTH, "https://other.foo.com",
               extra={"Authorization": "Bearer test"})
    assert h["access-control-allow-origin"] == "https://other.foo.com"
    assert "access-control-allow-credentials" not in h


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://www.foo.com:443", True),  # the default port is implied
        ("https://WWW.FOO.COM", True),  # scheme and host are case-insensitive
        ("http://www.foo.com", False),  # another scheme is another origin
        ("https://www.foo.com:8443", False),
        ("https://a.b.c.bar.com", True),  # "*" spans any number of labels
        ("https://bar.com", False),  # "*." needs something before the dot
        ("https://www.bar.com:443", True),
        ("https://www.bar.com:8443", False),
        ("https://evilbar.com", False),
        ("https://www.bar.com.evil.com", False),
        ("null", False),
    ],
)
def test_cors_origin_matching(origin, allowed):
    assert CORS(**CORS_1).allows(origin) is allowed


def test_cors_origin_with_explicit_port():
    f = CORS(["http://localhost:3000", "https://*.example.com:8443"], ["GET"], [], [], 5, False)
    assert f.allows("http://localhost:3000")
    assert not f.allows("http://localhost")
    assert f.allows("https://app.example.com:8443")
    assert not f.allows("https://app.example.com")


def test_cors_plain_options_goes_upstream():
    ctx = request("/cors", method="OPTIONS", headers={"Origin": "https://www.foo.com"})
    assert CORS(**CORS_1).on_request(ctx) is None


def test_cors_request_without_origin_is_untouched():
    ctx = request("/cors")
    f = CORS(**CORS_1)
    assert f.on_request(ctx) is None
    head = response()
    f.on_response(ctx, head)
    assert len(head.headers) == 0


def test_cors_overrides_upstream_cors_fields_and_keeps_its_vary():
    ctx = request("/cors", headers={"Origin": "https://www.foo.com"})
    head = response({"Access-Control-Allow-Origin": "*", "Vary": "Accept-Encoding"})
    CORS(**CORS_1).on_response(ctx, head)
    assert head.headers.get_all("access-control-allow-origin") == ["https://www.foo.com"]
    assert head.headers.get_all("vary") == ["Accept-Encoding", "Origin"]


def test_cors_does_not_repeat_vary_origin():
    ctx = request("/cors", headers={"Origin": "https://www.foo.com"})
    head = response({"Vary": "accept-encoding, origin"})
    CORS(**CORS_1).on_response(ctx, head)
    assert head.headers.get_all("vary") == ["accept-encoding, origin"]


def test_cors_expose_wildcard_only_without_credentials():
    cfg = dict(CORS_WILDCARD_UNAUTH, expose_headers=["*"])
    assert simple(cfg, "https://a.example")["access-control-expose-headers"] == "*"
    cfg = dict(CORS_WILDCARD_AUTH, expose_headers=["*"])
    assert "access-control-expose-headers" not in simple(cfg, "https://a.example")


def test_cors_describe():
    f = CORS(**CORS_1)
    assert f.name == "CORS"
    assert f.describe() == {
        "type": "CORS",
        "allowOrigins": ["https://www.foo.com", "https://*.bar.com"],
        "allowMethods": ["GET", "OPTIONS"],
        "allowHeaders": ["x-header-1", "x-header-2"],
        "exposeHeaders": ["x-header-3", "x-header-4"],
        "maxAge": 3600,
        "allowCredentials": True,
    }


def test_filters_have_slots():
    for f in (
        RequestHeaderModifier([], [], []), ResponseHeaderModifier([], [], []),
        URLRewrite(None, None, None), RequestRedirect(None, None, None, None, None, 302),
        RequestMirror("c", 1), CORS(**CORS_1),
    ):
        assert not hasattr(f, "__dict__")
