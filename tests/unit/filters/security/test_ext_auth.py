"""SecurityPolicy extAuth against a real authorization service on 127.0.0.1
(tests/e2e/auth_services.py, run in the test's loop): what the check request carries,
allow / deny / error decisions as Envoy's ext_authz HTTP service makes them, failOpen,
and the model's rules (Envoy Gateway's CEL rules and what meshgate does not serve)."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import textwrap
from pathlib import Path

import pytest
from inprocess import compiled_filter

from meshgate.config.compile import ConfigInvalid, compile_snapshot
from meshgate.config.loader import load_texts
from meshgate.filters.security.base import AUTH_FAILURES
from meshgate.filters.security.ext_auth import ExtAuth
from meshgate.filters.security.http_client import ConnectionPool
from meshgate.http.headers import Headers
from meshgate.proxy.context import LocalReply, RequestContext

_spec = importlib.util.spec_from_file_location(
    "auth_services", Path(__file__).resolve().parents[3] / "e2e" / "auth_services.py"
)
auth_services = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(auth_services)


def request(
    path: str = "/api/items",
    *,
    method: str = "GET",
    query: str = "",
    headers: list[tuple[str, str]] = (),
    authority: str = "shop.example",
    client_ip: str = "203.0.113.7",
) -> RequestContext:
    target = path + "?" + query if query else path
    return RequestContext(
        method, target, path, query, Headers.from_pairs(headers), authority.split(":")[0], authority,
        "http", "1.1", client_ip, 40000, 80, "req-1", 0.0,
    )


@pytest.fixture
async def service():
    svc = await auth_services.ExtAuthService(slow_seconds=2.0).start()
    yield svc
    await svc.stop()


def ext_auth(svc, **kw) -> ExtAuth:
    return ExtAuth([ConnectionPool("127.0.0.1", svc.port)], **kw)


def sent(svc) -> dict:
    (check,) = svc.requests
    return {"method": check["method"], "target": check["target"], "headers": dict(check["headers"])}


# --------------------------------------------------------------------------- check request


async def test_check_request_carries_method_path_host_authorization_and_nothing_else(service) -> None:
    ctx = request(
        "/api/items",
        method="DELETE",
        query="id=7",
        headers=[("Authorization", "Bearer allow"), ("Cookie", "s=1"), ("X-Custom", "c"), ("Content-Length", "0")],
    )
    assert await ext_auth(service).on_request(ctx) is None
    check = sent(service)
    assert check["method"] == "DELETE"
    assert check["target"] == "/api/items?id=7"
    assert check["headers"] == {"host": "shop.example", "authorization": "Bearer allow", "content-length": "0"}


async def test_path_prefix_goes_before_the_original_path(service) -> None:
    await ext_auth(service, path_prefix="/auth").on_request(request("/hello", headers=[("authorization", "Bearer allow")]))
    assert sent(service)["target"] == "/auth/hello"


async def test_headers_to_ext_auth_are_sent_with_forwarding_headers_as_upstream_sees_them(service) -> None:
    ctx = request(
        headers=[
            ("authorization", "Bearer allow"),
            ("x-forwarded-for", "198.51.100.1"),
            ("Cookie", "session=abc"),
            ("X-Tenant-Hint", "t9"),
            ("Connection", "keep-alive"),
        ]
    )
    f = ext_auth(
        service,
        headers_to_ext_auth=["Cookie", "x-tenant-hint", "X-Forwarded-For", "x-forwarded-proto", "connection", "x-absent"],
    )
    await f.on_request(ctx)
    headers = sent(service)["headers"]
    assert headers["cookie"] == "session=abc"
    assert headers["x-tenant-hint"] == "t9"
    assert headers["x-forwarded-for"] == "198.51.100.1, 203.0.113.7"
    assert headers["x-forwarded-proto"] == "http"
    assert "x-absent" not in headers
    assert headers.get("connection") is None  # hop-by-hop: never copied


# --------------------------------------------------------------------------- decisions


async def test_allow_copies_only_headers_to_backend_replacing_the_clients(service) -> None:
    ctx = request(headers=[("authorization", "Bearer allow"), ("X-User", "mallory"), ("x-keep", "1")])
    f = ext_auth(service, headers_to_backend=["X-User", "x-tenant", "x-never-sent"])
    assert await f.on_request(ctx) is None
    assert ctx.headers.get_all("x-user") == ["alice"]
    assert ctx.headers.get("x-tenant") == "t1"
    assert "x-not-listed" not in ctx.headers  # in the answer but not in headersToBackend
    assert "x-never-sent" not in ctx.headers
    assert ctx.headers.get("x-keep") == "1"


async def test_a_header_to_backend_the_answer_leaves_out_is_not_the_clients(service) -> None:
    """headersToBackend are the service's to set: a client copy never reaches the
    upstream, whether the service's 200 omits the header or the service is down."""
    ctx = request(headers=[("authorization", "Bearer allow"), ("x-never-sent", "forged"), ("X-Never-Sent", "2")])
    f = ext_auth(service, headers_to_backend=["X-User", "x-never-sent"])
    assert await f.on_request(ctx) is None
    assert "x-never-sent" not in ctx.headers
    assert ctx.headers.get_all("x-user") == ["alice"]
    down = request(headers=[("authorization", "Bearer boom"), ("x-user", "admin")])
    assert await ext_auth(service, headers_to_backend=["x-user"], fail_open=True).on_request(down) is None
    assert "x-user" not in down.headers


async def test_denial_passes_the_services_status_body_and_headers_to_the_client(service) -> None:
    before = AUTH_FAILURES.get(("ext_auth", "denied"), 0)
    reply = await ext_auth(service).on_request(request(headers=[("authorization", "Bearer deny")]))
    assert isinstance(reply, LocalReply)
    assert reply.status == 403
    assert reply.body == b'{"error": "forbidden by policy"}'
    assert ("x-deny-reason", "policy") in reply.headers
    assert ("content-type", "application/json") in reply.headers
    assert not any(n in ("content-length", "host", "connection") for n, _ in reply.headers)
    assert reply.flag == "UAEX"
    assert AUTH_FAILURES[("ext_auth", "denied")] == before + 1


async def test_unauthenticated_and_redirect_answers_pass_through(service) -> None:
    reply = await ext_auth(service).on_request(request())
    assert (reply.status, reply.body) == (401, b"who are you?")
    assert ("www-authenticate", 'Bearer realm="ext"') in reply.headers

    reply = await ext_auth(service).on_request(request("/cart", headers=[("authorization", "Bearer redirect")]))
    assert reply.status == 302
    assert dict(reply.headers)["location"] == "https://login.example/?next=%2Fcart"


@pytest.mark.parametrize("fail_open", [False, True])
async def test_a_5xx_from_the_service_is_an_error_403_or_allowed_with_fail_open(service, fail_open) -> None:
    before = AUTH_FAILURES.get(("ext_auth", "unavailable"), 0)
    ctx = request(headers=[("authorization", "Bearer boom")])
    reply = await ext_auth(service, fail_open=fail_open).on_request(ctx)
    if fail_open:
        assert reply is None
        assert AUTH_FAILURES.get(("ext_auth", "unavailable"), 0) == before
    else:
        assert (reply.status, reply.body, reply.flag) == (403, b"", "UAEX")
        assert AUTH_FAILURES[("ext_auth", "unavailable")] == before + 1


@pytest.mark.parametrize("fail_open", [False, True])
async def test_timeout_is_an_error_within_the_deadline(service, fail_open) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    reply = await ext_auth(service, timeout=0.2, fail_open=fail_open).on_request(
        request(headers=[("authorization", "Bearer slow")])
    )
    assert loop.time() - started < 1.5
    assert reply is None if fail_open else reply.status == 403


@pytest.mark.parametrize("fail_open", [False, True])
async def test_unreachable_service_is_an_error(fail_open) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    f = ExtAuth([ConnectionPool("127.0.0.1", port)], fail_open=fail_open)
    reply = await f.on_request(request(headers=[("authorization", "Bearer allow")]))
    assert reply is None if fail_open else (reply.status, reply.flag) == (403, "UAEX")


async def test_checks_are_spread_over_the_endpoints(service) -> None:
    other = await auth_services.ExtAuthService().start()
    try:
        f = ExtAuth([ConnectionPool("127.0.0.1", service.port), ConnectionPool("127.0.0.1", other.port)])
        for _ in range(4):
            await f.on_request(request(headers=[("authorization", "Bearer allow")]))
        assert (len(service.requests), len(other.requests)) == (2, 2)
    finally:
        await other.stop()


# --------------------------------------------------------------------------- config


GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: meshgate
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: auth, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: auth}
spec: {ports: [{name: http, port: 80, targetPort: 9000}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: auth, labels: {kubernetes.io/service-name: auth}}
addressType: IPv4
ports: [{name: http, port: 9000}]
endpoints: [{addresses: [127.0.0.1]}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: auth-backend}
spec: {endpoints: [{ip: {address: 127.0.0.2, port: 9100}}]}
"""


def policy(ext_auth: str) -> str:
    body = textwrap.indent(textwrap.dedent(ext_auth).strip("\n"), "    ")
    return (
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: SecurityPolicy\n"
        "metadata: {name: p}\nspec:\n"
        "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]\n"
        "  extAuth:\n" + body + "\n"
    )


def errors(ext_auth: str) -> list[str]:
    result = load_texts([("t.yaml", policy(ext_auth))])
    return [str(e) for e in result.errors]


def compiled(ext_auth: str) -> ExtAuth:
    return compiled_filter([("g.yaml", GATEWAY), ("t.yaml", policy(ext_auth))], ExtAuth)


def test_builds_from_backend_refs_with_envoy_gateway_defaults() -> None:
    f = compiled("http: {backendRefs: [{name: auth, port: 80}]}")
    assert f.describe() == {
        "type": "ExtAuth",
        "service": ["127.0.0.1:9000"],
        "path": "",
        "headersToExtAuth": ["authorization"],
        "headersToBackend": [],
        "timeout": 10.0,
        "failOpen": False,
    }
    assert [type(s).__name__ for s in f.services()] == ["ConnectionPool"]


def test_builds_from_a_backend_and_the_deprecated_backend_ref() -> None:
    f = compiled(
        """
        http:
          backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: auth-backend}]
          path: /check
          headersToBackend: [x-user]
        headersToExtAuth: [cookie]
        timeout: 250ms
        failOpen: true
        """
    )
    d = f.describe()
    assert (d["service"], d["path"], d["headersToBackend"], d["timeout"], d["failOpen"]) == (
        ["127.0.0.2:9100"], "/check", ["x-user"], 0.25, True,
    )
    assert d["headersToExtAuth"] == ["authorization", "cookie"]
    assert compiled("http: {backendRef: {name: auth, port: 80}}").describe()["service"] == ["127.0.0.1:9000"]


def test_a_missing_service_rejects_the_config_with_its_path() -> None:
    result = load_texts([("g.yaml", GATEWAY), ("t.yaml", policy("http: {backendRefs: [{name: nope, port: 80}]}"))])
    with pytest.raises(ConfigInvalid) as exc:
        compile_snapshot(result.resources)
    assert "spec.extAuth.http.backendRefs[0]" in str(exc.value)


@pytest.mark.parametrize(
    ("spec", "where", "message"),
    [
        ("grpc: {backendRefs: [{name: a, port: 1}]}", "spec.extAuth.grpc", "gRPC external authorization is not supported"),
        ("headersToExtAuth: [a]", "spec.extAuth", "one of grpc or http must be specified"),
        ("http: {path: /x}", "spec.extAuth.http", "backendRef or backendRefs needs to be set"),
        ("http: {backendRefs: [{kind: Pod, name: a}]}", "spec.extAuth.http.backendRefs[0].kind", "only supports Service"),
        ("http: {backendRefs: [{group: x.io, kind: Service, name: a, port: 1}]}", "spec.extAuth.http.backendRefs[0].group", "only supports Core"),
        ("http: {backendRefs: [{name: a}]}", "spec.extAuth.http.backendRefs[0].port", "required"),
        ("http: {backendRefs: [{name: a, port: 1}], path: auth}", "spec.extAuth.http.path", "must start with /"),
        ("http: {backendRefs: [{name: a, port: 1}], path: '/a?b=1'}", "spec.extAuth.http.path", "no query"),
        ("http: {backendRefs: [{name: a, port: 1}]}\nbodyToExtAuth: {maxRequestBytes: 10}", "spec.extAuth.bodyToExtAuth", "not supported"),
        ("http: {backendRefs: [{name: a, port: 1}]}\nrecomputeRoute: true", "spec.extAuth.recomputeRoute", "not supported"),
        ("http: {backendRefs: [{name: a, port: 1}]}\ncontextExtensions: [{name: a}]", "spec.extAuth.contextExtensions", "not supported"),
        ("http: {backendRefs: [{name: a, port: 1}], backendSettings: {}}", "spec.extAuth.http.backendSettings", "not supported"),
        ("http: {backendRefs: [{name: a, port: 1, fallback: true}]}", "spec.extAuth.http.backendRefs[0].fallback", "not supported"),
        ("http: {backendRefs: [{name: a, port: 1}]}\ntimeout: 0s", "spec.extAuth.timeout", "greater than 0"),
        ("http: {backendRefs: [{name: a, port: 1}]}\ntimeout: 10", "spec.extAuth.timeout", ""),
    ],
)
def test_model_rules_name_the_field(spec: str, where: str, message: str) -> None:
    (error,) = errors(spec)
    assert f":{where}:" in error, error
    assert message in error, error


def test_recompute_route_false_is_accepted() -> None:
    assert errors("http: {backendRefs: [{name: a, port: 1}]}\nrecomputeRoute: false\nfailOpen: false") == []
