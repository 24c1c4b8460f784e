"""SecurityPolicy ``authorization``: Envoy Gateway's rule semantics (first match wins,
default Deny, AND across principal fields, OR inside a list), each principal kind
(CIDR v4/v6, headers, JWT claims nested and array, scopes as string or list, consumers),
the 403 reply and its count, and the model's validation."""

from __future__ import annotations

import textwrap

import pytest
from pydantic import ValidationError

from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.lookup import find_match
from meshgate.config.errors import ConfigInvalid
from meshgate.config.loader import load_texts
from meshgate.config.models.security.authorization import Authorization as Config
from meshgate.filters.security.authorization import (
    Authorization,
    CompiledRule,
    client_address,
)
from meshgate.filters.security.base import AUTH_FAILURES
from meshgate.http.headers import Headers
from meshgate.proxy.context import LocalReply, RequestContext


def authz(spec: dict) -> Authorization:
    cfg = Config.model_validate(spec)
    rules = tuple(CompiledRule(r, r.name or f"rule-{i}") for i, r in enumerate(cfg.rules))
    return Authorization(rules, cfg.defaultAction == "Allow")


def request(
    *,
    method: str = "GET",
    ip: str = "10.1.2.3",
    headers: list[tuple[str, str]] | None = None,
    claims: dict | None = None,
    consumer: str | None = None,
) -> RequestContext:
    ctx = RequestContext(
        method, "/", "/", "", Headers.from_pairs(headers or []), "gw", "gw", "http", "1.1",
        ip, 40000, 80, "req-1", 0.0,
    )
    ctx.claims = claims
    ctx.consumer = consumer
    return ctx


def allowed(f: Authorization, **kw) -> bool:
    reply = f.on_request(request(**kw))
    if reply is None:
        return True
    assert isinstance(reply, LocalReply)
    assert reply.status == 403
    assert reply.body == b"RBAC: access denied"
    return False


def rule(action: str = "Allow", **principal) -> dict:
    return {"action": action, "principal": principal}


# --- rule order and defaults ----------------------------------------------------------


def test_no_rules_and_no_default_denies_everything():
    assert not allowed(authz({}))


def test_default_allow_without_rules():
    assert allowed(authz({"defaultAction": "Allow"}))


def test_first_matching_rule_wins():
    allow_first = authz({
        "rules": [rule("Allow", clientCIDRs=["10.0.0.0/8"]), rule("Deny", clientCIDRs=["10.1.0.0/16"])],
    })
    deny_first = authz({
        "rules": [rule("Deny", clientCIDRs=["10.1.0.0/16"]), rule("Allow", clientCIDRs=["10.0.0.0/8"])],
        "defaultAction": "Allow",
    })
    assert allowed(allow_first, ip="10.1.2.3")
    assert not allowed(deny_first, ip="10.1.2.3")
    # Not matched by the Deny rule: the Allow rule decides.
    assert allowed(deny_first, ip="10.9.9.9")


def test_unmatched_request_gets_the_default_action():
    deny_default = authz({"rules": [rule("Allow", clientCIDRs=["192.168.0.0/16"])]})
    allow_default = authz({
        "rules": [rule("Deny", clientCIDRs=["192.168.0.0/16"])], "defaultAction": "Allow",
    })
    assert not allowed(deny_default, ip="10.1.2.3")
    assert allowed(allow_default, ip="10.1.2.3")
    assert not allowed(allow_default, ip="192.168.3.4")


def test_denial_is_counted_as_authorization_denied():
    before = AUTH_FAILURES.get(("authorization", "denied"), 0)
    assert not allowed(authz({}))
    assert AUTH_FAILURES[("authorization", "denied")] == before + 1


def test_operation_methods_and_rule_without_principal():
    f = authz({
        "rules": [
            {"action": "Allow", "operation": {"methods": ["GET", "HEAD"]}},
            {"action": "Allow", "operation": {"methods": ["POST"]},
             "principal": {"headers": [{"name": "x-role", "values": ["writer"]}]}},
        ],
    })
    assert allowed(f, method="GET")
    assert allowed(f, method="HEAD")
    assert not allowed(f, method="DELETE")
    assert not allowed(f, method="POST")
    assert allowed(f, method="POST", headers=[("X-Role", "writer")])


# --- client CIDRs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "ok"),
    [
        ("10.0.0.1", True),
        ("10.255.255.255", True),
        ("11.0.0.1", False),
        ("192.168.1.77", True),  # host bits in the CIDR are ignored, as Go's ParseCIDR does
        ("192.168.2.1", False),
        ("2001:db8::1", True),
        ("2001:db8:ffff::1", True),
        ("2001:db9::1", False),
        ("::ffff:10.0.0.7", True),  # a dual-stack socket's IPv4-mapped address is IPv4
        ("fe80::1%eth0", False),
        ("not-an-ip", False),
        ("", False),
    ],
)
def test_client_cidrs_v4_and_v6(ip, ok):
    f = authz({"rules": [rule(clientCIDRs=["10.0.0.0/8", "192.168.1.5/24", "2001:db8::/32"])]})
    assert allowed(f, ip=ip) is ok


def test_cidr_any_v6_does_not_match_v4():
    f = authz({"rules": [rule(clientCIDRs=["::/0"])]})
    assert allowed(f, ip="::1")
    assert not allowed(f, ip="127.0.0.1")


def test_client_address_parsing():
    assert client_address("1.2.3.4") == (4, 0x01020304)
    assert client_address("::ffff:1.2.3.4") == (4, 0x01020304)
    assert client_address("::1") == (6, 1)
    assert client_address("1.2.3") is None


# --- headers --------------------------------------------------------------------------


def test_headers_all_must_match_any_value_each():
    f = authz({"rules": [rule(headers=[
        {"name": "X-Team", "values": ["ops", "sre"]},
        {"name": "x-env", "values": ["prod"]},
    ])]})
    assert allowed(f, headers=[("x-team", "sre"), ("X-Env", "prod")])
    assert not allowed(f, headers=[("x-team", "sre")])
    assert not allowed(f, headers=[("x-team", "dev"), ("x-env", "prod")])
    assert not allowed(f, headers=[("x-team", "SRE"), ("x-env", "prod")])  # values are exact


def test_repeated_header_is_matched_joined_as_envoy_does():
    f = authz({"rules": [rule(headers=[{"name": "x-team", "values": ["ops", "ops,sre"]}])]})
    assert allowed(f, headers=[("x-team", "ops"), ("x-team", "sre")])
    f = authz({"rules": [rule(headers=[{"name": "x-team", "values": ["ops"]}])]})
    assert not allowed(f, headers=[("x-team", "ops"), ("x-team", "sre")])


def test_absent_header_never_matches_even_an_empty_value():
    f = authz({"rules": [rule(headers=[{"name": "x-team", "values": [""]}])]})
    assert not allowed(f)
    assert allowed(f, headers=[("x-team", "")])


# --- JWT claims and scopes ------------------------------------------------------------

CLAIMS = {
    "sub": "alice",
    "iss": "https://idp.example",
    "org": {"dept": "eng", "unit": {"code": "42"}},
    "groups": ["dev", "admins"],
    "level": 3,
    "scope": "read write",
}


def jwt_rule(action: str = "Allow", **jwt) -> dict:
    return rule(action, jwt={"provider": "idp", **jwt})


@pytest.mark.parametrize(
    ("claims", "ok"),
    [
        ([{"name": "sub", "values": ["alice", "bob"]}], True),
        ([{"name": "sub", "values": ["bob"]}], False),
        ([{"name": "org.dept", "values": ["eng"]}], True),  # nested, dotted path
        ([{"name": "org.unit.code", "values": ["42"]}], True),
        ([{"name": "org.unit.code", "values": ["4"]}], False),
        ([{"name": "org.missing", "values": ["eng"]}], False),
        ([{"name": "sub.deeper", "values": ["alice"]}], False),  # path through a string
        ([{"name": "groups", "valueType": "StringArray", "values": ["admins"]}], True),
        ([{"name": "groups", "valueType": "StringArray", "values": ["ops", "dev"]}], True),
        ([{"name": "groups", "valueType": "StringArray", "values": ["ops"]}], False),
        # The value type must agree with the claim, as in Envoy's metadata matchers.
        ([{"name": "groups", "values": ["admins"]}], False),
        ([{"name": "sub", "valueType": "StringArray", "values": ["alice"]}], False),
        ([{"name": "level", "values": ["3"]}], False),  # not a string claim
        # Every claim must match.
        ([{"name": "sub", "values": ["alice"]}, {"name": "org.dept", "values": ["eng"]}], True),
        ([{"name": "sub", "values": ["alice"]}, {"name": "org.dept", "values": ["ops"]}], False),
    ],
)
def test_jwt_claims(claims, ok):
    f = authz({"rules": [jwt_rule(claims=claims)]})
    assert allowed(f, claims=CLAIMS) is ok


@pytest.mark.parametrize(
    ("token_claims", "scopes", "ok"),
    [
        ({"scope": "read write"}, ["read"], True),
        ({"scope": "read write"}, ["read", "write"], True),  # all scopes required
        ({"scope": "read write"}, ["read", "admin"], False),
        ({"scope": "readwrite"}, ["read"], False),  # whole words only
        ({"scope": ["read", "write"]}, ["write"], True),  # a list
        ({"scp": ["read", "write"]}, ["write"], True),  # Azure AD / Okta `scp`
        ({"scp": "read write"}, ["write"], True),
        ({"scope": "read", "scp": ["write"]}, ["write"], False),  # `scope` wins when present
        ({}, ["read"], False),
        ({"scope": 7}, ["read"], False),
    ],
)
def test_jwt_scopes(token_claims, scopes, ok):
    f = authz({"rules": [jwt_rule(scopes=scopes)]})
    assert allowed(f, claims=token_claims) is ok


def test_claims_and_scopes_are_anded():
    f = authz({"rules": [jwt_rule(claims=[{"name": "sub", "values": ["alice"]}], scopes=["admin"])]})
    assert not allowed(f, claims=CLAIMS)
    assert allowed(f, claims={**CLAIMS, "scope": "admin"})


def test_jwt_rule_without_claims_on_the_request_does_not_match():
    deny_rule = authz({
        "rules": [jwt_rule("Deny", claims=[{"name": "sub", "values": ["mallory"]}])],
        "defaultAction": "Allow",
    })
    allow_rule = authz({"rules": [jwt_rule(scopes=["read"])]})
    assert allowed(deny_rule, claims=None)  # a Deny rule needing claims does not match either
    assert not allowed(allow_rule, claims=None)
    assert not allowed(deny_rule, claims={"sub": "mallory"})


# --- consumers (meshgate extension) and combinations -----------------------------------


def test_consumers():
    f = authz({"rules": [rule(consumers=["alice", "bob"])]})
    assert allowed(f, consumer="alice")
    assert not allowed(f, consumer="carol")
    assert not allowed(f, consumer=None)


def test_all_principal_fields_must_match():
    f = authz({"rules": [rule(
        clientCIDRs=["10.0.0.0/8"],
        headers=[{"name": "x-team", "values": ["ops"]}],
        jwt={"provider": "idp", "claims": [{"name": "org.dept", "values": ["eng"]}]},
        consumers=["alice"],
    )]})
    ok = dict(ip="10.0.0.1", headers=[("x-team", "ops")], claims=CLAIMS, consumer="alice")
    assert allowed(f, **ok)
    assert not allowed(f, **{**ok, "ip": "11.0.0.1"})
    assert not allowed(f, **{**ok, "headers": []})
    assert not allowed(f, **{**ok, "claims": {"org": {"dept": "ops"}}})
    assert not allowed(f, **{**ok, "consumer": "bob"})


def test_describe_names_rules():
    f = authz({"rules": [
        {"name": "ops", "action": "Allow", "principal": {"clientCIDRs": ["10.0.0.0/8"]}},
        {"action": "Deny", "operation": {"methods": ["DELETE"]}},
    ]})
    d = f.describe()
    assert d["type"] == "authorization"
    assert d["defaultAction"] == "Deny"
    assert [r["name"] for r in d["rules"]] == ["ops", "rule-1"]
    assert d["rules"][0]["principal"] == {"clientCIDRs": ["10.0.0.0/8"]}
    assert d["rules"][1]["methods"] == ["DELETE"]


# --- model validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"rules": [{"action": "Maybe"}]}, "'Allow' or 'Deny'"),
        ({"defaultAction": "allow"}, "'Allow' or 'Deny'"),
        ({"rules": [rule()]}, "at least one of clientCIDRs, jwt, headers or consumers"),
        ({"rules": [rule(clientCIDRs=["10.0.0.1"])]}, "is not a CIDR"),
        ({"rules": [rule(clientCIDRs=["10.0.0.0/33"])]}, "is not a CIDR"),
        ({"rules": [rule(clientCIDRs=[])]}, "at least 1 item"),
        ({"rules": [rule(jwt={"provider": "idp"})]}, "at least one of claims or scopes"),
        ({"rules": [rule(jwt={"provider": "idp", "claims": [
            {"name": "a", "valueType": "Number", "values": ["1"]}]})]}, "'String' or 'StringArray'"),
        ({"rules": [rule(headers=[{"name": "x", "values": []}])]}, "at least 1 item"),
        ({"rules": [{"action": "Allow", "operation": {"methods": ["FETCH"]}}]}, "'GET'"),
        ({"rules": [{"action": "Allow", "operation": {"methods": ["GET"], "path": {"value": "/"}}}]},
         "path is not supported"),
        ({"rules": [rule(clientIPGeoLocations=[{"country": "US"}])]}, "not supported"),
        ({"rules": [rule(clientCIDR=["10.0.0.0/8"])]}, "Extra inputs"),
    ],
)
def test_invalid_specs(spec, message):
    with pytest.raises(ValidationError) as e:
        Config.model_validate(spec)
    assert message in str(e.value)


# --- compiled from a SecurityPolicy ---------------------------------------------------

BASE = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: meshgate
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: b}
spec:
  endpoints: [{ip: {address: 10.0.0.1, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: b, port: 8080}]
"""


def policy(spec: str) -> str:
    return (
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: SecurityPolicy\n"
        "metadata: {name: sp}\nspec:\n"
        "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]\n"
        + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n"
    )


def test_policy_puts_authorization_in_front_of_the_rule():
    result = load_texts([("t.yaml", BASE + "---\n" + policy("""
        authorization:
          rules:
          - {name: office, action: Allow, principal: {clientCIDRs: [10.0.0.0/8]}}
    """))])
    assert not result.errors, [str(e) for e in result.errors]
    snapshot = compile_snapshot(result.resources)
    match = find_match(snapshot, 80, "example.com", "/")
    assert match.rule.security == "default/sp"
    (f,) = [f for f in match.rule.filters if isinstance(f, Authorization)]
    assert f.rules[0].name == "office"
    assert not f.default_allow


def test_unknown_jwt_provider_is_a_config_error_when_the_policy_lists_providers():
    """Checked only when the policy's jwt section lists providers (claims may also come
    from an IntrospectionPolicy)."""
    result = load_texts([("t.yaml", BASE + "---\n" + policy("""
        jwt:
          providers:
          - name: idp
            remoteJWKS: {uri: "https://idp.example/jwks"}
        authorization:
          rules:
          - action: Allow
            principal: {jwt: {provider: other, scopes: [read]}}
    """))])
    assert result.errors == []
    with pytest.raises(ConfigInvalid) as e:
        compile_snapshot(result.resources)
    assert "spec.authorization.rules[0].principal.jwt.provider" in str(e.value)
    assert "no jwt provider named 'other'" in str(e.value)


def test_a_jwt_principal_needs_claims_verified_by_its_own_provider():
    cfg = Config.model_validate(
        {
            "defaultAction": "Deny",
            "rules": [
                {"action": "Allow", "principal": {"jwt": {"provider": "partners", "scopes": ["read"]}}}
            ],
        }
    )
    rules = tuple(CompiledRule(r, "r", check_provider=True) for r in cfg.rules)
    f = Authorization(rules, default_allow=False)
    ctx = request(claims={"scope": "read"})
    ctx.auth_provider = "staff"  # same claims, verified by another provider of the policy
    assert f.on_request(ctx) is not None
    ctx = request(claims={"scope": "read"})
    ctx.auth_provider = "partners"
    assert f.on_request(ctx) is None
