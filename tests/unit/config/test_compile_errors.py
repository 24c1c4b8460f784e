"""Configs that cannot be served are rejected whole, with every reason and where it is."""

from __future__ import annotations

import pytest

from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.lookup import find_match
from meshgate.config.errors import ConfigInvalid
from meshgate.config.loader import load_texts


def gateway(name: str, listeners: str, namespace: str = "default") -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  gatewayClassName: meshgate
  listeners:
{listeners}
"""


def load(*docs):
    result = load_texts([("cfg.yaml", "\n---\n".join(docs))])
    assert not result.errors, [str(e) for e in result.errors]
    return result.resources


def errors_of(*docs, gateways=None):
    with pytest.raises(ConfigInvalid) as info:
        compile_snapshot(load(*docs), gateways=gateways)
    return info.value.errors


def test_two_gateways_with_the_same_port_and_no_hostname_conflict():
    (err,) = errors_of(
        gateway("one", "  - {name: http, port: 80, protocol: HTTP}"),
        gateway("two", "  - {name: web, port: 80, protocol: HTTP}"),
    )
    assert (err.file, err.document, err.kind_name, err.path) == (
        "cfg.yaml", 2, "Gateway/default/two", "spec.listeners[0]"
    )
    assert "conflicts with listener default/one/http" in err.message


def test_same_port_same_hostname_conflicts_different_hostnames_do_not():
    (err,) = errors_of(
        gateway("one", "  - {name: a, port: 80, protocol: HTTP, hostname: x.com}"),
        gateway("two", "  - {name: b, port: 80, protocol: HTTP, hostname: x.com}"),
    )
    assert "hostname x.com" in err.message
    s = compile_snapshot(
        load(
            gateway("one", "  - {name: a, port: 80, protocol: HTTP, hostname: x.com}"),
            gateway("two", "  - {name: b, port: 80, protocol: HTTP, hostname: '*.x.com'}"),
            gateway("three", "  - {name: c, port: 80, protocol: HTTP}"),
        )
    )
    router = s.ports[80]
    assert router.select("x.com").gateway == "default/one"
    assert router.select("a.x.com").gateway == "default/two"
    assert router.select("y.com").gateway == "default/three"


def test_selecting_gateways_avoids_the_conflict():
    docs = (
        gateway("one", "  - {name: http, port: 80, protocol: HTTP}"),
        gateway("two", "  - {name: web, port: 80, protocol: HTTP}"),
    )
    s = compile_snapshot(load(*docs), gateways={"default/two"})
    assert s.ports[80].default_listener.gateway == "default/two"
    assert [g["name"] for g in s.dump["gateways"]] == ["default/two"]


def test_selecting_an_undefined_gateway_is_an_error():
    (err,) = errors_of(
        gateway("one", "  - {name: http, port: 80, protocol: HTTP}"), gateways={"default/nope"}
    )
    assert err.kind_name == "Gateway/default/nope"
    assert "no such Gateway" in err.message


def test_https_listener_with_a_missing_certificate_is_invalid():
    listeners = """  - name: https
    port: 443
    protocol: HTTPS
    tls: {certificateRefs: [{name: cert}]}"""
    (err,) = errors_of(gateway("tls", listeners))
    assert err.path == "spec.listeners[0].tls.certificateRefs[0]"
    assert err.message == "ResolvedRefs=False (InvalidCertificateRef): Secret default/cert not found"


def test_tls_listener_is_not_supported_yet():
    listeners = """  - name: tls
    port: 443
    protocol: TLS
    tls: {mode: Passthrough}"""
    (err,) = errors_of(gateway("tls", listeners))
    assert err.path == "spec.listeners[0].protocol"
    assert err.message.startswith("protocol TLS is not supported yet")
    assert "TLSRoute" in err.message


HTTP_GW = gateway("gw", "  - {name: http, port: 80, protocol: HTTP}")


def http_route(rule: str, name: str = "r") -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - {rule}
"""


def test_extension_ref_filter_rejects_the_config():
    rule = "filters: [{type: ExtensionRef, extensionRef: {group: meshgate.dev, kind: Plugin, name: p}}]"
    (err,) = errors_of(HTTP_GW, http_route(rule))
    assert (err.kind_name, err.path) == ("HTTPRoute/default/r", "spec.rules[0].filters[0].type")
    assert err.message == "ExtensionRef filters are not supported yet"


def test_every_error_is_reported_at_once():
    ext = "filters: [{type: ExtensionRef, extensionRef: {group: x.dev, kind: P, name: p}}]"
    errs = errors_of(
        HTTP_GW,
        gateway("gw2", "  - {name: http, port: 80, protocol: HTTP}"),
        http_route(ext, name="a"),
        http_route(ext, name="b"),
    )
    assert sorted(e.kind_name for e in errs) == [
        "Gateway/default/gw2",
        "HTTPRoute/default/a",
        "HTTPRoute/default/b",
    ]


def test_retry_codes_take_any_4xx_or_5xx_status():
    # HTTPRouteRetryStatusCode is 400-599: a 429 or a 404 may be retried too.
    s = compile_snapshot(load(HTTP_GW, http_route("retry: {codes: [400, 429, 503, 599]}")))
    assert find_match(s, 80, "h", "/").rule.retry.codes == frozenset({400, 429, 503, 599})


@pytest.mark.parametrize("code", [200, 399, 600])
def test_retry_code_outside_400_599_is_rejected_at_load(code):
    result = load_texts([("cfg.yaml", HTTP_GW + "\n---\n" + http_route(f"retry: {{codes: [503, {code}]}}"))])
    (err,) = result.errors
    assert (err.kind_name, err.path) == ("HTTPRoute/default/r", "spec.rules[0].retry.codes[1]")


def test_retry_defaults():
    s = compile_snapshot(load(HTTP_GW, http_route("retry: {codes: [503]}")))
    retry = find_match(s, 80, "h", "/").rule.retry
    assert (retry.attempts, retry.codes, retry.backoff) == (2, frozenset({503}), 0.025)
    s = compile_snapshot(load(HTTP_GW, http_route("retry: {attempts: 5, backoff: 100ms}")))
    retry = find_match(s, 80, "h", "/").rule.retry
    assert (retry.attempts, retry.codes, retry.backoff) == (5, frozenset(), 0.1)
    s = compile_snapshot(load(HTTP_GW, http_route("matches: []")))
    assert find_match(s, 80, "h", "/").rule.retry is None


def test_timeouts():
    s = compile_snapshot(load(HTTP_GW, http_route("timeouts: {request: 1h30m, backendRequest: 10s}")))
    rule = find_match(s, 80, "h", "/").rule
    assert (rule.timeout_request, rule.timeout_backend) == (5400.0, 10.0)
    s = compile_snapshot(load(HTTP_GW, http_route("timeouts: {request: 0s, backendRequest: 1m}")))
    rule = find_match(s, 80, "h", "/").rule
    assert (rule.timeout_request, rule.timeout_backend) == (None, 60.0)


def test_errors_in_routes_of_other_gateways_still_reject_the_config():
    # A config is valid or not as a whole: `meshgate validate` and every gateway
    # process must agree on it, whichever Gateways a process serves.
    rule = "filters: [{type: ExtensionRef, extensionRef: {group: x.dev, kind: P, name: p}}]"
    other = gateway("other", "  - {name: http, port: 81, protocol: HTTP}")
    route = http_route(rule).replace("{name: gw}", "{name: other}")
    errs = errors_of(HTTP_GW, other, route, gateways={"default/gw"})
    assert [e.path for e in errs] == ["spec.rules[0].filters[0].type"]


def test_version_is_a_content_hash():
    docs = (HTTP_GW, http_route("matches: []"))
    a = compile_snapshot(load(*docs))
    b = compile_snapshot(load(*reversed(docs)))
    c = compile_snapshot(load(HTTP_GW, http_route("timeouts: {request: 1s}")))
    assert a.version == b.version != c.version
    assert len(a.version) == 12 and int(a.version, 16) >= 0
    assert a.dump["version"] == a.version


def test_unsupported_filter_on_a_weight_zero_backend_is_still_an_error():
    rule = (
        "backendRefs: [{name: s, port: 80, weight: 0, filters: "
        "[{type: ExtensionRef, extensionRef: {group: x.dev, kind: P, name: p}}]}]"
    )
    (err,) = errors_of(HTTP_GW, http_route(rule))
    assert err.path == "spec.rules[0].backendRefs[0].filters[0].type"
