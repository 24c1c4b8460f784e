"""Which listeners a route attaches to (parentRefs, sectionName, port, allowedRoutes)
and the status conditions recorded when it does not."""

from __future__ import annotations

from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.lookup import find_match
from meshgate.config.loader import load_texts

NAMESPACES = """
apiVersion: v1
kind: Namespace
metadata: {name: infra}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {tier: frontend, env: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b, labels: {tier: backend}}
"""


def gateway(from_: str, selector: str = "", *, kinds: str = "", name: str = "gw", port: int = 80):
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: infra}}
spec:
  gatewayClassName: meshgate
  listeners:
  - name: http
    port: {port}
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: {from_}
{selector}
{kinds}
"""


def route_in(namespace: str, parent_ref: str = "{name: gw, namespace: infra}", name: str = "r"):
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: svc, namespace: {namespace}}}
spec:
  ports: [{{port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  parentRefs: [{parent_ref}]
  rules:
  - backendRefs: [{{name: svc, port: 80}}]
"""


def compile_yaml(*docs, gateways=None):
    result = load_texts([("t.yaml", "\n---\n".join(docs))])
    assert not result.errors, [str(e) for e in result.errors]
    return compile_snapshot(result.resources, gateways=gateways)


def accepted(snapshot, key):
    (parent,) = snapshot.dump["routes"][key]["parents"]
    cond = parent["conditions"][0]
    assert cond["type"] == "Accepted"
    return cond["status"] == "True", cond["reason"]


def routed(snapshot, port=80) -> bool:
    return find_match(snapshot, port, "any.host", "/") is not None


def test_from_same_takes_only_routes_of_the_gateway_namespace():
    s = compile_yaml(NAMESPACES, gateway("Same"), route_in("infra"))
    assert accepted(s, "infra/r") == (True, "Accepted")
    assert routed(s)
    s = compile_yaml(NAMESPACES, gateway("Same"), route_in("team-a"))
    assert accepted(s, "team-a/r") == (False, "NotAllowedByListeners")
    assert not routed(s)


def test_from_all_takes_routes_of_any_namespace_even_undeclared_ones():
    s = compile_yaml(NAMESPACES, gateway("All"), route_in("nowhere"))
    assert accepted(s, "nowhere/r") == (True, "Accepted")
    assert routed(s)


def test_selector_match_labels():
    sel = "        selector:\n          matchLabels: {tier: frontend}"
    s = compile_yaml(NAMESPACES, gateway("Selector", sel), route_in("team-a"))
    assert accepted(s, "team-a/r") == (True, "Accepted")
    s = compile_yaml(NAMESPACES, gateway("Selector", sel), route_in("team-b"))
    assert accepted(s, "team-b/r") == (False, "NotAllowedByListeners")
    # A namespace without a Namespace resource has no labels.
    s = compile_yaml(NAMESPACES, gateway("Selector", sel), route_in("undeclared"))
    assert accepted(s, "undeclared/r") == (False, "NotAllowedByListeners")


def test_selector_match_expressions():
    def check(expr: str, namespace: str) -> bool:
        sel = f"        selector:\n          matchExpressions: [{expr}]"
        s = compile_yaml(NAMESPACES, gateway("Selector", sel), route_in(namespace))
        return accepted(s, f"{namespace}/r")[0]

    assert check("{key: tier, operator: In, values: [frontend, x]}", "team-a")
    assert not check("{key: tier, operator: In, values: [x]}", "team-a")
    assert check("{key: tier, operator: NotIn, values: [frontend]}", "team-b")
    assert not check("{key: tier, operator: NotIn, values: [frontend]}", "team-a")
    assert check("{key: env, operator: Exists}", "team-a")
    assert not check("{key: env, operator: Exists}", "team-b")
    assert check("{key: env, operator: DoesNotExist}", "team-b")
    assert check("{key: tier, operator: NotIn, values: [frontend]}", "undeclared")
    # the API server labels every namespace with its name
    assert check("{key: kubernetes.io/metadata.name, operator: In, values: [team-b]}", "team-b")


def test_allowed_kinds_must_include_httproute():
    kinds = "      kinds: [{kind: GRPCRoute}]"
    s = compile_yaml(NAMESPACES, gateway("Same", kinds=kinds), route_in("infra"))
    assert accepted(s, "infra/r") == (False, "NotAllowedByListeners")
    kinds = "      kinds: [{kind: HTTPRoute}]"
    s = compile_yaml(NAMESPACES, gateway("Same", kinds=kinds), route_in("infra"))
    assert accepted(s, "infra/r") == (True, "Accepted")


def test_parent_namespace_defaults_to_the_routes():
    s = compile_yaml(NAMESPACES, gateway("All"), route_in("team-a", "{name: gw}"))
    # looks for team-a/gw, which does not exist
    assert accepted(s, "team-a/r") == (False, "NoMatchingParent")
    assert "not found" in s.dump["routes"]["team-a/r"]["parents"][0]["conditions"][0]["message"]


def test_parent_not_served_by_this_process():
    s = compile_yaml(
        NAMESPACES,
        gateway("Same"),
        gateway("Same", name="other", port=81),
        route_in("infra", "{name: other}"),
        gateways={"infra/gw"},
    )
    assert accepted(s, "infra/r") == (False, "NoMatchingParent")
    assert not s.ports[80].default_listener.any_host
    assert list(s.ports) == [80]
    assert s.clusters == {}  # clusters of routes that attach nowhere are not kept


MULTI = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: meshgate
  listeners:
  - {name: a, port: 80, protocol: HTTP, hostname: a.com}
  - {name: b, port: 80, protocol: HTTP, hostname: b.com}
  - {name: c, port: 81, protocol: HTTP, hostname: a.com}
"""


def listeners_of(snapshot, key):
    return sorted(snapshot.dump["routes"][key]["parents"][0]["listeners"])


def test_section_name_and_port_narrow_the_listeners():
    ref = "{name: gw, sectionName: b}"
    s = compile_yaml(MULTI, route_in("infra", ref))
    assert listeners_of(s, "infra/r") == ["b"]
    assert find_match(s, 80, "b.com", "/") is not None
    assert find_match(s, 80, "a.com", "/") is None

    s = compile_yaml(MULTI, route_in("infra", "{name: gw, port: 80}"))
    assert listeners_of(s, "infra/r") == ["a", "b"]
    assert find_match(s, 81, "a.com", "/") is None

    s = compile_yaml(MULTI, route_in("infra", "{name: gw, port: 81, sectionName: c}"))
    assert listeners_of(s, "infra/r") == ["c"]

    s = compile_yaml(MULTI, route_in("infra", "{name: gw, port: 81, sectionName: a}"))
    assert accepted(s, "infra/r") == (False, "NoMatchingParent")

    s = compile_yaml(MULTI, route_in("infra", "{name: gw, sectionName: nope}"))
    assert accepted(s, "infra/r") == (False, "NoMatchingParent")


def test_one_status_per_parent_ref():
    s = compile_yaml(
        MULTI,
        route_in("infra", "{name: gw, sectionName: a}, {name: gw, sectionName: zz}, {name: missing}"),
    )
    parents = s.dump["routes"]["infra/r"]["parents"]
    reasons = [p["conditions"][0]["reason"] for p in parents]
    assert reasons == ["Accepted", "NoMatchingParent", "NoMatchingParent"]
    assert parents[0]["conditions"][1] == {
        "type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "message": "",
    }


def test_service_parent_refs_are_left_to_the_mesh():
    s = compile_yaml(MULTI, route_in("infra", "{group: '', kind: Service, name: svc}"))
    assert accepted(s, "infra/r") == (False, "NoMatchingParent")
