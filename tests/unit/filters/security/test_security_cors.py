"""SecurityPolicy ``cors``: Envoy Gateway's origin validation, wildcard origins that
cannot be spoofed, preflights answered at the gateway, CORS fields on actual responses,
credentials and ``*`` as the Fetch spec wants them, and the one engine shared with the
HTTPRoute CORS filter."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from meshgate.config.models.security.cors import CORS as Config
from meshgate.filters.gateway_api.cors import CORS as Engine
from meshgate.filters.security.cors import build
from meshgate.http.headers import Headers
from meshgate.proxy.context import LocalReply, RequestContext, ResponseHead


def cors(**spec) -> Engine:
    (f,) = build(Config.model_validate(spec), None)
    return f


def request(method: str = "GET", **headers: str) -> RequestContext:
    pairs = [(k.replace("_", "-"), v) for k, v in headers.items()]
    return RequestContext(
        method, "/", "/", "", Headers.from_pairs(pairs), "api.example.com", "api.example.com",
        "https", "1.1", "10.0.0.1", 40000, 443, "req-1", 0.0,
    )


def fields(head: ResponseHead) -> dict[str, str]:
    return {n: v for n, v in head.headers}


def preflight(f: Engine, origin: str, method: str = "GET", req_headers: str | None = None):
    extra = {"access_control_request_headers": req_headers} if req_headers else {}
    ctx = request("OPTIONS", origin=origin, access_control_request_method=method, **extra)
    reply = f.on_request(ctx)
    if reply is None:
        return None
    assert isinstance(reply, LocalReply)
    head = ResponseHead(reply.status, "OK", Headers(reply.headers))
    f.on_response(ctx, head)  # the engine runs response hooks on local replies too
    return reply.status, fields(head)


def actual(f: Engine, origin: str | None, method: str = "GET") -> dict[str, str]:
    ctx = request(method, **({"origin": origin} if origin else {}))
    assert f.on_request(ctx) is None
    head = ResponseHead(200, "OK", Headers([("content-type", "application/json")]))
    f.on_response(ctx, head)
    return fields(head)


APP = dict(
    allowOrigins=["https://app.example.com", "https://*.example.org", "http://localhost:*"],
    allowMethods=["GET", "POST"],
    allowHeaders=["x-client", "content-type"],
    exposeHeaders=["x-request-id"],
    maxAge="10m",
    allowCredentials=True,
)


# --- origins --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "ok"),
    [
        ("https://app.example.com", True),
        ("https://APP.example.com", True),
        ("https://app.example.com:443", True),
        ("http://app.example.com", False),
        ("https://app.example.com:8443", False),
        ("https://www.example.org", True),
        ("https://a.b.example.org", True),  # the wildcard spans labels
        ("https://example.org", False),  # "*." needs a label
        ("https://.example.org", False),
        ("https://evilexample.org", False),
        ("https://evil.example.org.attacker.net", False),
        ("https://attacker.net?x=.example.org", False),
        ("https://attacker.net#.example.org", False),
        ("https://attacker.net/.example.org", False),
        ("https://user@x.example.org", False),
        ("https://attacker.net:.example.org", False),
        ("http://localhost", True),
        ("http://localhost:3000", True),
        ("http://localhost:65535", True),
        ("https://localhost:3000", False),
        ("http://localhost.attacker.net:3000", False),
        ("null", False),
    ],
)
def test_origin_matching(origin, ok):
    assert cors(**APP).allows(origin) is ok


def test_wildcard_host_with_scheme_is_any_origin_of_that_scheme_on_any_port():
    f = cors(allowOrigins=["https://*"], allowMethods=["GET"])
    assert f.allows("https://anything.example")
    assert f.allows("https://anything.example:8443")
    assert f.allows("https://[2001:db8::1]:8443")
    assert not f.allows("http://anything.example")
    assert not f.allows("https://a.example/path")


def test_star_alone_is_every_origin():
    f = cors(allowOrigins=["*"], allowMethods=["GET"])
    assert f.allows("http://x.test:1") and f.allows("null")


@pytest.mark.parametrize(
    "origin",
    ["example.com", "*.example.com", "ftp://example.com", "https://exa mple.com",
     "https://foo.*.example.com", "https://example.com/", "https://example.com:123456",
     "https://*example.com", ""],
)
def test_origin_validation_follows_envoy_gateway(origin):
    with pytest.raises(ValidationError) as e:
        Config.model_validate({"allowOrigins": [origin]})
    assert "not an origin" in str(e.value)


@pytest.mark.parametrize(
    "origin",
    ["*", "https://foo.example.com", "https://*.example.com", "http://foo.example.com:8080",
     "http://*.example.com:8080", "https://localhost:*", "https://*", "http://127.0.0.1:3000"],
)
def test_origins_envoy_gateway_accepts(origin):
    Config.model_validate({"allowOrigins": [origin]})


def test_star_origin_stands_alone_and_lists_are_not_empty():
    with pytest.raises(ValidationError, match="cannot contain"):
        Config.model_validate({"allowOrigins": ["*", "https://a.example"]})
    with pytest.raises(ValidationError, match="at least 1 item"):
        Config.model_validate({"allowMethods": []})
    with pytest.raises(ValidationError, match="maxAge"):
        Config.model_validate({"maxAge": "10 minutes"})


# --- preflight ------------------------------------------------------------------------


def test_preflight_from_allowed_origin_is_answered_at_the_gateway():
    status, h = preflight(cors(**APP), "https://www.example.org", "POST", "x-client")
    assert status == 200
    assert h["access-control-allow-origin"] == "https://www.example.org"
    assert h["access-control-allow-methods"] == "GET, POST"
    assert h["access-control-allow-headers"] == "x-client, content-type"
    assert h["access-control-expose-headers"] == "x-request-id"
    assert h["access-control-max-age"] == "600"
    assert h["access-control-allow-credentials"] == "true"
    assert h["vary"] == "Origin"


def test_preflight_from_disallowed_origin_goes_on_without_cors_fields():
    """Envoy's CORS filter leaves it to the rest of the chain and the upstream."""
    f = cors(**APP)
    assert preflight(f, "https://attacker.net?x=.example.org") is None
    ctx = request("OPTIONS", origin="https://evil.example", access_control_request_method="GET")
    assert f.on_request(ctx) is None
    head = ResponseHead(204, "No Content", Headers([("allow", "GET")]))
    f.on_response(ctx, head)
    assert not [n for n, _ in head.headers if n.startswith("access-control-")]


def test_no_max_age_header_when_unset():
    _, h = preflight(cors(allowOrigins=["*"], allowMethods=["GET"]), "https://a.test")
    assert "access-control-max-age" not in h


def test_plain_options_without_request_method_goes_upstream():
    ctx = request("OPTIONS", origin="https://app.example.com")
    assert cors(**APP).on_request(ctx) is None


# --- credentials and "*" (Fetch spec) ---------------------------------------------------


def test_star_origin_with_credentials_echoes_the_origin_never_star():
    f = cors(allowOrigins=["*"], allowMethods=["*"], allowHeaders=["*"], exposeHeaders=["*"],
             allowCredentials=True)
    _, h = preflight(f, "https://a.test", "PATCH", "x-one, x-two")
    assert h["access-control-allow-origin"] == "https://a.test"
    # A literal "*" means a method / header named "*" when credentials are allowed.
    assert h["access-control-allow-methods"] == "PATCH"
    assert h["access-control-allow-headers"] == "x-one, x-two"
    assert "access-control-expose-headers" not in h
    assert h["access-control-allow-credentials"] == "true"
    h = actual(f, "https://a.test")
    assert h["access-control-allow-origin"] == "https://a.test"
    assert "access-control-expose-headers" not in h


def test_star_without_credentials_is_sent_as_star():
    f = cors(allowOrigins=["*"], allowMethods=["*"], allowHeaders=["*"], exposeHeaders=["*"])
    _, h = preflight(f, "https://a.test", "PATCH", "x-one")
    assert h["access-control-allow-methods"] == "*"
    assert h["access-control-allow-headers"] == "*"
    assert "access-control-allow-credentials" not in h
    assert actual(f, "https://a.test")["access-control-expose-headers"] == "*"


# --- actual requests ------------------------------------------------------------------


def test_actual_request_from_allowed_origin_gets_cors_fields():
    h = actual(cors(**APP), "http://localhost:5173", "POST")
    assert h["access-control-allow-origin"] == "http://localhost:5173"
    assert h["access-control-allow-credentials"] == "true"
    assert h["access-control-expose-headers"] == "x-request-id"
    assert h["vary"] == "Origin"
    assert "access-control-allow-methods" not in h  # preflight-only fields


def test_actual_request_from_disallowed_origin_is_forwarded_untouched():
    assert actual(cors(**APP), "https://attacker.net") == {"content-type": "application/json"}
    assert actual(cors(**APP), None) == {"content-type": "application/json"}


def test_one_engine_serves_both_front_ends():
    f = cors(**APP)
    assert type(f) is Engine
    assert f.describe()["allowOrigins"] == APP["allowOrigins"]
    assert f.describe()["maxAge"] == 600
