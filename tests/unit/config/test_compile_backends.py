"""backendRefs -> clusters and endpoints: Services through targetPort and
EndpointSlices, Envoy Gateway Backends, ReferenceGrants, weights and mirrors."""

from __future__ import annotations

from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.lookup import find_match
from meshgate.config.loader import load_texts

GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: meshgate
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
"""


def route(refs: str, *, namespace: str = "default", filters: str = "") -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: {namespace}}}
spec:
  parentRefs: [{{name: gw, namespace: default}}]
  rules:
  - backendRefs: {refs}
{filters}
"""


def compile_yaml(*docs):
    result = load_texts([("t.yaml", "\n---\n".join(docs))])
    assert not result.errors, [str(e) for e in result.errors]
    return compile_snapshot(result.resources)


def rule_of(snapshot):
    return find_match(snapshot, 80, "h", "/").rule


def endpoints(snapshot, cluster):
    return [(e.host, e.port) for e in snapshot.clusters[cluster].endpoints]


SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports:
  - {name: http, port: 80, targetPort: web-http}
  - {name: admin, port: 9000, targetPort: 9001}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: admin, port: 9001}]
endpoints:
- addresses: [10.0.0.1]
- addresses: [10.0.0.2]
  conditions: {ready: false}
- addresses: [10.0.0.3, 10.0.0.4]
  conditions: {ready: true}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-2, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8081}]
endpoints:
- addresses: [10.0.1.1]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: unrelated, labels: {kubernetes.io/service-name: other}}
addressType: IPv4
ports: [{name: http, port: 1}]
endpoints:
- addresses: [10.9.9.9]
"""


def test_service_port_resolves_through_target_port_name_to_slice_ports():
    s = compile_yaml(GATEWAY, SERVICE, route("[{name: web, port: 80}]"))
    assert rule_of(s).backends[0].cluster == "service/default/web:80"
    # not-ready endpoints are left out; each slice gives its own port number
    assert endpoints(s, "service/default/web:80") == [
        ("10.0.0.1", 8080),
        ("10.0.0.3", 8080),
        ("10.0.0.4", 8080),
        ("10.0.1.1", 8081),
    ]
    assert s.dump["clusters"]["service/default/web:80"]["endpoints"][0] == "10.0.0.1:8080"


def test_the_service_port_name_selects_the_slice_port():
    s = compile_yaml(GATEWAY, SERVICE, route("[{name: web, port: 9000}]"))
    assert endpoints(s, "service/default/web:9000") == [
        ("10.0.0.1", 9001),
        ("10.0.0.3", 9001),
        ("10.0.0.4", 9001),
    ]


def test_unnamed_port_and_slice_without_ports_use_the_numeric_target_port():
    s = compile_yaml(
        GATEWAY,
        """
apiVersion: v1
kind: Service
metadata: {name: one}
spec:
  ports: [{port: 80, targetPort: 3000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: one-a, labels: {kubernetes.io/service-name: one}}
addressType: IPv4
endpoints: [{addresses: [10.1.0.1]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: one-b, labels: {kubernetes.io/service-name: one}}
addressType: FQDN
ports: [{port: 3005}]
endpoints: [{addresses: [one.internal]}]
""",
        route("[{name: one, port: 80}]"),
    )
    assert endpoints(s, "service/default/one:80") == [("10.1.0.1", 3000), ("one.internal", 3005)]


def test_service_without_ready_endpoints_is_a_valid_empty_cluster():
    s = compile_yaml(
        GATEWAY,
        "apiVersion: v1\nkind: Service\nmetadata: {name: idle}\nspec:\n  ports: [{port: 80}]",
        route("[{name: idle, port: 80}]"),
    )
    rule = rule_of(s)
    assert rule.backends[0].cluster == "service/default/idle:80"
    assert s.clusters["service/default/idle:80"].endpoints == ()
    resolved = s.dump["routes"]["default/r"]["parents"][0]["conditions"][1]
    assert resolved["status"] == "True"


def test_missing_service_or_port_is_an_unresolved_ref_not_an_error():
    s = compile_yaml(GATEWAY, SERVICE, route("[{name: nope, port: 80}, {name: web, port: 81}]"))
    rule = rule_of(s)
    assert [(b.cluster, b.weight) for b in rule.backends] == [(None, 1), (None, 1)]
    assert "not found" in rule.backends[0].error
    assert "has no port 81" in rule.backends[1].error
    resolved = s.dump["routes"]["default/r"]["parents"][0]["conditions"][1]
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")


BACKENDS = """
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: ips}
spec:
  endpoints:
  - ip: {address: 192.0.2.10, port: 3000}
  - ip: {address: 192.0.2.11, port: 3001}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: dns}
spec:
  endpoints:
  - fqdn: {hostname: api.example.net, port: 443}
"""


def test_envoy_gateway_backend_gives_ip_and_fqdn_endpoints():
    refs = (
        "[{group: gateway.envoyproxy.io, kind: Backend, name: ips, port: 9},"
        " {group: gateway.envoyproxy.io, kind: Backend, name: dns}]"
    )
    s = compile_yaml(GATEWAY, BACKENDS, route(refs))
    clusters = [b.cluster for b in rule_of(s).backends]
    assert clusters == ["backend/default/ips", "backend/default/dns"]
    # the endpoints' own ports win over the ref's
    assert endpoints(s, "backend/default/ips") == [("192.0.2.10", 3000), ("192.0.2.11", 3001)]
    assert endpoints(s, "backend/default/dns") == [("api.example.net", 443)]


def test_unknown_kind_is_invalid_kind():
    s = compile_yaml(GATEWAY, route("[{group: example.com, kind: Thing, name: x, port: 1}]"))
    assert rule_of(s).backends[0].cluster is None
    resolved = s.dump["routes"]["default/r"]["parents"][0]["conditions"][1]
    assert resolved["reason"] == "InvalidKind"


CROSS = """
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  ports: [{port: 5432}]
"""


def grant(to: str, from_ns: str = "default", from_kind: str = "HTTPRoute") -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: g, namespace: data}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: {from_kind}, namespace: {from_ns}}}]
  to: [{to}]
"""


def cross_ref_cluster(*docs):
    s = compile_yaml(GATEWAY, CROSS, *docs, route("[{name: db, namespace: data, port: 5432}]"))
    return rule_of(s).backends[0], s


def test_cross_namespace_ref_needs_a_reference_grant():
    backend, s = cross_ref_cluster()
    assert backend.cluster is None
    resolved = s.dump["routes"]["default/r"]["parents"][0]["conditions"][1]
    assert resolved["reason"] == "RefNotPermitted"

    assert cross_ref_cluster(grant("{group: '', kind: Service}"))[0].cluster == (
        "service/data/db:5432"
    )
    assert cross_ref_cluster(grant("{group: '', kind: Service, name: db}"))[0].cluster
    # grants that do not cover this ref
    assert cross_ref_cluster(grant("{group: '', kind: Service, name: other}"))[0].cluster is None
    assert cross_ref_cluster(grant("{group: '', kind: Service}", from_ns="x"))[0].cluster is None
    assert cross_ref_cluster(grant("{group: '', kind: Service}", from_kind="GRPCRoute"))[
        0
    ].cluster is None
    assert cross_ref_cluster(grant("{group: '', kind: Secret}"))[0].cluster is None


def test_reference_grant_is_checked_before_existence():
    s = compile_yaml(GATEWAY, route("[{name: ghost, namespace: data, port: 1}]"))
    resolved = s.dump["routes"]["default/r"]["parents"][0]["conditions"][1]
    assert resolved["reason"] == "RefNotPermitted"


def test_weights_zero_weights_dropped_and_all_zero_gives_total_zero():
    two = """
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec: {ports: [{port: 80}]}
"""
    s = compile_yaml(GATEWAY, two, route("[{name: a, port: 80, weight: 3}, {name: b, port: 80}, {name: b, port: 80, weight: 0}]"))
    rule = rule_of(s)
    assert [(b.cluster, b.weight) for b in rule.backends] == [
        ("service/default/a:80", 3),
        ("service/default/b:80", 1),
    ]
    assert rule.total_weight == 4 and not rule.no_backends

    s = compile_yaml(GATEWAY, two, route("[{name: a, port: 80, weight: 0}]"))
    rule = rule_of(s)
    assert rule.backends == () and rule.total_weight == 0 and not rule.no_backends


def test_clusters_are_shared_between_rules_and_routes():
    doc = """
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {ports: [{port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /x}}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {value: /y}}]
    backendRefs: [{name: a, port: 80}]
"""
    s = compile_yaml(GATEWAY, doc)
    assert list(s.clusters) == ["service/default/a:80"]
    x = find_match(s, 80, "h", "/x").rule.backends[0].cluster
    y = find_match(s, 80, "h", "/y").rule.backends[0].cluster
    assert x == y == "service/default/a:80"


def test_mirror_backend_resolves_like_a_backend_and_an_invalid_one_sends_nothing():
    filters = """    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: web, port: 80}, fraction: {numerator: 1, denominator: 4}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: missing, port: 80}}
"""
    s = compile_yaml(GATEWAY, SERVICE, route("[{name: web, port: 9000}]", filters=filters))
    rule = rule_of(s)
    good, bad = rule.filters
    assert good.describe()["type"] == "RequestMirror"
    assert good._cluster == "service/default/web:80" and good._percent == 25.0
    assert bad._cluster is None and bad._percent == 100.0
    assert "service/default/web:80" in s.clusters  # kept for the mirror
    resolved = s.dump["routes"]["default/r"]["parents"][0]["conditions"][1]
    assert resolved["reason"] == "BackendNotFound"
    # the main request is unaffected
    assert rule.backends[0].cluster == "service/default/web:9000"


def test_backend_ref_filters_stay_with_their_backend():
    refs = """
    - name: web
      port: 80
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-to, value: web}]}
"""
    s = compile_yaml(GATEWAY, SERVICE, route(refs))
    rule = rule_of(s)
    assert rule.filters == ()
    (f,) = rule.backends[0].filters
    assert f.describe()["type"] == "RequestHeaderModifier"
