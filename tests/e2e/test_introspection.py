"""IntrospectionPolicy end to end: a real ``meshgate gateway``, an OAuth2 introspection
endpoint (``auth_services.py introspection``, which counts its calls) and an echo
upstream.

Routes: ``/api`` needs scope ``read`` and copies ``sub`` to ``x-sub``; ``/admin`` needs
scope ``admin`` and answers 401 (not 503) while the endpoint is down. The endpoint is
stopped in the last test.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
from auth_services import AuthServiceProcess
from harness import (
    EchoServer,
    Gateway,
    free_port,
    gateway_doc,
    policy_doc,
    prefix_rule,
    route_doc,
    service_docs,
)

EXPIRING = 5.0  # seconds the `expiring` token lives after the endpoint starts


def introspection_policy(name: str, route: str, endpoint: str, **spec) -> dict:
    credentials = {"name": "introspection-client"}
    return policy_doc(
        "IntrospectionPolicy", name, {"endpoint": endpoint, "clientCredentialsRef": credentials, **spec}, route
    )


@pytest.fixture(scope="module")
def setup():
    echo = EchoServer("echo-0").start()
    server = AuthServiceProcess("introspection", "--expiring-seconds", str(EXPIRING)).start()
    endpoint = f"{server.url}/oauth2/introspect"
    port = free_port()
    docs = [
        gateway_doc(port),
        *service_docs("app", [echo]),
        route_doc("api", [prefix_rule("/api", "app")]),
        route_doc("admin", [prefix_rule("/admin", "app")]),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "introspection-client", "namespace": "default"},
            "stringData": {"client_id": "gateway", "client_secret": "s3cret:&+"},
        },
        introspection_policy(
            "api", "api", endpoint, requiredScopes=["read"], claimToHeaders=[{"header": "x-sub", "claim": "sub"}]
        ),
        introspection_policy("admin", "admin", endpoint, requiredScopes=["admin"], unavailableStatus=401),
    ]
    gw = Gateway(docs).start()
    try:
        yield {"gw": gw, "echo": echo, "server": server, "base": f"http://127.0.0.1:{port}"}
    finally:
        gw.cleanup()
        server.stop()
        echo.stop()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def calls(setup, token: str) -> int:
    return setup["server"].get("/__count")["by_token"].get(token, 0)


def test_active_token_passes_and_is_introspected_once(setup) -> None:
    base = setup["base"]
    with httpx.Client() as client:
        for i in range(10):
            r = client.get(f"{base}/api/items/{i}", headers={**bearer("good"), "X-Sub": "mallory"})
            assert r.status_code == 200, r.text
            headers = {k.lower(): v for k, v in r.json()["headers"].items()}
            assert headers["x-sub"] == ["alice"]
    assert calls(setup, "good") == 1


def test_cached_answer_lasts_until_exp_then_the_token_is_refused(setup) -> None:
    base = setup["base"]
    with httpx.Client() as client:
        for _ in range(5):
            assert client.get(f"{base}/api/x", headers=bearer("expiring")).status_code == 200
        assert calls(setup, "expiring") == 1
        # The token's exp is EXPIRING seconds after the endpoint started: wait it out.
        deadline = time.monotonic() + EXPIRING + 5
        while True:
            r = client.get(f"{base}/api/x", headers=bearer("expiring"))
            if r.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert calls(setup, "expiring") == 2  # asked again only once the cached answer ran out


def test_inactive_missing_and_wrong_scope(setup) -> None:
    base = setup["base"]
    echo = setup["echo"]
    echo.mark()
    r = httpx.get(f"{base}/api/x", headers=bearer("never-issued"))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    r = httpx.get(f"{base}/api/x")
    assert (r.status_code, r.headers["www-authenticate"]) == (401, "Bearer")
    r = httpx.get(f"{base}/admin/x", headers=bearer("good"))
    assert r.status_code == 403
    assert r.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="admin"'
    assert echo.count() == 0


def test_endpoint_down_answers_the_configured_status_and_metrics_count_it(setup) -> None:
    base = setup["base"]
    setup["server"].stop()
    # A token never seen: nothing cached to fall back on.
    assert httpx.get(f"{base}/api/x", headers=bearer("fresh")).status_code == 503
    r = httpx.get(f"{base}/admin/x", headers=bearer("fresh"))
    assert (r.status_code, r.headers["www-authenticate"]) == (401, "Bearer")
    # A cached active answer still serves while the endpoint is away.
    assert httpx.get(f"{base}/api/x", headers=bearer("good")).status_code == 200

    text = setup["gw"].admin("/metrics").text
    counted = dict(re.findall(r'meshgate_auth_failures_total\{method="oauth2_introspection",reason="(\w+)"\} (\d+)', text))
    assert int(counted["unavailable"]) >= 2
    assert int(counted["inactive"]) >= 1
    assert int(counted["insufficient_scope"]) >= 1
    assert int(counted["missing"]) >= 1
