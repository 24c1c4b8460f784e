"""The vendored Gateway API conformance manifests compile, and the tables they produce
route the requests the upstream conformance Go tests send to the backends they expect.

Expected (host, path, headers) -> backend pairs are transcribed from
kubernetes-sigs/gateway-api conformance/tests/<name>.go.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.lookup import find_match
from meshgate.config.errors import ConfigInvalid
from meshgate.config.loader import load_paths

MANIFESTS = Path(__file__).resolve().parents[2] / "conformance" / "manifests"
BASE = MANIFESTS / "base.yaml"
INFRA = "gateway-conformance-infra"
SAME_NS = f"{INFRA}/same-namespace"



def load(name: str):
    result = load_paths([BASE, MANIFESTS / "tests" / name])
    assert not result.errors, result.errors
    return result.resources


def parent_gateways(resources) -> set[str]:
    out = set()
    for res in resources:
        if res.kind == "HTTPRoute":
            for ref in res.obj.spec.parentRefs:
                if ref.kind == "Gateway":
                    out.add(f"{ref.namespace or res.namespace}/{ref.name}")
    return out


def backend(snapshot, host: str, path: str, port: int = 80, **kw) -> str | None:
    """The Service a request is sent to (by the rule's first backend), None for 404."""
    match = find_match(snapshot, port, host, path, **kw)
    if match is None:
        return None
    cluster = match.rule.backends[0].cluster
    # "service/ns/name:port" -> "name"
    return cluster.split("/")[2].split(":")[0] if cluster else "<invalid>"


TEST_FILES = sorted(p.name for p in (MANIFESTS / "tests").glob("*.yaml")) if BASE.exists() else []


@pytest.mark.parametrize("name", TEST_FILES)
def test_every_conformance_manifest_compiles_for_each_gateway_it_targets(name):
    resources = load(name)
    gateways = parent_gateways(resources)
    assert gateways
    for gw in sorted(gateways):
        if gw.endswith("-with-https-listener"):
            continue  # HTTPS needs TLS termination; see the test below
        snapshot = compile_snapshot(resources, gateways={gw})
        assert snapshot.ports, gw
        assert snapshot.version


def test_https_gateway_of_the_base_manifest_needs_the_suite_generated_certificate():
    # The conformance suite creates the tls-validity-checks-certificate Secret at run
    # time; without it every HTTPS listener has an invalid certificateRef.
    resources = load("httproute-redirect-port-and-scheme.yaml")
    with pytest.raises(ConfigInvalid) as info:
        compile_snapshot(resources, gateways={f"{INFRA}/same-namespace-with-https-listener"})
    messages = {e.message for e in info.value.errors}
    assert any(
        "ResolvedRefs=False (InvalidCertificateRef)" in m and "tls-validity-checks-certificate not found" in m
        for m in messages
    )
    assert all(e.kind_name.startswith("Gateway/") for e in info.value.errors)


def test_serving_every_base_gateway_at_once_is_a_listener_conflict():
    # same-namespace, all-namespaces and backend-namespaces all take port 80 with no
    # hostname: one process cannot tell their traffic apart.
    resources = [r for r in load("httproute-simple-same-namespace.yaml")]
    with pytest.raises(ConfigInvalid) as info:
        compile_snapshot(
            resources, gateways={SAME_NS, f"{INFRA}/all-namespaces", f"{INFRA}/backend-namespaces"}
        )
    assert sum("conflicts with listener" in e.message for e in info.value.errors) == 2


def test_matching_across_routes():
    s = compile_snapshot(load("httproute-matching-across-routes.yaml"), gateways={SAME_NS})
    cases = [
        ("example.com", "/", {}, "infra-backend-v1"),
        ("example.com", "/example", {}, "infra-backend-v1"),
        ("example.net", "/example", {}, "infra-backend-v1"),
        ("example.com", "/example", {"Version": "one"}, "infra-backend-v1"),
        ("example.com", "/v2", {}, "infra-backend-v2"),
        ("example.net", "/v2", {}, "infra-backend-v1"),  # v2 matches are limited to example.com
        ("example.com", "/v2/example", {}, "infra-backend-v2"),
        ("example.com", "/", {"Version": "two"}, "infra-backend-v2"),
    ]
    for host, path, headers, want in cases:
        got = backend(s, host, path, headers=list(headers.items()))
        assert got == want, (host, path, headers)


def test_hostname_intersection():
    s = compile_snapshot(
        load("httproute-hostname-intersection.yaml"),
        gateways={f"{INFRA}/httproute-hostname-intersection"},
    )
    cases = [
        ("very.specific.com", "/s1", "infra-backend-v1"),
        ("very.specific.com:1234", "/s1", "infra-backend-v1"),
        ("non.matching.com", "/s1", None),
        ("foo.nonmatchingwildcard.io", "/s1", None),
        ("foo.wildcard.io", "/s1", None),
        ("very.specific.com", "/non-matching-prefix", None),
        ("foo.wildcard.io", "/s2", "infra-backend-v2"),
        ("bar.wildcard.io", "/s2", "infra-backend-v2"),
        ("foo.bar.wildcard.io", "/s2", "infra-backend-v2"),
        ("non.matching.com", "/s2", None),
        ("wildcard.io", "/s2", None),
        ("very.specific.com", "/s2", None),
        ("foo.wildcard.io", "/non-matching-prefix", None),
        ("very.specific.com", "/s3", "infra-backend-v3"),
        ("non.matching.com", "/s3", None),
        ("foo.specific.com", "/s3", None),
        ("foo.wildcard.io", "/s3", None),
        ("very.specific.com", "/non-matching-prefix", None),
        ("foo.anotherwildcard.io", "/s4", "infra-backend-v1"),
        ("bar.anotherwildcard.io", "/s4", "infra-backend-v1"),
        ("foo.bar.anotherwildcard.io", "/s4", "infra-backend-v1"),
        ("anotherwildcard.io", "/s4", None),
        ("foo.wildcard.io", "/s4", None),
        ("very.specific.com", "/s4", None),
        ("foo.anotherwildcard.io", "/non-matching-prefix", None),
        ("specific.but.wrong.com", "/s5", None),
        ("wildcard.io", "/s5", None),
    ]
    for host, path, want in cases:
        assert backend(s, host, path) == want, (host, path)

    parents = s.dump["routes"][f"{INFRA}/no-intersecting-hosts"]["parents"]
    assert parents[0]["conditions"] == [
        {
            "type": "Accepted",
            "status": "False",
            "reason": "NoMatchingListenerHostname",
            "message": parents[0]["conditions"][0]["message"],
        }
    ]
    attached = {
        lst["name"]: lst["attachedRoutes"] for lst in s.dump["gateways"][0]["listeners"]
    }
    assert attached == {"listener-1": 2, "listener-2": 1, "listener-3": 1}


def test_hostname_intersection_with_a_listener_without_hostname():
    s = compile_snapshot(
        load("httproute-hostname-intersection.yaml"),
        gateways={f"{INFRA}/httproute-hostname-intersection-all"},
    )
    for host in ("first.com", "sub.first.com", "second.com", "sub.second.com"):
        assert backend(s, host, "/") == "infra-backend-v2", host
    for host in ("third.com", "sub.third.com"):
        assert backend(s, host, "/") is None, host


def test_both_hostname_intersection_gateways_share_port_80():
    # Their listener hostnames differ, so one process serves both; the Host header
    # picks the listener.
    s = compile_snapshot(
        load("httproute-hostname-intersection.yaml"),
        gateways={
            f"{INFRA}/httproute-hostname-intersection",
            f"{INFRA}/httproute-hostname-intersection-all",
        },
    )
    assert backend(s, "very.specific.com", "/s1") == "infra-backend-v1"
    assert backend(s, "first.com", "/") == "infra-backend-v2"
    assert backend(s, "non.matching.com", "/s1") is None


def test_listener_hostname_matching():
    s = compile_snapshot(
        load("httproute-listener-hostname-matching.yaml"),
        gateways={f"{INFRA}/httproute-listener-hostname-matching"},
    )
    cases = [
        ("bar.com", "infra-backend-v1"),
        ("foo.bar.com", "infra-backend-v2"),
        ("baz.bar.com", "infra-backend-v3"),
        ("boo.bar.com", "infra-backend-v3"),
        ("multiple.prefixes.bar.com", "infra-backend-v3"),
        ("multiple.prefixes.foo.com", "infra-backend-v3"),
        ("foo.com", None),
        ("no.matching.host", None),
    ]
    for host, want in cases:
        assert backend(s, host, "/") == want, host


def test_listener_port_matching():
    s = compile_snapshot(
        load("httproute-listener-port-matching.yaml"),
        gateways={f"{INFRA}/httproute-listener-port-matching"},
    )
    assert backend(s, "foo.com", "/", port=80) == "infra-backend-v1"
    assert backend(s, "foo.com", "/", port=8080) == "infra-backend-v2"
    assert backend(s, "bar.com", "/", port=8080) == "infra-backend-v2"
    assert backend(s, "foo.com", "/", port=8090) == "infra-backend-v3"
    assert backend(s, "bar.com", "/", port=8090) is None  # backend-v3 names listener-4 only
    assert backend(s, "bar.com", "/", port=80) is None


def test_path_match_order():
    s = compile_snapshot(load("httproute-path-match-order.yaml"), gateways={SAME_NS})
    cases = [
        ("/match", "infra-backend-v1"),
        ("/match/exact", "infra-backend-v2"),
        ("/match/exact/one", "infra-backend-v3"),
        ("/match/exact/two", "infra-backend-v3"),  # falls to PathPrefix /match/
        ("/match/prefix", "infra-backend-v1"),  # "/match/prefix/" == "/match/prefix"
        ("/match/prefix/any", "infra-backend-v1"),
        ("/match/prefix/one", "infra-backend-v2"),
        ("/match/prefix/one/any", "infra-backend-v2"),
        ("/match/any", "infra-backend-v3"),
        ("/matchx", None),
    ]
    for path, want in cases:
        assert backend(s, "example.com", path) == want, path


def test_invalid_backend_refs_keep_their_share_and_report_resolved_refs():
    cases = {
        "httproute-invalid-backendref-unknown-kind.yaml": "InvalidKind",
        "httproute-invalid-cross-namespace-backend-ref.yaml": "RefNotPermitted",
        "httproute-invalid-nonexistent-backendref.yaml": "BackendNotFound",
    }
    for name, reason in cases.items():
        s = compile_snapshot(load(name), gateways={SAME_NS})
        (route,) = s.dump["routes"].values()
        accepted, resolved = route["parents"][0]["conditions"]
        assert accepted["status"] == "True"
        assert (resolved["status"], resolved["reason"]) == ("False", reason), name
        match = find_match(s, 80, "example.com", "/")
        assert match is not None
        assert [(b.cluster, b.weight) for b in match.rule.backends] == [(None, 1)]
        assert match.rule.total_weight == 1


def test_reference_grant_allows_the_cross_namespace_backend():
    s = compile_snapshot(load("httproute-reference-grant.yaml"), gateways={SAME_NS})
    assert backend(s, "example.com", "/") == "web-backend"


def test_omitted_and_empty_backend_refs_mean_no_backends():
    s = compile_snapshot(load("httproute-omitted-backendrefs.yaml"), gateways={SAME_NS})
    for path in ("/omitted-no-forward", "/empty-no-forward"):
        rule = find_match(s, 80, "example.com", path).rule
        assert rule.no_backends and rule.backends == (), path
    assert backend(s, "example.com", "/other") == "infra-backend-v1"


def test_timeouts_and_retries_of_the_conformance_routes():
    s = compile_snapshot(load("httproute-timeout-backend-request.yaml"), gateways={SAME_NS})
    assert find_match(s, 80, "x", "/backend-timeout").rule.timeout_backend == 0.5
    assert find_match(s, 80, "x", "/disable-backend-timeout").rule.timeout_backend is None

    s = compile_snapshot(load("httproute-retry.yaml"), gateways={SAME_NS})
    retry = find_match(s, 80, "x", "/retry/code-500-attempts-3").rule.retry
    assert (retry.attempts, retry.codes) == (3, frozenset({500}))
    retry = find_match(s, 80, "x", "/retry/code-all-attempts-2").rule.retry
    assert (retry.attempts, retry.codes) == (2, frozenset({500, 502, 503, 504}))


def test_multiple_gateways_each_serve_their_own_routes():
    resources = load("httproute-multiple-gateways.yaml")
    same = compile_snapshot(resources, gateways={SAME_NS})
    every = compile_snapshot(resources, gateways={f"{INFRA}/all-namespaces"})
    assert backend(same, "x", "/shared") == "infra-backend-v1"
    assert backend(same, "x", "/") == "infra-backend-v2"
    assert backend(every, "x", "/shared") == "infra-backend-v1"
    assert backend(every, "x", "/") == "infra-backend-v3"
    assert same.version != every.version
