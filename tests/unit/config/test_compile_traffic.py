"""BackendTrafficPolicy compiled: which policy a rule gets (Envoy Gateway's precedence and
conflict rules), what the data plane receives for each field, and how the rule's
clusters, retry, timeouts and filters change."""

from __future__ import annotations

import textwrap

import pytest

from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.lookup import find_match
from meshgate.config.compile.traffic import compile_traffic
from meshgate.config.loader import load_texts
from meshgate.config.snapshot import RetryPolicy
from meshgate.config.traffic import (
    DEFAULT_CLUSTER_POLICY,
    ActiveHealthCheck,
    CircuitBreaking,
    ClusterPolicy,
    Fault,
    LoadBalancing,
    OutlierDetection,
    RetryBudget,
)

BASE = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: meshgate
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: alt, port: 81, protocol: HTTP}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec: {ports: [{port: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-1, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
endpoints: [{addresses: [10.0.0.1]}]
ports: [{port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules:
  - name: a
    matches: [{path: {value: /a}}]
    backendRefs: [{name: echo, port: 8080}]
  - matches: [{path: {value: /b}}]
    backendRefs: [{name: echo, port: 8080}]
"""


def btp(name: str, target: str, spec: str = "", *, namespace: str = "default", created: str = "") -> str:
    ts = f", creationTimestamp: '{created}'" if created else ""
    return (
        "apiVersion: gateway.envoyproxy.io/v1alpha1\n"
        "kind: BackendTrafficPolicy\n"
        f"metadata: {{name: {name}, namespace: {namespace}{ts}}}\n"
        "spec:\n"
        f"  targetRefs: [{{group: gateway.networking.k8s.io, {target}}}]\n"
        + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
        + "\n"
    )


def compile_yaml(*docs: str):
    result = load_texts([("t.yaml", "\n---\n".join(docs))])
    assert not result.errors, [str(e) for e in result.errors]
    return compile_snapshot(result.resources)


def rule(snapshot, path: str, port: int = 80):
    match = find_match(snapshot, port, "example.com", path)
    assert match is not None
    return match.rule


def policy_of(snapshot, path: str, port: int = 80) -> str | None:
    return rule(snapshot, path, port).policy


def conditions(snapshot, key: str, target: int = 0) -> list[tuple[str, str, str]]:
    entry = snapshot.dump["policies"]["BackendTrafficPolicy"][key]["targets"][target]
    return [(c["type"], c["status"], c["reason"]) for c in entry["conditions"]]


GATEWAY = btp("on-gateway", "kind: Gateway, name: gw")
LISTENER = btp("on-listener", "kind: Gateway, name: gw, sectionName: http")
ROUTE = btp("on-route", "kind: HTTPRoute, name: r")
RULE = btp("on-rule", "kind: HTTPRoute, name: r, sectionName: a")


# --- attachment -----------------------------------------------------------------------


def test_most_specific_policy_wins_for_each_rule():
    s = compile_yaml(BASE, GATEWAY, LISTENER, ROUTE, RULE)
    assert policy_of(s, "/a") == "default/on-rule"
    assert policy_of(s, "/b") == "default/on-route"


def test_listener_policy_beats_gateway_policy_only_on_its_listener():
    s = compile_yaml(BASE, GATEWAY, LISTENER)
    assert policy_of(s, "/a", port=80) == "default/on-listener"
    assert policy_of(s, "/a", port=81) == "default/on-gateway"
    # The same rule served on two listeners is two rules, each with its policy's clusters.
    assert rule(s, "/a", 80).backends[0].cluster == "service/default/echo:8080~default/on-listener"
    assert rule(s, "/a", 81).backends[0].cluster == "service/default/echo:8080~default/on-gateway"


def test_no_merging_the_winner_applies_whole():
    s = compile_yaml(
        BASE,
        btp("on-gateway", "kind: Gateway, name: gw", "loadBalancer: {type: Random}\nretry: {numRetries: 5}"),
        btp("on-route", "kind: HTTPRoute, name: r", "circuitBreaker: {maxConnections: 7}"),
    )
    r = rule(s, "/a")
    assert r.retry is None  # the gateway's retry is not merged in
    cluster = s.clusters[r.backends[0].cluster]
    assert cluster.policy.lb.kind == "LeastRequest"  # nor its load balancer
    assert cluster.policy.breaker.max_connections == 7
    assert conditions(s, "default/on-gateway")[1] == ("Overridden", "True", "Overridden")


def test_rules_without_a_policy_keep_the_plain_cluster():
    s = compile_yaml(BASE, RULE)
    assert policy_of(s, "/b") is None
    plain = rule(s, "/b").backends[0].cluster
    assert plain == "service/default/echo:8080"
    assert s.clusters[plain].policy is DEFAULT_CLUSTER_POLICY
    assert set(s.clusters) == {plain, "service/default/echo:8080~default/on-rule"}


def test_policy_cluster_has_the_same_endpoints_and_the_policy():
    s = compile_yaml(BASE, btp("my-btp", "kind: HTTPRoute, name: r", "loadBalancer: {type: RoundRobin}"))
    name = "service/default/echo:8080~default/my-btp"
    cluster = s.clusters[name]
    assert [(e.host, e.port) for e in cluster.endpoints] == [("10.0.0.1", 8080)]
    assert cluster.policy.lb.kind == "RoundRobin"
    assert "service/default/echo:8080" not in s.clusters  # no rule uses it plain
    assert rule(s, "/a").describe()["policy"] == "default/my-btp"
    assert s.dump["clusters"][name]["endpoints"] == ["10.0.0.1:8080"]


def test_oldest_policy_wins_a_shared_target_and_the_other_is_conflicted():
    s = compile_yaml(
        BASE,
        btp("a-new", "kind: HTTPRoute, name: r", created="2024-05-01T00:00:00Z"),
        btp("z-old", "kind: HTTPRoute, name: r", created="2024-01-01T00:00:00Z"),
    )
    assert policy_of(s, "/a") == "default/z-old"
    assert conditions(s, "default/z-old") == [("Accepted", "True", "Accepted")]
    assert conditions(s, "default/a-new") == [("Accepted", "False", "Conflicted")]


def test_same_age_or_no_timestamp_name_order_decides():
    s = compile_yaml(BASE, btp("b", "kind: HTTPRoute, name: r"), btp("a", "kind: HTTPRoute, name: r"))
    assert policy_of(s, "/a") == "default/a"
    assert conditions(s, "default/b")[0][2] == "Conflicted"
    # A policy without a timestamp is the newest.
    s = compile_yaml(
        BASE,
        btp("a", "kind: HTTPRoute, name: r"),
        btp("b", "kind: HTTPRoute, name: r", created="2024-01-01T00:00:00Z"),
    )
    assert policy_of(s, "/a") == "default/b"


def test_conflict_is_per_target():
    s = compile_yaml(
        BASE,
        btp("a", "kind: HTTPRoute, name: r"),
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\nmetadata: {name: b}\n"
        "spec:\n  targetRefs:\n  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}\n"
        "  - {group: gateway.networking.k8s.io, kind: Gateway, name: gw}\n",
    )
    assert conditions(s, "default/b", 0) == [("Accepted", "False", "Conflicted")]
    assert conditions(s, "default/b", 1)[0] == ("Accepted", "True", "Accepted")


def test_cross_namespace_target_is_ignored():
    s = compile_yaml(BASE, btp("elsewhere", "kind: HTTPRoute, name: r", namespace="other"))
    assert policy_of(s, "/a") is None
    (cond,) = s.dump["policies"]["BackendTrafficPolicy"]["other/elsewhere"]["targets"][0]["conditions"]
    assert (cond["reason"], cond["message"]) == ("TargetNotFound", "HTTPRoute other/r not found")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("kind: HTTPRoute, name: r, sectionName: nope", "HTTPRoute default/r has no rule named nope"),
        ("kind: Gateway, name: gw, sectionName: nope", "Gateway default/gw has no listener named nope"),
        ("kind: Gateway, name: other", "Gateway default/other not found"),
    ],
)
def test_missing_targets_are_reported(target, message):
    s = compile_yaml(BASE, btp("p", target))
    (cond,) = s.dump["policies"]["BackendTrafficPolicy"]["default/p"]["targets"][0]["conditions"]
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "TargetNotFound", message)
    assert policy_of(s, "/a") is None


# --- mapping --------------------------------------------------------------------------


def compiled(spec: str):
    result = load_texts([("t.yaml", btp("p", "kind: HTTPRoute, name: r", spec))])
    assert not result.errors, [str(e) for e in result.errors]
    return compile_traffic("default/p", result.resources[0].obj.spec)


def test_empty_policy_is_envoy_gateways_defaults():
    ct = compiled("")
    assert ct.cluster == ClusterPolicy()
    assert ct.cluster.lb.kind == "LeastRequest"
    assert (ct.retry, ct.fault, ct.request_timeout) == (None, None, None)


def test_every_cluster_field_is_mapped():
    ct = compiled(
        """
        loadBalancer:
          type: ConsistentHash
          consistentHash:
            type: Cookie
            cookie: {name: session, ttl: 1h, attributes: {SameSite: Strict, Path: /}}
            tableSize: 1009
        circuitBreaker: {maxConnections: 10, maxPendingRequests: 20, maxParallelRequests: 30}
        healthCheck:
          panicThreshold: 25
          active:
            type: HTTP
            interval: 500ms
            timeout: 200ms
            healthyThreshold: 2
            unhealthyThreshold: 4
            http:
              path: /healthz
              hostname: health.local
              method: HEAD
              expectedStatuses: [200, 204]
              expectedResponse: {type: Text, text: ok}
          passive:
            splitExternalLocalOriginErrors: true
            interval: 2s
            consecutiveLocalOriginFailures: 3
            consecutiveGatewayErrors: 2
            consecutive5XxErrors: 4
            baseEjectionTime: 1m
            maxEjectionPercent: 50
        retry: {budget: {ratio: 0.5, minRetriesPerSecond: 3}}
        timeout:
          tcp: {connectTimeout: 2s}
          http: {connectionIdleTimeout: 30s, maxConnectionDuration: 10m, requestTimeout: 4s}
        """
    )
    assert ct.cluster == ClusterPolicy(
        lb=LoadBalancing(
            kind="ConsistentHash",
            hash_on="Cookie",
            cookie_name="session",
            cookie_ttl=3600.0,
            cookie_attributes=(("Path", "/"), ("SameSite", "Strict")),
            table_size=1009,
            panic_threshold=25.0,
        ),
        # maxParallelRetries is not set: Envoy's default, 3 (the choice; Envoy
        # Gateway's CRD would say 1024).
        breaker=CircuitBreaking(10, 20, 30, 3),
        health=ActiveHealthCheck(
            kind="HTTP",
            interval=0.5,
            timeout=0.2,
            healthy_threshold=2,
            unhealthy_threshold=4,
            path="/healthz",
            method="HEAD",
            host="health.local",
            expected_statuses=frozenset({200, 204}),
            expected_body=b"ok",
        ),
        outlier=OutlierDetection(
            consecutive_5xx=4,
            consecutive_gateway_errors=2,
            consecutive_local_origin_failures=3,
            split_external_local_origin_errors=True,
            interval=2.0,
            base_ejection_time=60.0,
            max_ejection_percent=50.0,
        ),
        budget=RetryBudget(ratio=0.5, min_per_second=3.0),
        connect_timeout=2.0,
        idle_timeout=30.0,
        max_connection_duration=600.0,
    )
    assert ct.request_timeout == 4.0


def test_header_hash_tcp_check_and_slow_start():
    ct = compiled(
        """
        loadBalancer: {type: ConsistentHash, consistentHash: {type: Header, header: {name: X-User}}}
        healthCheck:
          active:
            type: TCP
            tcp: {send: {type: Binary, binary: cGluZw==}, receive: {type: Text, text: pong}}
        """
    )
    assert (ct.cluster.lb.hash_on, ct.cluster.lb.hash_header) == ("Header", "x-user")
    health = ct.cluster.health
    assert (health.kind, health.send, health.receive) == ("TCP", b"ping", b"pong")
    assert compiled("loadBalancer: {type: RoundRobin, slowStart: {window: 30s}}").cluster.lb == LoadBalancing(
        kind="RoundRobin", slow_start_window=30.0
    )
    assert compiled("healthCheck: {active: {type: HTTP, http: {path: /h}}}").cluster.health == ActiveHealthCheck(
        path="/h"
    )


def test_retry_defaults_are_envoy_gateways():
    assert compiled("retry: {}").retry == RetryPolicy(
        attempts=2,
        codes=frozenset({503}),  # retriable-status-codes with EG's default 503
        backoff=0.025,
        max_backoff=0.0,  # 10 x backoff
        on_connect_failure=True,  # connect-failure
        on_reset=False,  # refused-stream, unavailable, cancelled: HTTP/2 and gRPC only
    )


@pytest.mark.parametrize(
    ("triggers", "codes", "connect_failure", "reset"),
    [
        ("[5xx]", set(range(500, 600)), True, True),
        ("[gateway-error]", {502, 503, 504}, True, True),
        ("[reset]", set(), True, True),
        ("[connect-failure]", set(), True, False),
        ("[retriable-4xx]", {409}, False, False),
        ("[retriable-status-codes]", {500, 429}, False, False),
        ("[refused-stream, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable]", set(), False, False),
    ],
)
def test_retry_triggers_mean_what_they_mean_in_envoy(triggers, codes, connect_failure, reset):
    retry = compiled(f"retry: {{retryOn: {{triggers: {triggers}, httpStatusCodes: [500, 429]}}}}").retry
    assert (retry.codes, retry.on_connect_failure, retry.on_reset) == (codes, connect_failure, reset)


def test_retry_on_with_codes_only_keeps_default_triggers():
    retry = compiled("retry: {retryOn: {httpStatusCodes: [502]}}").retry
    assert (retry.codes, retry.on_connect_failure) == ({502}, True)
    # Triggers only: EG's translator replaces the 503 default with the (empty) list.
    assert compiled("retry: {retryOn: {triggers: [retriable-status-codes]}}").retry.codes == frozenset()


def test_retry_per_try_and_backoff():
    retry = compiled(
        "retry: {numRetries: 4, perRetry: {timeout: 250ms, backOff: {baseInterval: 100ms, maxInterval: 2s}}}"
    ).retry
    assert (retry.attempts, retry.per_try_timeout, retry.backoff, retry.max_backoff) == (4, 0.25, 0.1, 2.0)


def test_fault_mapping():
    assert compiled("faultInjection: {delay: {fixedDelay: 1500ms, percentage: 12.5}}").fault == Fault(
        delay=1.5, delay_percent=12.5
    )
    assert compiled("faultInjection: {abort: {httpStatus: 418, percentage: 1}}").fault == Fault(
        abort_status=418, abort_percent=1.0
    )


def test_zero_durations_disable():
    ct = compiled("timeout: {http: {requestTimeout: 0s, maxConnectionDuration: 0s}}")
    assert (ct.request_timeout, ct.cluster.max_connection_duration) == (None, None)


# --- wiring into the rule -------------------------------------------------------------

ROUTE_WITH_OWN = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: own}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /own}}]
    backendRefs: [{name: echo, port: 8080}]
    retry: {attempts: 1, codes: [500]}
    timeouts: {request: 3s, backendRequest: 1s}
  - matches: [{path: {value: /fallback}}]
    backendRefs: [{name: echo, port: 8080}]
    timeouts: {backendRequest: 1s}
"""


def test_route_rule_retry_and_request_timeout_win_over_the_policy():
    s = compile_yaml(
        BASE,
        ROUTE_WITH_OWN,
        btp("p", "kind: HTTPRoute, name: own", "retry: {numRetries: 5}\ntimeout: {http: {requestTimeout: 9s}}"),
    )
    own = rule(s, "/own")
    assert (own.retry.attempts, own.retry.codes, own.timeout_request) == (1, {500}, 3.0)
    assert own.policy == "default/p"  # its clusters still carry the policy
    fallback = rule(s, "/fallback")
    assert (fallback.retry.attempts, fallback.timeout_request) == (5, 9.0)
    # No perRetry.timeout: each try gets the rule's timeouts.backendRequest.
    assert fallback.retry.per_try_timeout == 1.0
    assert fallback.needs_task


def test_fault_filters_run_before_the_rule_filters():
    route = BASE.replace(
        "  - name: a\n    matches: [{path: {value: /a}}]\n",
        "  - name: a\n    matches: [{path: {value: /a}}]\n"
        "    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x, value: y}]}}]\n",
    )
    s = compile_yaml(
        route, btp("p", "kind: HTTPRoute, name: r", "faultInjection: {abort: {httpStatus: 503, percentage: 5}}")
    )
    types = [f.describe()["type"] for f in rule(s, "/a").filters]
    assert types == ["FaultAbort", "RequestHeaderModifier"]
    assert [f.describe()["type"] for f in rule(s, "/b").filters] == ["FaultAbort"]


def test_backend_fqdn_endpoints_are_a_dns_cluster():
    s = compile_yaml(
        BASE.replace("backendRefs: [{name: echo, port: 8080}]\n  - matches",
                     "backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: ext}]\n  - matches"),
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: ext}\n"
        "spec: {endpoints: [{fqdn: {hostname: api.example.com, port: 443}}]}",
        btp("p", "kind: HTTPRoute, name: r"),
    )
    cluster = s.clusters[rule(s, "/a").backends[0].cluster]
    assert (cluster.name, cluster.dns) == ("backend/default/ext~default/p", True)
    assert s.dump["clusters"][cluster.name]["dns"] is True
