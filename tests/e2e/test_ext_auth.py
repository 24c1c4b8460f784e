"""SecurityPolicy extAuth end to end: a real ``meshgate gateway`` between a client, an
external authorization service (``auth_services.py ext-auth``) and an echo upstream
that shows what reached it.

One gateway, three routes: ``/api`` (failOpen false, path prefix ``/auth``,
headersToBackend x-user and x-tenant), ``/open`` (failOpen true) and ``/public`` (no
policy). The auth service is stopped in the middle of the last test.
"""

from __future__ import annotations

import re

import httpx
import pytest
from auth_services import AuthServiceProcess
from harness import (
    EchoServer,
    Gateway,
    backend_doc,
    free_port,
    gateway_doc,
    policy_doc,
    prefix_rule,
    route_doc,
    service_docs,
)



def ext_auth_policy(name: str, route: str, **ext_auth) -> dict:
    return policy_doc("SecurityPolicy", name, {"extAuth": ext_auth}, route)


def auth_ref() -> dict:
    return {"group": "gateway.envoyproxy.io", "kind": "Backend", "name": "ext-auth"}


@pytest.fixture(scope="module")
def setup():
    echo = EchoServer("echo-0").start()
    auth = AuthServiceProcess("ext-auth").start()
    port = free_port()
    docs = [
        gateway_doc(port),
        *service_docs("app", [echo]),
        backend_doc("ext-auth", auth.port),
        route_doc("api", [prefix_rule("/api", "app")]),
        route_doc("open", [prefix_rule("/open", "app")]),
        route_doc("public", [prefix_rule("/public", "app")]),
        ext_auth_policy(
            "api-auth",
            "api",
            http={"backendRefs": [auth_ref()], "path": "/auth", "headersToBackend": ["x-user", "x-tenant"]},
            headersToExtAuth=["x-forwarded-for", "cookie"],
            timeout="1s",
        ),
        ext_auth_policy("open-auth", "open", http={"backendRefs": [auth_ref()]}, failOpen=True, timeout="1s"),
    ]
    gw = Gateway(docs).start()
    try:
        yield {"gw": gw, "echo": echo, "auth": auth, "base": f"http://127.0.0.1:{port}"}
    finally:
        gw.cleanup()
        auth.stop()
        echo.stop()


def upstream_headers(response: httpx.Response) -> dict[str, list[str]]:
    return {k.lower(): v for k, v in response.json()["headers"].items()}


def test_allowed_request_reaches_the_upstream_with_the_services_headers(setup) -> None:
    auth = setup["auth"]
    auth.get("/__reset")
    r = httpx.get(
        f"{setup['base']}/api/items?page=2",
        headers={"Authorization": "Bearer allow", "X-User": "mallory", "Cookie": "s=1", "X-Other": "o"},
    )
    assert r.status_code == 200, r.text
    seen = upstream_headers(r)
    assert seen["x-user"] == ["alice"]  # the service's value replaced the client's
    assert seen["x-tenant"] == ["t1"]
    assert "x-not-listed" not in seen
    (check,) = auth.get("/__requests")["requests"]
    assert check["method"] == "GET"
    assert check["target"] == "/auth/api/items?page=2"
    headers = dict(check["headers"])
    assert headers["authorization"] == "Bearer allow"
    assert headers["cookie"] == "s=1"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert "x-other" not in headers


def test_denied_request_gets_the_services_answer_and_never_reaches_the_upstream(setup) -> None:
    echo = setup["echo"]
    echo.mark()
    r = httpx.get(f"{setup['base']}/api/secret", headers={"Authorization": "Bearer deny"})
    assert r.status_code == 403
    assert r.json() == {"error": "forbidden by policy"}
    assert r.headers["x-deny-reason"] == "policy"

    r = httpx.get(f"{setup['base']}/api/secret")
    assert r.status_code == 401
    assert r.text == "who are you?"
    assert r.headers["www-authenticate"] == 'Bearer realm="ext"'

    r = httpx.get(f"{setup['base']}/api/secret", headers={"Authorization": "Bearer redirect"})
    assert r.status_code == 302
    assert r.headers["location"].startswith("https://login.example/")
    assert echo.count() == 0

    assert httpx.get(f"{setup['base']}/public/x").status_code == 200  # no policy there


def test_auth_failures_are_counted_in_metrics(setup) -> None:
    httpx.get(f"{setup['base']}/api/x", headers={"Authorization": "Bearer deny"})
    text = setup["gw"].admin("/metrics").text
    m = re.search(r'meshgate_auth_failures_total\{method="ext_auth",reason="denied"\} (\d+)', text)
    assert m and int(m.group(1)) >= 1, text[-2000:]


def test_service_error_and_outage_refuse_unless_fail_open(setup) -> None:
    base = setup["base"]
    # A 5xx from the service is an error, not a denial: 403 closed, allowed open.
    r = httpx.get(f"{base}/api/x", headers={"Authorization": "Bearer boom"})
    assert (r.status_code, r.text) == (403, "")
    assert httpx.get(f"{base}/open/x", headers={"Authorization": "Bearer boom"}).status_code == 200
    # Slower than the 1s timeout.
    r = httpx.get(f"{base}/api/x", headers={"Authorization": "Bearer slow"}, timeout=5)
    assert r.status_code == 403
    assert httpx.get(f"{base}/open/x", headers={"Authorization": "Bearer slow"}, timeout=5).status_code == 200

    setup["auth"].stop()  # the service goes away
    r = httpx.get(f"{base}/api/x", headers={"Authorization": "Bearer allow"})
    assert (r.status_code, r.text) == (403, "")
    r = httpx.get(f"{base}/open/x", headers={"Authorization": "Bearer allow"})
    assert r.status_code == 200
    assert "x-user" not in upstream_headers(r)  # let through, but nothing vouched for it
    text = setup["gw"].admin("/metrics").text
    assert 'meshgate_auth_failures_total{method="ext_auth",reason="unavailable"}' in text
