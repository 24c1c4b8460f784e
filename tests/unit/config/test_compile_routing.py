"""Which rule a request hits: Gateway API precedence, hostname intersection and
listener selection, asserted through the compiled tables the engine walks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.listeners import effective_hostnames, intersect_pair
from meshgate.config.compile.lookup import find_match
from meshgate.config.loader import load_texts

GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: meshgate
  listeners:
  - {name: http, port: 8080, protocol: HTTP}
"""

SERVICES = "".join(
    f"""
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  ports: [{{port: 80}}]
"""
    for name in ("a", "b", "c", "d", "e")
)


def compile_yaml(*docs: str, gateways=None):
    result = load_texts([("test.yaml", "\n---\n".join(docs))])
    assert not result.errors, [str(e) for e in result.errors]
    return compile_snapshot(result.resources, gateways=gateways)


def route(name: str, rules: str, *, hostnames: str = "", extra_meta: str = "", parent: str = "gw"):
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
{extra_meta}
spec:
  parentRefs: [{{name: {parent}}}]
{hostnames}
  rules:
{rules}
"""


def to(service: str, match: str = "") -> str:
    """One rule: optional match block (YAML flow text), backend ``service``."""
    matches = f"\n    matches: [{match}]" if match else ""
    return f"  - backendRefs: [{{name: {service}, port: 80}}]{matches}\n"


def hit(snapshot, path, *, host="example.com", port=8080, **kw) -> str | None:
    m = find_match(snapshot, port, host, path, **kw)
    if m is None:
        return None
    return m.rule.backends[0].cluster.split("/")[2].split(":")[0]


# --- precedence ---------------------------------------------------------------------


def test_exact_beats_longer_prefix_and_longest_prefix_wins():
    s = compile_yaml(
        GATEWAY,
        SERVICES,
        route(
            "r",
            to("a", "{path: {type: PathPrefix, value: /}}")
            + to("b", "{path: {type: PathPrefix, value: /api/v1/users}}")
            + to("c", "{path: {type: Exact, value: /api}}")
            + to("d", "{path: {type: PathPrefix, value: /api}}"),
        ),
    )
    assert hit(s, "/api") == "c"
    assert hit(s, "/api/") == "d"
    assert hit(s, "/api/v1/users/7") == "b"
    assert hit(s, "/api/v1/usersx") == "d"  # prefixes match whole segments
    assert hit(s, "/apix") == "a"


def test_regex_sits_between_exact_and_prefix():
    s = compile_yaml(
        GATEWAY,
        SERVICES,
        route(
            "r",
            to("a", "{path: {type: PathPrefix, value: /items/special}}")
            + to("b", r"{path: {type: RegularExpression, value: '/items/[0-9]+'}}")
            + to("c", "{path: {type: Exact, value: /items/42}}"),
        ),
    )
    assert hit(s, "/items/42") == "c"  # Exact first
    assert hit(s, "/items/7") == "b"
    assert hit(s, "/items/special") == "a"
    assert hit(s, "/items/7/more") is None  # regexes match the whole path


def test_method_then_header_count_then_query_count():
    s = compile_yaml(
        GATEWAY,
        SERVICES,
        route(
            "r",
            to("a", "{path: {value: /x}}")
            + to("b", "{path: {value: /x}, headers: [{name: h1, value: '1'}]}")
            + to(
                "c",
                "{path: {value: /x}, headers: [{name: h1, value: '1'}, {name: H2, value: '2'}]}",
            )
            + to("d", "{path: {value: /x}, queryParams: [{name: q, value: v}]}")
            + to("e", "{path: {value: /x}, method: POST}"),
        ),
    )
    both = [("h1", "1"), ("h2", "2")]
    assert hit(s, "/x") == "a"
    assert hit(s, "/x", headers=[("h1", "1")]) == "b"
    assert hit(s, "/x", headers=both) == "c"
    assert hit(s, "/x", headers=both, query="q=v") == "c"  # headers outrank query
    assert hit(s, "/x", query="q=v") == "d"
    assert hit(s, "/x", method="POST", headers=both, query="q=v") == "e"  # method first


def test_ties_across_routes_go_to_the_oldest_then_to_the_alphabetically_first():
    now = datetime(2024, 5, 1, tzinfo=UTC)

    def stamped(name, service, when):
        meta = f"  creationTimestamp: '{when.isoformat()}'" if when else ""
        return route(name, to(service, "{path: {value: /x}}"), extra_meta=meta)

    # "zeta" is older than "alpha": it wins despite its name.
    s = compile_yaml(
        GATEWAY, SERVICES, stamped("alpha", "a", now), stamped("zeta", "b", now - timedelta(1))
    )
    assert hit(s, "/x") == "b"
    # Same timestamp (or none): alphabetical by namespace/name.
    s = compile_yaml(GATEWAY, SERVICES, stamped("zeta", "b", now), stamped("alpha", "a", now))
    assert hit(s, "/x") == "a"
    s = compile_yaml(GATEWAY, SERVICES, stamped("zeta", "b", None), stamped("alpha", "a", None))
    assert hit(s, "/x") == "a"
    # A route without a timestamp is the one being created now: the dated one is older.
    s = compile_yaml(GATEWAY, SERVICES, stamped("alpha", "a", None), stamped("zeta", "b", now))
    assert hit(s, "/x") == "b"


def test_within_a_route_rule_order_then_match_order():
    s = compile_yaml(
        GATEWAY,
        SERVICES,
        route(
            "r",
            to("a", "{path: {value: /x}}, {path: {value: /y}}")
            + to("b", "{path: {value: /x}}"),
        ),
    )
    assert hit(s, "/x") == "a"
    m = find_match(s, 8080, "h", "/y")
    assert (m.rule.rule_index, m.path) == (0, "/y")


def test_a_rule_without_matches_matches_every_path():
    s = compile_yaml(GATEWAY, SERVICES, route("r", "  - backendRefs: [{name: a, port: 80}]\n"))
    assert hit(s, "/") == "a"
    assert hit(s, "/anything/at/all") == "a"


def test_prefix_with_trailing_slash_equals_prefix_without():
    s = compile_yaml(GATEWAY, SERVICES, route("r", to("a", "{path: {value: /foo/}}")))
    assert hit(s, "/foo") == "a"
    assert hit(s, "/foo/bar") == "a"
    assert hit(s, "/foobar") is None


def test_header_names_are_case_insensitive_values_exact_and_regex_full_match():
    s = compile_yaml(
        GATEWAY,
        SERVICES,
        route(
            "r",
            to("a", "{headers: [{name: X-Env, value: Prod}]}")
            + to("b", "{headers: [{name: x-ver, type: RegularExpression, value: 'v[0-9]'}]}"),
        ),
    )
    assert hit(s, "/", headers=[("x-env", "Prod")]) == "a"
    assert hit(s, "/", headers=[("X-ENV", "prod")]) is None
    assert hit(s, "/", headers=[("x-ver", "v2")]) == "b"
    assert hit(s, "/", headers=[("x-ver", "v22")]) is None


def test_query_params_need_parsing_only_where_matched():
    s = compile_yaml(GATEWAY, SERVICES, route("r", to("a", "{queryParams: [{name: k, value: v}]}")))
    table = s.ports[8080].select("h").hosts_for("h")
    assert table.needs_query
    assert hit(s, "/", query="k=v&x=1") == "a"
    assert hit(s, "/", query="k=w") is None
    s = compile_yaml(GATEWAY, SERVICES, route("r", to("a")))
    assert not s.ports[8080].select("h").hosts_for("h").needs_query


# --- hostnames ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listener", "route_host", "want"),
    [
        ("foo.example.com", "foo.example.com", "foo.example.com"),
        ("foo.example.com", "bar.example.com", None),
        ("*.example.com", "foo.example.com", "foo.example.com"),
        ("*.example.com", "a.b.example.com", "a.b.example.com"),
        ("*.example.com", "example.com", None),
        ("foo.example.com", "*.example.com", "foo.example.com"),
        ("example.com", "*.example.com", None),
        ("*.example.com", "*.example.com", "*.example.com"),
        ("*.example.com", "*.foo.example.com", "*.foo.example.com"),
        ("*.foo.example.com", "*.example.com", "*.foo.example.com"),
        ("*.b.com", "*.ab.com", None),
    ],
)
def test_hostname_pair_intersection(listener, route_host, want):
    assert intersect_pair(listener, route_host) == want


def test_effective_hostnames():
    assert effective_hostnames(None, []) == [""]
    assert effective_hostnames(None, ["A.com", "b.com"]) == ["a.com", "b.com"]
    assert effective_hostnames("*.x.io", []) == ["*.x.io"]
    assert effective_hostnames("*.x.io", ["a.x.io", "x.io", "*.y.io"]) == ["a.x.io"]
    assert effective_hostnames("a.x.io", ["z.io"]) == []


def test_a_request_uses_only_its_most_specific_host_table():
    # Envoy virtual-host semantics: foo.com has its own table, so a request for foo.com
    # never reaches the catch-all route's rules, even for a path only the catch-all has.
    s = compile_yaml(
        GATEWAY,
        SERVICES,
        route("specific", to("a", "{path: {value: /only-here}}"), hostnames="  hostnames: [foo.com]"),
        route("wild", to("b", "{path: {value: /w}}"), hostnames="  hostnames: ['*.foo.com']"),
        route("catchall", to("c")),
    )
    assert hit(s, "/only-here", host="foo.com") == "a"
    assert hit(s, "/other", host="foo.com") is None
    assert hit(s, "/w", host="x.foo.com") == "b"
    assert hit(s, "/other", host="x.y.foo.com") is None
    assert hit(s, "/other", host="bar.com") == "c"
    listener = s.ports[8080].default_listener
    assert list(listener.exact_hosts) == ["foo.com"]
    assert [suffix for suffix, _ in listener.wildcard_hosts] == [".foo.com"]


def test_wildcard_tables_longest_suffix_first():
    s = compile_yaml(
        GATEWAY,
        SERVICES,
        route("r1", to("a"), hostnames="  hostnames: ['*.com']"),
        route("r2", to("b"), hostnames="  hostnames: ['*.example.com']"),
    )
    assert hit(s, "/", host="x.example.com") == "b"
    assert hit(s, "/", host="x.other.com") == "a"
    assert hit(s, "/", host="example.com") == "a"


def test_hostnames_are_lowercase_and_host_port_ignored():
    s = compile_yaml(GATEWAY, SERVICES, route("r", to("a"), hostnames="  hostnames: [foo.com]"))
    assert hit(s, "/", host="FOO.com:8080") == "a"


LISTENERS = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: meshgate
  listeners:
  - {name: any, port: 8080, protocol: HTTP}
  - {name: exact, port: 8080, protocol: HTTP, hostname: api.example.com}
  - {name: wild, port: 8080, protocol: HTTP, hostname: '*.example.com'}
  - {name: deeper, port: 8080, protocol: HTTP, hostname: '*.eu.example.com'}
"""


def test_port_router_picks_exact_then_longest_wildcard_then_default_listener():
    s = compile_yaml(LISTENERS, SERVICES, route("r", to("a")))
    router = s.ports[8080]
    assert router.select("api.example.com").listener == "exact"
    assert router.select("x.eu.example.com").listener == "deeper"
    assert router.select("eu.example.com").listener == "wild"
    assert router.select("www.example.com").listener == "wild"
    assert router.select("example.com").listener == "any"
    assert [suffix for suffix, _ in router.wildcard_listeners] == [".eu.example.com", ".example.com"]


def test_route_without_hostnames_takes_each_listener_hostname():
    s = compile_yaml(LISTENERS, SERVICES, route("r", to("a")))
    router = s.ports[8080]
    assert router.select("api.example.com").exact_hosts.keys() == {"api.example.com"}
    assert router.select("w.example.com").wildcard_hosts[0][0] == ".example.com"
    assert router.select("other.org").any_host is not None
    for host in ("api.example.com", "x.eu.example.com", "w.example.com", "other.org"):
        assert hit(s, "/", host=host) == "a", host


def test_dump_is_json_and_shows_tables_per_port_listener_and_host():
    import json

    s = compile_yaml(LISTENERS, SERVICES, route("r", to("a"), hostnames="  hostnames: [api.example.com]"))
    text = json.dumps(s.dump)
    assert s.version in text
    (exact,) = [lst for lst in s.dump["ports"]["8080"] if lst["listener"] == "exact"]
    (entry,) = exact["hosts"]["api.example.com"]
    assert entry["route"] == "default/r"
    assert entry["path"] == {"type": "PathPrefix", "value": "/"}
    assert entry["backends"][0]["cluster"] == "service/default/a:80"
    # the route attaches to exact, wild and any (api.example.com intersects each)
    parents = s.dump["routes"]["default/r"]["parents"]
    assert sorted(parents[0]["listeners"]) == ["any", "exact", "wild"]
