"""IntrospectionPolicy against a real introspection endpoint on 127.0.0.1
(tests/e2e/auth_services.py in the test's loop): the call as RFC 7662 / RFC 6749 want
it, each outcome's status and challenge (RFC 6750), the cache (until exp, bounded by
cacheMaxSeconds and by size, inactive answers, concurrent requests sharing one call)
under a fake clock, and the model's rules."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import socket
import textwrap
from pathlib import Path

import pytest
from inprocess import compiled_filter

from meshgate.config.compile import ConfigInvalid, compile_snapshot
from meshgate.config.loader import load_texts
from meshgate.filters.security.base import AUTH_FAILURES
from meshgate.filters.security.introspection import (
    Introspection,
    Introspector,
    TokenCache,
    TokenSource,
)
from meshgate.http.headers import Headers
from meshgate.proxy.context import RequestContext

_spec = importlib.util.spec_from_file_location(
    "auth_services", Path(__file__).resolve().parents[3] / "e2e" / "auth_services.py"
)
auth_services = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(auth_services)

CLIENT_ID = "gateway"
SECRET = "s3cret:&+"  # characters RFC 6749 2.3.1's form-encoding changes
NOW = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def request(headers: list[tuple[str, str]] = (), query: str = "", path: str = "/api") -> RequestContext:
    return RequestContext(
        "GET", path, path, query, Headers.from_pairs(headers), "api.example", "api.example",
        "https", "1.1", "192.0.2.1", 40000, 443, "req-1", 0.0,
    )


def bearer(token: str) -> RequestContext:
    return request([("Authorization", f"Bearer {token}")])


@pytest.fixture
async def server():
    svc = auth_services.IntrospectionService(client_id=CLIENT_ID, client_secret=SECRET)
    # Tokens on the fake clock's time line.
    svc.tokens = {
        "good": {"scope": "read write", "sub": "alice", "client_id": "app-1", "exp": NOW + 3600,
                 "ext": {"tenant": "t1", "tags": ["a"]}, "admin": False},
        "readonly": {"scope": "read", "sub": "bob", "exp": NOW + 3600},
        "short": {"scope": "read", "sub": "carol", "exp": NOW + 30},
        "noexp": {"scope": "read", "sub": "dave"},
        "stale": {"scope": "read", "sub": "erin", "exp": NOW - 5},
    }
    await svc.start()
    yield svc
    await svc.stop()


def introspector(server, clock: Clock, **kw) -> Introspector:
    settings = {
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "timeout": 2.0,
        "cache_max_seconds": 300,
        "inactive_cache_seconds": 0,
        "cache_max_entries": 100,
    }
    settings.update(kw)
    return Introspector(f"{server.url}/oauth2/introspect", clock=clock, **settings)


def challenge(reply) -> str:
    return dict(reply.headers).get("www-authenticate")


# --------------------------------------------------------------------------- the call


async def test_the_call_is_a_form_post_with_basic_client_credentials(server) -> None:
    f = Introspection(introspector(server, Clock()))
    assert await f.on_request(bearer("good")) is None
    last = server.last
    headers = dict(last["headers"])
    assert (last["method"], last["target"]) == ("POST", "/oauth2/introspect")
    assert last["form"] == {"token": "good", "token_type_hint": "access_token"}
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert headers["accept"] == "application/json"
    assert headers["host"] == f"127.0.0.1:{server.port}"
    # id and secret form-encoded, then base64 (RFC 6749 2.3.1): ':' '&' '+' escaped.
    assert base64.b64decode(headers["authorization"][6:]) == b"gateway:s3cret%3A%26%2B"


async def test_wrong_client_credentials_make_the_endpoint_unavailable(server) -> None:
    f = Introspection(introspector(server, Clock(), client_secret="wrong"))
    reply = await f.on_request(bearer("good"))
    assert reply.status == 503


# --------------------------------------------------------------------------- outcomes


class Consumers:
    def by_claims(self, namespace: str, claims: dict) -> str | None:
        return "alice-consumer" if (namespace, claims.get("sub")) == ("shop", "alice") else None


async def test_active_token_sets_claims_consumer_and_claim_headers(server) -> None:
    f = Introspection(
        introspector(server, Clock()),
        claim_to_headers=[("X-Sub", "sub"), ("x-tenant", "ext.tenant"), ("x-tags", "ext.tags"), ("x-admin", "admin")],
        consumers=Consumers(),
        namespace="shop",
    )
    ctx = request([("authorization", "Bearer good"), ("X-Sub", "mallory"), ("x-tags", "forged")])
    assert await f.on_request(ctx) is None
    assert ctx.claims["active"] is True
    assert (ctx.claims["sub"], ctx.claims["client_id"], ctx.claims["scope"]) == ("alice", "app-1", "read write")
    assert ctx.consumer == "alice-consumer"
    assert ctx.headers.get_all("x-sub") == ["alice"]
    assert ctx.headers.get("x-tenant") == "t1"
    assert ctx.headers.get("x-admin") == "false"
    assert "x-tags" not in ctx.headers  # arrays are not copied; the client's value is gone


async def test_claim_headers_never_carry_a_line_break_or_unencodable_text(server) -> None:
    """An answer's claim may hold what a user typed (a name): CR/LF must not split the
    upstream head, and non-Latin-1 text is sent as UTF-8 bytes, as for JWT claims."""
    server.tokens["crlf"] = {"sub": "alice\r\nx-consumer: admin", "exp": NOW + 3600}
    server.tokens["utf8"] = {"sub": "j\u00fcrgen \u2603", "exp": NOW + 3600}
    f = Introspection(introspector(server, Clock()), claim_to_headers=[("x-sub", "sub")])
    ctx = request([("authorization", "Bearer crlf"), ("x-sub", "mallory")])
    assert await f.on_request(ctx) is None
    assert "x-sub" not in ctx.headers
    assert b"x-consumer" not in ctx.headers.encode()
    ctx = bearer("utf8")
    assert await f.on_request(ctx) is None
    assert ctx.headers.encode().endswith(b"x-sub: " + "j\u00fcrgen \u2603".encode() + b"\r\n")


async def test_no_consumer_when_the_claims_name_none(server) -> None:
    ctx = bearer("readonly")
    await Introspection(introspector(server, Clock()), consumers=Consumers(), namespace="shop").on_request(ctx)
    assert ctx.consumer is None and ctx.claims["sub"] == "bob"


async def test_missing_token_is_401_with_a_bare_bearer_challenge(server) -> None:
    before = AUTH_FAILURES.get(("oauth2_introspection", "missing"), 0)
    f = Introspection(introspector(server, Clock()))
    for ctx in (request(), request([("authorization", "Basic dXNlcjpwdw==")]), bearer("")):
        reply = await f.on_request(ctx)
        assert (reply.status, challenge(reply)) == (401, "Bearer")
    assert AUTH_FAILURES[("oauth2_introspection", "missing")] == before + 3
    assert server.calls == 0


async def test_inactive_token_is_401_invalid_token(server) -> None:
    before = AUTH_FAILURES.get(("oauth2_introspection", "inactive"), 0)
    reply = await Introspection(introspector(server, Clock())).on_request(bearer("unknown"))
    assert (reply.status, challenge(reply)) == (401, 'Bearer error="invalid_token"')
    assert AUTH_FAILURES[("oauth2_introspection", "inactive")] == before + 1


async def test_active_but_expired_token_is_401_expired(server) -> None:
    before = AUTH_FAILURES.get(("oauth2_introspection", "expired"), 0)
    reply = await Introspection(introspector(server, Clock())).on_request(bearer("stale"))
    assert (reply.status, challenge(reply)) == (401, 'Bearer error="invalid_token"')
    assert AUTH_FAILURES[("oauth2_introspection", "expired")] == before + 1


async def test_missing_scope_is_403_insufficient_scope(server) -> None:
    f = Introspection(introspector(server, Clock()), required_scopes=["read", "write"])
    assert await f.on_request(bearer("good")) is None
    reply = await f.on_request(bearer("readonly"))
    assert reply.status == 403
    assert challenge(reply) == 'Bearer error="insufficient_scope", scope="read write"'
    server.tokens["noscope"] = {"sub": "x", "exp": NOW + 60}
    assert (await f.on_request(bearer("noscope"))).status == 403


@pytest.mark.parametrize(("configured", "expected"), [(503, 503), (401, 401)])
async def test_endpoint_down_answers_the_configured_status(configured, expected) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    intro = Introspector(f"http://127.0.0.1:{port}/introspect", None, None, 1.0, 300, 0, 10, clock=Clock())
    before = AUTH_FAILURES.get(("oauth2_introspection", "unavailable"), 0)
    reply = await Introspection(intro, unavailable_status=configured).on_request(bearer("good"))
    assert reply.status == expected
    if expected == 401:
        assert challenge(reply) == "Bearer"
    assert AUTH_FAILURES[("oauth2_introspection", "unavailable")] == before + 1


async def test_server_errors_and_non_json_answers_are_unavailable_and_not_cached(server) -> None:
    f = Introspection(introspector(server, Clock()))
    server.status = 500
    assert (await f.on_request(bearer("good"))).status == 503
    server.status = 200
    assert await f.on_request(bearer("good")) is None
    assert server.calls == 2


async def test_endpoint_timeout_is_unavailable_within_the_deadline(server) -> None:
    async def stall(*_a):
        await asyncio.sleep(5)

    server.handle = stall
    f = Introspection(introspector(server, Clock(), timeout=0.2))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await f.on_request(bearer("good"))).status == 503
    assert loop.time() - started < 1.5


# --------------------------------------------------------------------------- cache


async def test_active_answer_is_cached_until_exp(server) -> None:
    clock = Clock()
    f = Introspection(introspector(server, clock))
    for _ in range(5):
        assert await f.on_request(bearer("short")) is None
    assert server.by_token == {"short": 1}
    clock.now = NOW + 29.5
    assert await f.on_request(bearer("short")) is None
    assert server.by_token == {"short": 1}
    clock.now = NOW + 30.5  # past exp: asked again (and the server, on our clock, says expired)
    assert (await f.on_request(bearer("short"))).status == 401
    assert server.by_token == {"short": 2}


async def test_cache_max_seconds_bounds_a_long_lived_token(server) -> None:
    clock = Clock()
    f = Introspection(introspector(server, clock, cache_max_seconds=10))
    await f.on_request(bearer("good"))
    clock.now = NOW + 9
    await f.on_request(bearer("good"))
    assert server.calls == 1
    clock.now = NOW + 11
    await f.on_request(bearer("good"))
    assert server.calls == 2
    # No exp at all: cacheMaxSeconds alone.
    await f.on_request(bearer("noexp"))
    clock.now = NOW + 20
    await f.on_request(bearer("noexp"))
    assert server.by_token["noexp"] == 1


async def test_cache_max_seconds_zero_asks_every_time(server) -> None:
    f = Introspection(introspector(server, Clock(), cache_max_seconds=0))
    for _ in range(3):
        await f.on_request(bearer("good"))
    assert server.calls == 3


async def test_inactive_answers_are_not_cached_unless_asked(server) -> None:
    clock = Clock()
    f = Introspection(introspector(server, clock))
    await f.on_request(bearer("new"))
    server.tokens["new"] = {"scope": "read", "exp": NOW + 60}  # issued a moment later
    assert await f.on_request(bearer("new")) is None
    assert server.by_token["new"] == 2

    g = Introspection(introspector(server, clock, inactive_cache_seconds=5))
    for _ in range(3):
        assert (await g.on_request(bearer("bad"))).status == 401
    assert server.by_token["bad"] == 1
    clock.now += 6
    await g.on_request(bearer("bad"))
    assert server.by_token["bad"] == 2


async def test_cache_size_is_bounded_least_recently_used_first(server) -> None:
    for name in ("a", "b", "c"):
        server.tokens[name] = {"scope": "read", "exp": NOW + 600}
    intro = introspector(server, Clock(), cache_max_entries=2)
    f = Introspection(intro)
    await f.on_request(bearer("a"))
    await f.on_request(bearer("b"))
    await f.on_request(bearer("a"))  # a is now the most recently used
    await f.on_request(bearer("c"))  # evicts b
    assert len(intro.cache) == 2
    await f.on_request(bearer("a"))
    await f.on_request(bearer("c"))
    assert server.by_token == {"a": 1, "b": 1, "c": 1}
    await f.on_request(bearer("b"))
    assert server.by_token["b"] == 2


async def test_concurrent_requests_with_one_token_share_one_call(server) -> None:
    f = Introspection(introspector(server, Clock()))
    replies = await asyncio.gather(*(f.on_request(bearer("good")) for _ in range(20)))
    assert replies == [None] * 20
    assert server.calls == 1


async def test_the_cache_keeps_no_token() -> None:
    cache = TokenCache(10, Clock())
    cache.put(b"k" * 32, {"active": True}, 5)
    assert cache.get(b"k" * 32) == (True, {"active": True})
    cache.put(b"z" * 32, {"active": True}, 0)  # nothing to keep
    assert cache.get(b"z" * 32) == (False, None)


# --------------------------------------------------------------------------- extraction


def test_token_sources_header_prefix_cookie_and_query() -> None:
    src = TokenSource([("X-Api-Token", None), ("authorization", "Token ")], cookies=["at"], params=["access_token"])
    assert src.find(request([("x-api-token", " t1 ")])) == "t1"
    assert src.find(request([("Authorization", "token t2")])) == "t2"
    assert src.find(request([("Authorization", "Bearer t2")])) is None
    assert src.find(request([("Cookie", "a=1; at=t3")])) == "t3"
    assert src.find(request(query="x=1&access_token=t4")) == "t4"
    assert src.find(request()) is None


# --------------------------------------------------------------------------- config


ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  gatewayClassName: meshgate
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: app}]}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: app, namespace: shop}
spec: {endpoints: [{ip: {address: 127.0.0.1, port: 9000}}]}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: shop}
stringData: {client_id: gateway, client_secret: "s3cret"}
---
apiVersion: v1
kind: Secret
metadata: {name: half, namespace: shop}
stringData: {client_id: gateway}
"""


def policy(spec: str) -> str:
    return (
        "apiVersion: meshgate.dev/v1alpha1\nkind: IntrospectionPolicy\n"
        "metadata: {name: p, namespace: shop}\nspec:\n"
        "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]\n"
        + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
        + "\n"
    )


def model_errors(spec: str) -> list[str]:
    return [str(e) for e in load_texts([("t.yaml", policy(spec))]).errors]


def compiled(spec: str) -> Introspection:
    return compiled_filter([("g.yaml", ROUTE), ("t.yaml", policy(spec))], Introspection)


def test_builds_with_defaults() -> None:
    f = compiled("endpoint: https://as.example/oauth2/introspect\nclientCredentialsRef: {name: creds}")
    assert f.describe() == {
        "type": "OAuth2Introspection",
        "endpoint": "https://as.example/oauth2/introspect",
        "requiredScopes": [],
        "claimToHeaders": [],
        "unavailableStatus": 503,
        "cacheMaxSeconds": 300,
        "cacheMaxEntries": 10000,
        "inactiveCacheSeconds": 0,
    }
    (intro,) = f.services()
    assert intro.pool.tls is not None and intro.pool.port == 443
    assert ("host", "as.example") in intro.headers
    assert ("authorization", "Basic " + base64.b64encode(b"gateway:s3cret").decode()) in intro.headers


def test_a_reload_with_the_same_settings_keeps_the_cache() -> None:
    spec = "endpoint: https://as.example/i\nclientCredentialsRef: {name: creds}\nrequiredScopes: [read]"
    a = compiled(spec)
    b = compiled(spec.replace("[read]", "[write]"))  # scopes are checked after the cache
    assert a.services()[0] is b.services()[0]
    c = compiled(spec + "\ncacheMaxSeconds: 60")
    assert c.services()[0] is not a.services()[0]


def test_plain_http_endpoint_is_accepted_with_a_warning_off_loopback(caplog) -> None:
    compiled("endpoint: http://127.0.0.1:9/introspect")
    compiled("endpoint: http://localhost:9/introspect")
    assert not any("plain http" in r.getMessage() for r in caplog.records)
    compiled("endpoint: http://as.internal:8080/introspect")
    assert any("plain http" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("secret", "message"),
    [("nope", "Secret shop/nope not found"), ("half", "has no key client_secret")],
)
def test_credentials_secret_problems_reject_the_config(secret: str, message: str) -> None:
    result = load_texts([("g.yaml", ROUTE), ("t.yaml", policy(f"endpoint: https://as/i\nclientCredentialsRef: {{name: {secret}}}"))])
    with pytest.raises(ConfigInvalid) as exc:
        compile_snapshot(result.resources)
    assert "spec.clientCredentialsRef" in str(exc.value) and message in str(exc.value)


@pytest.mark.parametrize(
    ("spec", "where", "message"),
    [
        ("requiredScopes: [a]", "spec.endpoint", "required field is missing"),
        ("endpoint: ftp://as/i", "spec.endpoint", "https://"),
        ("endpoint: https:///i", "spec.endpoint", "with a host"),
        ("endpoint: https://u:p@as/i", "spec.endpoint", "user information"),
        ("endpoint: https://as:99999/i", "spec.endpoint", "invalid port"),
        ("endpoint: https://as/i\nrequiredScopes: ['a b']", "spec.requiredScopes[0]", "one non-empty word"),
        ("endpoint: https://as/i\nunavailableStatus: 500", "spec.unavailableStatus", ""),
        ("endpoint: https://as/i\ncacheMaxSeconds: -1", "spec.cacheMaxSeconds", ""),
        ("endpoint: https://as/i\ninactiveCacheSeconds: 61", "spec.inactiveCacheSeconds", ""),
        ("endpoint: https://as/i\ncacheMaxEntries: 0", "spec.cacheMaxEntries", ""),
        ("endpoint: https://as/i\ntimeout: 0s", "spec.timeout", "greater than 0"),
        ("endpoint: https://as/i\nextractFrom: {}", "spec.extractFrom", "at least one"),
        ("endpoint: https://as/i\nclientCredentialsRef: {name: c, kind: ConfigMap}", "spec.clientCredentialsRef", "must refer to a Secret"),
        ("endpoint: https://as/i\nclaimToHeaders: [{header: x}]", "spec.claimToHeaders[0].claim", ""),
        ("endpoint: https://as/i\nissuer: x", "spec.issuer", ""),
    ],
)
def test_model_rules_name_the_field(spec: str, where: str, message: str) -> None:
    (error,) = model_errors(spec)
    assert f":{where}:" in error, error
    assert message in error, error
