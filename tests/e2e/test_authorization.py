"""SecurityPolicy ``authorization`` and ``cors`` end to end: a real ``meshgate gateway``
in front of a real echo upstream, on 127.0.0.1.

- authorization by client CIDR and by header, first match wins, default Deny, the
  RBAC 403, and ``meshgate_auth_failures_total{method="authorization"}`` in /metrics;
- CORS: a preflight from an allowed origin answered at the gateway (never reaching the
  upstream, and before authorization asks for anything); an actual request from an
  allowed origin gets the CORS fields; a disallowed origin gets none and its requests
  go on to the rest of the chain, as with Envoy.

JWT-claim principals are covered by the unit tests (tests/unit/filters/security/).
"""

from __future__ import annotations

import re

import httpx
import pytest
from harness import (
    EchoServer,
    Gateway,
    free_port,
    gateway_doc,
    policy_doc,
    prefix_rule,
    route_doc,
    service_docs,
    serving,
)

APP = "https://app.example.com"


def security_policy(name: str, route: str, spec: dict) -> dict:
    return policy_doc("SecurityPolicy", name, spec, route)


def config(port: int, echo: EchoServer) -> list[dict]:
    return [
        gateway_doc(port),
        *service_docs("echo", [echo]),
        route_doc("local-only", [prefix_rule("/local", "echo")]),
        route_doc("office-only", [prefix_rule("/office", "echo")]),
        route_doc("app", [prefix_rule("/app", "echo")]),
        # Callers on this machine, except the ones flagged; reads only.
        security_policy("local-only", "local-only", {"authorization": {"rules": [
            {"name": "blocked", "action": "Deny",
             "principal": {"headers": [{"name": "x-blocked", "values": ["yes"]}]}},
            {"name": "loopback", "action": "Allow", "operation": {"methods": ["GET", "HEAD"]},
             "principal": {"clientCIDRs": ["127.0.0.0/8", "::1/128"]}},
        ]}}),
        # A network the test client is not on.
        security_policy("office-only", "office-only", {"authorization": {"rules": [
            {"action": "Allow", "principal": {"clientCIDRs": ["10.20.0.0/16", "2001:db8::/32"]}},
        ]}}),
        # A browser app: CORS, and only callers that say who they are.
        security_policy("app", "app", {
            "cors": {
                "allowOrigins": ["https://*.example.com", "http://localhost:*"],
                "allowMethods": ["GET", "POST"],
                "allowHeaders": ["x-user", "content-type"],
                "exposeHeaders": ["x-request-id"],
                "maxAge": "10m",
                "allowCredentials": True,
            },
            "authorization": {"rules": [
                {"action": "Allow", "principal": {"headers": [{"name": "x-user", "values": ["alice", "bob"]}]}},
            ]},
        }),
    ]


@pytest.fixture(scope="module")
def served():
    port = free_port()
    with EchoServer() as echo, serving(config(port, echo), port, echo=echo) as gw:
        yield gw


def denied_count(gw: Gateway) -> float:
    text = gw.admin("/metrics").text
    m = re.search(
        r'^meshgate_auth_failures_total\{method="authorization",reason="denied"\} ([0-9.e+]+)$',
        text,
        re.MULTILINE,
    )
    return float(m.group(1)) if m else 0.0


def cors_fields(r: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in r.headers.items() if k.startswith("access-control-")}


# --- authorization --------------------------------------------------------------------


def test_loopback_client_is_allowed_by_cidr(served):
    served.echo.mark()
    r = httpx.get(served.base + "/local/x")
    assert r.status_code == 200
    assert served.echo.count() == 1


def test_first_matching_rule_wins_deny_before_allow(served):
    served.echo.mark()
    before = denied_count(served)
    r = httpx.get(served.base + "/local/x", headers={"x-blocked": "yes"})
    assert r.status_code == 403
    assert r.text == "RBAC: access denied"
    assert served.echo.count() == 0
    assert denied_count(served) == before + 1


def test_no_matching_rule_means_default_deny(served):
    served.echo.mark()
    before = denied_count(served)
    # The Allow rule is for reads: a POST matches nothing.
    assert httpx.post(served.base + "/local/x", content=b"{}").status_code == 403
    # A network the client is not on.
    assert httpx.get(served.base + "/office/x").status_code == 403
    assert served.echo.count() == 0
    assert denied_count(served) == before + 2


def test_header_principal(served):
    assert httpx.get(served.base + "/app/x", headers={"x-user": "alice"}).status_code == 200
    assert httpx.get(served.base + "/app/x", headers={"x-user": "mallory"}).status_code == 403
    assert httpx.get(served.base + "/app/x").status_code == 403


def test_config_dump_shows_the_compiled_rules(served):
    dump = served.admin("/config_dump").text
    assert '"loopback"' in dump and '"blocked"' in dump


# --- CORS -----------------------------------------------------------------------------


def test_preflight_from_allowed_origin_is_answered_before_authorization(served):
    served.echo.mark()
    r = httpx.options(served.base + "/app/x", headers={
        "Origin": "https://web.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-user, content-type",
    })
    # No x-user on a preflight (browsers never send credentials there): still answered.
    assert r.status_code == 200
    assert cors_fields(r) == {
        "access-control-allow-origin": "https://web.example.com",
        "access-control-allow-methods": "GET, POST",
        "access-control-allow-headers": "x-user, content-type",
        "access-control-expose-headers": "x-request-id",
        "access-control-max-age": "600",
        "access-control-allow-credentials": "true",
    }
    assert "Origin" in r.headers.get("vary", "")
    assert served.echo.count() == 0


def test_preflight_from_disallowed_origin_gets_no_cors_fields(served):
    for origin in ("https://evil.example.com.attacker.net", "https://attacker.net?x=.example.com"):
        r = httpx.options(served.base + "/app/x", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
        })
        # Passed on as Envoy does: here authorization refuses it (no x-user).
        assert r.status_code == 403
        assert cors_fields(r) == {}


def test_actual_request_from_allowed_origin_gets_cors_fields(served):
    r = httpx.post(
        served.base + "/app/x", content=b"{}",
        headers={"Origin": "http://localhost:5173", "x-user": "bob", "content-type": "application/json"},
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["access-control-expose-headers"] == "x-request-id"
    assert "access-control-allow-methods" not in r.headers


def test_actual_request_from_disallowed_origin_is_forwarded_without_cors_fields(served):
    served.echo.mark()
    r = httpx.get(served.base + "/app/x", headers={"Origin": "https://attacker.net", "x-user": "alice"})
    assert r.status_code == 200
    assert cors_fields(r) == {}
    assert served.echo.count() == 1


def test_refusal_to_an_allowed_origin_is_readable_by_the_page(served):
    """A 403 from a later stage still carries the CORS fields, so the page sees the 403
    rather than an opaque network error (Envoy's CORS filter encodes local replies too)."""
    r = httpx.get(served.base + "/app/x", headers={"Origin": APP})
    assert r.status_code == 403
    assert r.headers.get("access-control-allow-origin") == APP
