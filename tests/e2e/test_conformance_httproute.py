"""Gateway API HTTPRoute conformance, reproduced against a real meshgate process.

Each manifest of shared/conformance/manifests/tests is served (with base.yaml) by one
gateway process; the request -> expected response cases are those of the upstream Go
tests (kubernetes-sigs/gateway-api conformance/tests/<name>.go). Where an upstream test
needs the cluster (status conditions), only its data-plane half is here. Differences
forced by running on 127.0.0.1: listener ports are free ports chosen at run time, so a
redirect that keeps "the listener port" carries that port.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from harness import (
    BackendPool,
    ConformanceConfig,
    Gateway,
    conformance_config,
    wait_until,
)

INFRA = "gateway-conformance-infra"
WEB = "gateway-conformance-web-backend"
SAME = f"{INFRA}/same-namespace"
LISTENER = "listener"  # redirect port placeholder: the (real) port of the listener used


@dataclass
class Case:
    name: str
    path: str = "/"
    host: str | None = None
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    # Echo server response headers to set (X-Echo-Set-Header).
    backend_sets: dict[str, str] = field(default_factory=dict)
    gateway: str = SAME
    listener_port: int = 80
    # expectations
    status: int | tuple[int, ...] = 200
    backend: str | None = None
    namespace: str = INFRA
    expected_path: str | None = None
    expected_host: str | None = None
    expected_headers: dict[str, str] | None = None
    absent_headers: list[str] = field(default_factory=list)
    response_headers: dict[str, str] = field(default_factory=dict)
    response_header_values: dict[str, list[str]] = field(default_factory=dict)
    absent_response_headers: list[str] = field(default_factory=list)
    redirect: dict[str, str] | None = None  # scheme / host / port / path
    mirrored_to: list[str] = field(default_factory=list)
    not_received_by: list[tuple[str, str]] = field(default_factory=list)  # (ns, service)


def C(name, path="/", **kw) -> Case:
    return Case(name=name, path=path, **kw)


def v(n: int) -> dict:
    return {"backend": f"infra-backend-v{n}"}


NOT_FOUND = {"status": 404}
MOD_HEADERS_IN = {"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1", "X-Header-Set": "set-val"}
MOD_HEADERS_OUT = {
    "X-Header-Set": "set-overwrites-values",
    "X-Header-Add": "header-val-1",
    "X-Header-Add-Append": "append-val-1,header-val-2",
}


def header_modifier_cases() -> list[Case]:
    """HTTPRouteRequestHeaderModifier (also used for the backendRef-level filter)."""
    return [
        C("set", "/set", headers={"Some-Other-Header": "val"}, **v(1),
          expected_headers={"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"}),
        C("set-overwrites", "/set", headers={"Some-Other-Header": "val", "X-Header-Set": "some-other-value"}, **v(1),
          expected_headers={"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"}),
        C("add", "/add", headers={"Some-Other-Header": "val"}, **v(1),
          expected_headers={"Some-Other-Header": "val", "X-Header-Add": "add-appends-values"}),
        C("add-appends", "/add", headers={"Some-Other-Header": "val", "X-Header-Add": "some-other-value"}, **v(1),
          expected_headers={"Some-Other-Header": "val", "X-Header-Add": "some-other-value,add-appends-values"}),
        C("remove", "/remove", headers={"X-Header-Remove": "val"}, **v(1), expected_headers={},
          absent_headers=["X-Header-Remove"]),
        C("multiple", "/multiple", **v(1),
          headers={"X-Header-Set-2": "set-val-2", "X-Header-Add-2": "add-val-2",
                   "X-Header-Remove-2": "remove-val-2", "Another-Header": "another-header-val"},
          expected_headers={"X-Header-Set-1": "header-set-1", "X-Header-Set-2": "header-set-2",
                            "X-Header-Add-1": "header-add-1", "X-Header-Add-2": "add-val-2,header-add-2",
                            "X-Header-Add-3": "header-add-3", "Another-Header": "another-header-val"},
          absent_headers=["X-Header-Remove-1", "X-Header-Remove-2"]),
        C("case-insensitivity", "/case-insensitivity", **v(1),
          headers={"x-header-set": "original-val-set", "x-header-add": "original-val-add",
                   "x-header-remove": "original-val-remove", "Another-Header": "another-header-val"},
          expected_headers={"X-Header-Set": "header-set", "X-Header-Add": "original-val-add,header-add",
                            "Another-Header": "another-header-val"},
          absent_headers=["x-header-remove", "X-Header-Remove"]),
    ]


def redirect(**kw) -> dict:
    return {"redirect": kw, "status": kw.pop("status", 302)}


# manifest -> (served gateways, cases)
MANIFESTS: dict[str, tuple[list[str], list[Case]]] = {
    "httproute-simple-same-namespace": ([SAME], [C("root", "/", **v(1))]),
    "httproute-matching": ([SAME], [
        C("root", "/", **v(1)),
        C("example", "/example", **v(1)),
        C("root-version-one", "/", headers={"Version": "one"}, **v(1)),
        C("v2", "/v2", **v(2)),
        C("v2-example", "/v2/example", **v(2)),
        C("root-version-two", "/", headers={"Version": "two"}, **v(2)),
        # PathPrefix matches whole path elements (not upstream cases; spec semantics).
        C("v2-trailing-slash", "/v2/", **v(2)),
        C("v2example-is-not-under-v2", "/v2example", **v(1)),
        C("v2-with-query", "/v2?x=1", **v(2)),
    ]),
    "httproute-header-matching": ([SAME], [
        C("version-one", headers={"Version": "one"}, **v(1)),
        C("version-two", headers={"Version": "two"}, **v(2)),
        C("version-two-color-orange", headers={"Version": "two", "Color": "orange"}, **v(1)),
        C("version-two-color-blue", headers={"Version": "two", "Color": "blue"}, **v(2)),
        C("color-orange", headers={"Color": "orange"}, **NOT_FOUND),
        C("other-header", headers={"Some-Other-Header": "one"}, **NOT_FOUND),
        C("color-blue", headers={"Color": "blue"}, **v(1)),
        C("color-green", headers={"Color": "green"}, **v(1)),
        C("color-red", headers={"Color": "red"}, **v(2)),
        C("color-yellow", headers={"Color": "yellow"}, **v(2)),
        C("color-purple", headers={"Color": "purple"}, **NOT_FOUND),
        # Header names match case-insensitively, values exactly (spec; not upstream cases).
        C("name-uppercase", headers={"VERSION": "one"}, **v(1)),
        C("value-case-differs", headers={"Version": "ONE"}, **NOT_FOUND),
    ]),
    "httproute-query-param-matching": ([SAME], [
        C("whale", "/?animal=whale", **v(1)),
        C("dolphin", "/?animal=dolphin", **v(2)),
        C("dolphin-blue", "/?animal=dolphin&color=blue", **v(3)),
        C("ANIMAL-Whale", "/?ANIMAL=Whale", **v(3)),
        C("whale-otherparam", "/?animal=whale&otherparam=irrelevant", **v(1)),
        C("dolphin-yellow", "/?animal=dolphin&color=yellow", **v(2)),
        C("color-only", "/?color=blue", **NOT_FOUND),
        C("dog", "/?animal=dog", **NOT_FOUND),
        C("whaledolphin", "/?animal=whaledolphin", **NOT_FOUND),
        C("no-query", "/", **NOT_FOUND),
        C("path1-whale", "/path1?animal=whale", **v(1)),
        C("version-one-whale", "/?animal=whale", headers={"version": "one"}, **v(2)),
        C("version-two-path2-whale", "/path2?animal=whale", headers={"version": "two"}, **v(3)),
        C("path3-shark", "/path3?animal=shark", **v(1)),
        C("path4-kraken-version-three", "/path4?animal=kraken", headers={"version": "three"}, **v(1)),
        C("shark-without-path", "/?animal=shark", **NOT_FOUND),
        C("path4-kraken-without-header", "/path4?animal=kraken", **NOT_FOUND),
        C("precedence-path5-hydra", "/path5?animal=hydra", **v(1)),
        C("precedence-version-four-hydra", "/?animal=hydra", headers={"version": "four"}, **v(3)),
    ]),
    "httproute-method-matching": ([SAME], [
        C("post", method="POST", **v(1)),
        C("get", method="GET", **v(2)),
        C("head", method="HEAD", **NOT_FOUND),
        C("path1-get", "/path1", method="GET", **v(1)),
        C("version-one-put", method="PUT", headers={"version": "one"}, **v(2)),
        C("path2-version-two-post", "/path2", method="POST", headers={"version": "two"}, **v(3)),
        C("path3-patch", "/path3", method="PATCH", **v(1)),
        C("path4-version-three-delete", "/path4", method="DELETE", headers={"version": "three"}, **v(1)),
        C("put-without-header", method="PUT", **NOT_FOUND),
        C("path4-delete-without-header", "/path4", method="DELETE", **NOT_FOUND),
        C("precedence-path5-patch", "/path5", method="PATCH", **v(1)),
        C("precedence-version-four-patch", method="PATCH", headers={"version": "four"}, **v(2)),
    ]),
    "httproute-exact-path-matching": ([SAME], [
        C("one", "/one", **v(1)),
        C("two", "/two", **v(2)),
        C("root", "/", **NOT_FOUND),
        C("one-example", "/one/example", **NOT_FOUND),
        C("two-slash", "/two/", **NOT_FOUND),
        C("Two-case", "/Two", **NOT_FOUND),
        C("one-with-query", "/one?x=1", **v(1)),
    ]),
    "httproute-path-match-order": ([SAME], [
        C("exact-one", "/match/exact/one", **v(3)),
        C("exact", "/match/exact", **v(2)),
        C("match", "/match", **v(1)),
        C("prefix-one-any", "/match/prefix/one/any", **v(2)),
        C("prefix-any", "/match/prefix/any", **v(1)),
        C("any", "/match/any", **v(3)),
    ]),
    "httproute-matching-across-routes": ([SAME], [
        C("com-root", "/", host="example.com", **v(1)),
        C("com-example", "/example", host="example.com", **v(1)),
        C("net-example", "/example", host="example.net", **v(1)),
        C("com-example-version-one", "/example", host="example.com", headers={"Version": "one"}, **v(1)),
        C("com-v2", "/v2", host="example.com", **v(2)),
        C("net-v2-is-v1", "/v2", host="example.net", **v(1)),
        C("com-v2-example", "/v2/example", host="example.com", **v(2)),
        C("com-root-version-two", "/", host="example.com", headers={"Version": "two"}, **v(2)),
    ]),
    "httproute-listener-hostname-matching": ([f"{INFRA}/httproute-listener-hostname-matching"], [
        C(h, "/", host=h, gateway=f"{INFRA}/httproute-listener-hostname-matching", **exp)
        for h, exp in [
            ("bar.com", v(1)), ("foo.bar.com", v(2)), ("baz.bar.com", v(3)), ("boo.bar.com", v(3)),
            ("multiple.prefixes.bar.com", v(3)), ("multiple.prefixes.foo.com", v(3)),
            ("foo.com", NOT_FOUND), ("no.matching.host", NOT_FOUND),
        ]
    ]),
    "httproute-listener-port-matching": ([f"{INFRA}/httproute-listener-port-matching"], [
        C(f"{h}-{p}", "/", host=h if p == 80 else f"{h}:{p}", listener_port=p,
          gateway=f"{INFRA}/httproute-listener-port-matching", **exp)
        for h, p, exp in [
            ("foo.com", 80, v(1)), ("foo.com", 8080, v(2)), ("bar.com", 8080, v(2)),
            ("foo.com", 8090, v(3)), ("bar.com", 8090, NOT_FOUND),
        ]
    ]),
    "httproute-hostname-intersection": (
        [f"{INFRA}/httproute-hostname-intersection", f"{INFRA}/httproute-hostname-intersection-all"],
        [
            C(f"{h}{p}", p, host=h, gateway=f"{INFRA}/httproute-hostname-intersection", **exp)
            for h, p, exp in [
                ("very.specific.com", "/s1", v(1)), ("very.specific.com:1234", "/s1", v(1)),
                ("non.matching.com", "/s1", NOT_FOUND), ("foo.nonmatchingwildcard.io", "/s1", NOT_FOUND),
                ("foo.wildcard.io", "/s1", NOT_FOUND), ("very.specific.com", "/non-matching-prefix", NOT_FOUND),
                ("foo.wildcard.io", "/s2", v(2)), ("bar.wildcard.io", "/s2", v(2)),
                ("foo.bar.wildcard.io", "/s2", v(2)), ("non.matching.com", "/s2", NOT_FOUND),
                ("wildcard.io", "/s2", NOT_FOUND), ("very.specific.com", "/s2", NOT_FOUND),
                ("foo.wildcard.io", "/non-matching-prefix", NOT_FOUND),
                ("very.specific.com", "/s3", v(3)), ("non.matching.com", "/s3", NOT_FOUND),
                ("foo.specific.com", "/s3", NOT_FOUND), ("foo.wildcard.io", "/s3", NOT_FOUND),
                ("very.specific.com", "/non-matching-prefix", NOT_FOUND),
                ("foo.anotherwildcard.io", "/s4", v(1)), ("bar.anotherwildcard.io", "/s4", v(1)),
                ("foo.bar.anotherwildcard.io", "/s4", v(1)), ("anotherwildcard.io", "/s4", NOT_FOUND),
                ("foo.wildcard.io", "/s4", NOT_FOUND), ("very.specific.com", "/s4", NOT_FOUND),
                ("foo.anotherwildcard.io", "/non-matching-prefix", NOT_FOUND),
                ("specific.but.wrong.com", "/s5", NOT_FOUND), ("wildcard.io", "/s5", NOT_FOUND),
            ]
        ]
        + [
            C(f"all-{h}", "/", host=h, gateway=f"{INFRA}/httproute-hostname-intersection-all", **exp)
            for h, exp in [
                ("first.com", v(2)), ("sub.first.com", v(2)), ("second.com", v(2)),
                ("sub.second.com", v(2)), ("third.com", NOT_FOUND), ("sub.third.com", NOT_FOUND),
            ]
        ],
    ),
    "httproute-multiple-gateways": ([SAME, f"{INFRA}/all-namespaces"], [
        C("same-shared", "/shared", **v(1)),
        C("same-root", "/", **v(2)),
        C("all-shared", "/shared", gateway=f"{INFRA}/all-namespaces", **v(1)),
        C("all-root", "/", gateway=f"{INFRA}/all-namespaces", **v(3)),
    ]),
    "httproute-cross-namespace": ([f"{INFRA}/backend-namespaces"], [
        C("web-backend", "/", gateway=f"{INFRA}/backend-namespaces", backend="web-backend", namespace=WEB),
    ]),
    "httproute-reference-grant": ([SAME], [
        C("granted-web-backend", "/", backend="web-backend", namespace=WEB),
    ]),
    "httproute-invalid-cross-namespace-backend-ref": ([SAME], [
        C("no-grant-500", "/", status=500, not_received_by=[(WEB, "web-backend")]),
    ]),
    "httproute-invalid-nonexistent-backendref": ([SAME], [C("nonexistent-500", "/", status=500)]),
    "httproute-invalid-backendref-unknown-kind": ([SAME], [
        C("unknown-kind-500", "/", status=500, not_received_by=[(INFRA, "infra-backend-v1")]),
    ]),
    "httproute-omitted-backendrefs": ([SAME], [
        C("omitted-500", "/omitted-no-forward", status=500),
        C("empty-500", "/empty-no-forward", status=500),
        C("root-forwarded", "/", **v(1)),
    ]),
    "httproute-named-rule": ([SAME], [C("named", "/named", **v(1)), C("unnamed", "/unnamed", **v(2))]),
    "httproute-request-header-modifier": ([SAME], header_modifier_cases()),
    "httproute-request-header-modifier-backend": ([SAME], header_modifier_cases()),
    "httproute-response-header-modifier": ([SAME], [
        C("set", "/set", **v(1), response_headers={"X-Header-Set": "set-overwrites-values"}),
        C("set-overwrites", "/set", **v(1), backend_sets={"X-Header-Set": "some-other-value"},
          response_headers={"X-Header-Set": "set-overwrites-values"}),
        C("add", "/add", **v(1), response_headers={"X-Header-Add": "add-appends-values"}),
        C("add-appends", "/add", **v(1), backend_sets={"X-Header-Add": "some-other-value"},
          response_headers={"X-Header-Add": "some-other-value,add-appends-values"}),
        C("remove", "/remove", **v(1), backend_sets={"X-Header-Remove": "val"},
          absent_response_headers=["X-Header-Remove"]),
        C("multiple", "/multiple", **v(1),
          backend_sets={"X-Header-Set-2": "set-val-2", "X-Header-Add-2": "add-val-2",
                        "X-Header-Remove-2": "remove-val-2", "Another-Header": "another-header-val"},
          response_headers={"X-Header-Set-1": "header-set-1", "X-Header-Set-2": "header-set-2",
                            "X-Header-Add-1": "header-add-1", "X-Header-Add-2": "add-val-2,header-add-2",
                            "X-Header-Add-3": "header-add-3", "Another-Header": "another-header-val"},
          absent_response_headers=["X-Header-Remove-1", "X-Header-Remove-2"]),
        C("case-insensitivity", "/case-insensitivity", **v(1),
          backend_sets={"x-header-set": "original-val-set", "x-header-add": "original-val-add",
                        "x-header-remove": "original-val-remove", "Another-Header": "another-header-val"},
          response_headers={"X-Header-Set": "header-set", "X-Header-Add": "original-val-add,header-add",
                            "x-lowercase-add": "lowercase-add", "x-mixedcase-add-1": "mixedcase-add-1",
                            "x-mixedcase-add-2": "mixedcase-add-2", "x-uppercase-add": "uppercase-add",
                            "Another-Header": "another-header-val"},
          absent_response_headers=["X-Header-Remove"]),
        C("request-and-response", "/response-and-request-header-modifiers", **v(1),
          headers=MOD_HEADERS_IN, expected_headers=MOD_HEADERS_OUT, absent_headers=["X-Header-Remove"],
          backend_sets={"X-Header-Set-2": "set-val-2", "X-Header-Add-2": "add-val-2",
                        "X-Header-Remove-2": "remove-val-2"},
          response_headers={"X-Header-Set-1": "header-set-1", "X-Header-Set-2": "header-set-2",
                            "X-Header-Add-1": "header-add-1", "X-Header-Add-2": "add-val-2,header-add-2"},
          absent_response_headers=["X-Header-Remove-1", "X-Header-Remove-2"]),
    ]),
    "httproute-rewrite-host": ([SAME], [
        C("one", "/one", host="rewrite.example", **v(1), expected_host="one.example.org"),
        C("root", "/", host="rewrite.example", **v(2), expected_host="example.org"),
        C("and-modify-headers", "/rewrite-host-and-modify-headers", host="rewrite.example", **v(2),
          headers=MOD_HEADERS_IN, expected_host="test.example.org", expected_headers=MOD_HEADERS_OUT,
          absent_headers=["X-Header-Remove"]),
    ]),
    "httproute-rewrite-path": ([SAME], [
        C("prefix", "/prefix/one/two", **v(1), expected_path="/one/two"),
        C("prefix-exact", "/prefix/one", **v(1), expected_path="/one"),
        C("prefix-keeps-query", "/prefix/one/two?a=b", **v(1), expected_path="/one/two?a=b"),
        C("strip-prefix", "/strip-prefix/three", **v(1), expected_path="/three"),
        C("strip-prefix-all", "/strip-prefix", **v(1), expected_path="/"),
        C("full", "/full/one/two", **v(1), expected_path="/one"),
        C("full-and-modify-headers", "/full/rewrite-path-and-modify-headers/test", **v(1),
          headers=MOD_HEADERS_IN, expected_path="/test", expected_headers=MOD_HEADERS_OUT,
          absent_headers=["X-Header-Remove"]),
        C("prefix-and-modify-headers", "/prefix/rewrite-path-and-modify-headers/one", **v(1),
          headers=MOD_HEADERS_IN, expected_path="/prefix/one", expected_headers=MOD_HEADERS_OUT,
          absent_headers=["X-Header-Remove"]),
    ]),
    "httproute-303-redirect": ([SAME], [C("see-other", "/see-other", **redirect(status=303, path="/see-other"))]),
    "httproute-307-redirect": ([SAME], [C("temporary", "/temporary", **redirect(status=307, path="/temporary"))]),
    "httproute-308-redirect": ([SAME], [C("permanent", "/permanent", **redirect(status=308, path="/permanent"))]),
    "httproute-redirect-host-and-status": ([SAME], [
        C("hostname", "/hostname-redirect", **redirect(host="example.org", path="/hostname-redirect")),
        C("host-and-status", "/host-and-status", **redirect(status=301, host="example.org")),
    ]),
    "httproute-redirect-path": ([SAME], [
        C("prefix", "/original-prefix/lemon", **redirect(path="/replacement-prefix/lemon")),
        C("full", "/full/path/original", **redirect(path="/full-path-replacement")),
        C("path-and-host", "/path-and-host", **redirect(host="example.org", path="/replacement-prefix")),
        C("path-and-status", "/path-and-status", **redirect(status=301, path="/replacement-prefix")),
        C("full-path-and-host", "/full-path-and-host", **redirect(host="example.org", path="/replacement-full")),
        C("full-path-and-status", "/full-path-and-status", **redirect(status=301, path="/replacement-full")),
    ]),
    "httproute-redirect-port": ([SAME], [
        C("port", "/port", **redirect(scheme="http", host="127.0.0.1", port="8083", path="/port")),
        C("port-and-host", "/port-and-host", **redirect(host="example.org", port="8083")),
        C("port-and-status", "/port-and-status", **redirect(status=301, host="127.0.0.1", port="8083")),
        C("port-host-status", "/port-and-host-and-status", **redirect(status=302, host="example.org", port="8083")),
    ]),
    "httproute-redirect-scheme": ([SAME], [
        C("scheme", "/scheme", **redirect(scheme="https", host="127.0.0.1", port="", path="/scheme")),
        C("scheme-and-host", "/scheme-and-host", **redirect(scheme="https", host="example.org", port="")),
        C("scheme-and-status", "/scheme-and-status", **redirect(status=301, scheme="https", port="")),
        C("scheme-host-status", "/scheme-and-host-and-status",
          **redirect(status=302, scheme="https", host="example.org", port="")),
    ]),
    "httproute-redirect-port-and-scheme": (
        [SAME, f"{INFRA}/same-namespace-with-http-listener-on-8080"],
        [
            C("80-nil-nil", "/scheme-nil-and-port-nil", **redirect(scheme="http", host="example.org", port=LISTENER)),
            C("80-nil-80", "/scheme-nil-and-port-80", **redirect(scheme="http", host="example.org", port="")),
            C("80-nil-8080", "/scheme-nil-and-port-8080", **redirect(scheme="http", host="example.org", port="8080")),
            C("80-https-nil", "/scheme-https-and-port-nil", **redirect(scheme="https", host="example.org", port="")),
            C("80-https-443", "/scheme-https-and-port-443", **redirect(scheme="https", host="example.org", port="")),
            C("80-https-8443", "/scheme-https-and-port-8443",
              **redirect(scheme="https", host="example.org", port="8443")),
        ]
        + [
            C(f"8080-{name}", path, gateway=f"{INFRA}/same-namespace-with-http-listener-on-8080",
              listener_port=8080, **redirect(scheme=scheme, host="example.org", port=port))
            for name, path, scheme, port in [
                ("nil-nil", "/scheme-nil-and-port-nil", "http", LISTENER),
                ("nil-80", "/scheme-nil-and-port-80", "http", ""),
                ("https-nil", "/scheme-https-and-port-nil", "https", ""),
            ]
        ],
    ),
    "httproute-request-mirror": ([SAME], [
        C("mirror", "/mirror", **v(1), mirrored_to=["infra-backend-v2"]),
        C("mirror-and-modify-headers", "/mirror-and-modify-headers", **v(1), mirrored_to=["infra-backend-v2"],
          headers={"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1", "X-Header-Set": "x"},
          expected_headers={"X-Header-Set": "set-overwrites-values", "X-Header-Add": "header-val-1",
                            "X-Header-Add-Append": "append-val-1,header-val-2"},
          absent_headers=["X-Header-Remove"]),
    ]),
    "httproute-request-multiple-mirrors": ([SAME], [
        C("multi-mirror", "/multi-mirror", **v(1), mirrored_to=["infra-backend-v2", "infra-backend-v3"]),
        C("multi-mirror-and-modify-headers", "/multi-mirror-and-modify-request-headers", **v(1),
          mirrored_to=["infra-backend-v2", "infra-backend-v3"],
          headers={"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1"},
          expected_headers={"X-Header-Set": "set-overwrites-values", "X-Header-Add": "header-val-1",
                            "X-Header-Add-Append": "append-val-1,header-val-2"},
          absent_headers=["X-Header-Remove"]),
    ]),
    "httproute-timeout-request": ([SAME], [
        C("fast", "/request-timeout", **v(1)),
        C("slow-504", "/request-timeout?delay=1s", status=504),
        C("disabled", "/disable-request-timeout?delay=1s", **v(1)),
    ]),
    "httproute-timeout-backend-request": ([SAME], [
        C("fast", "/backend-timeout", **v(1)),
        C("slow-504", "/backend-timeout?delay=1s", status=504),
        C("disabled", "/disable-backend-timeout?delay=1s", **v(1)),
    ]),
    "httproute-cors": ([SAME], [
        C("preflight-exact-origin", "/cors-1", method="OPTIONS", status=(200, 204),
          headers={"Origin": "https://www.foo.com", "access-control-request-method": "GET",
                   "access-control-request-headers": "x-header-1, x-header-2"},
          response_header_values={
              "access-control-allow-origin": ["https://www.foo.com"],
              "access-control-allow-methods": ["GET,OPTIONS", "OPTIONS,GET"],
              "access-control-allow-headers": ["x-header-1,x-header-2", "x-header-2,x-header-1"],
              "access-control-expose-headers": ["x-header-3,x-header-4", "x-header-4,x-header-3"],
              "access-control-max-age": ["3600"],
              "access-control-allow-credentials": ["true"]}),
        C("preflight-wildcard-origin", "/cors-1", method="OPTIONS", status=(200, 204),
          headers={"Origin": "https://www.bar.com", "access-control-request-method": "GET",
                   "access-control-request-headers": "x-header-1, x-header-2"},
          response_header_values={"access-control-allow-origin": ["https://www.bar.com"],
                                  "access-control-allow-credentials": ["true"],
                                  "access-control-max-age": ["3600"]}),
        C("preflight-wildcard-many-labels", "/cors-1", method="OPTIONS", status=(200, 204),
          headers={"Origin": "https://xpto.www.bar.com", "access-control-request-method": "GET"},
          response_header_values={"access-control-allow-origin": ["https://xpto.www.bar.com"]}),
        C("preflight-non-matching-origin", "/cors-1", method="OPTIONS", status=(200, 204, 403),
          headers={"Origin": "https://foobar.com", "access-control-request-method": "GET"},
          absent_response_headers=["access-control-allow-origin"]),
        C("simple-exact-origin", "/cors-1", **v(1), status=(200, 204),
          headers={"Origin": "https://www.foo.com"},
          response_headers={"access-control-allow-origin": "https://www.foo.com"}),
        C("simple-wildcard-origin", "/cors-1", **v(1), status=(200, 204),
          headers={"Origin": "https://www.bar.com"},
          response_headers={"access-control-allow-origin": "https://www.bar.com"}),
        C("simple-non-matching-origin", "/cors-1", **v(1), headers={"Origin": "https://foobar.com"},
          absent_response_headers=["access-control-allow-origin"]),
        C("preflight-wildcard-methods-post", "/cors-2", method="OPTIONS", status=(200, 204),
          headers={"Origin": "https://www.foo.com", "access-control-request-method": "POST"},
          response_header_values={"access-control-allow-methods": ["POST", "*"],
                                  "access-control-allow-origin": ["https://www.foo.com"]},
          absent_response_headers=["access-control-allow-credentials"]),
        C("preflight-any-origin", "/cors-wildcard-origin", method="OPTIONS", status=(200, 204),
          headers={"Origin": "https://foobar.com", "access-control-request-method": "PUT"},
          response_header_values={"access-control-allow-origin": ["https://foobar.com", "*"],
                                  "access-control-allow-methods": ["PUT"]},
          absent_response_headers=["access-control-allow-credentials"]),
        C("preflight-any-origin-with-port", "/cors-wildcard-origin", method="OPTIONS", status=(200, 204),
          headers={"Origin": "https://foobar.com:12345", "access-control-request-method": "PUT"},
          response_header_values={"access-control-allow-origin": ["https://foobar.com:12345", "*"],
                                  "access-control-allow-methods": ["PUT"]}),
        C("simple-any-origin-with-port", "/cors-wildcard-origin", method="PUT", **v(1),
          headers={"Origin": "https://foobar.com:12345"},
          response_header_values={"access-control-allow-origin": ["https://foobar.com:12345", "*"]}),
        C("credentialed-wildcard-echoes-origin", "/cors-wildcard-methods-headers", method="OPTIONS",
          status=(200, 204),
          headers={"Origin": "https://foobar.com", "access-control-request-method": "PUT",
                   "access-control-request-headers": "x-custom"},
          response_header_values={"access-control-allow-origin": ["https://foobar.com"],
                                  "access-control-allow-credentials": ["true"]}),
    ]),
}

CASES = [(manifest, case) for manifest, (_, cases) in MANIFESTS.items() for case in cases]


class GatewayCache:
    """One gateway process at a time, for the manifest the current case needs.

    Cases are parametrized grouped by manifest, so each manifest starts one process.
    """

    def __init__(self, pool: BackendPool) -> None:
        self.pool = pool
        self.manifest: str | None = None
        self.gateway: Gateway | None = None
        self.config: ConformanceConfig | None = None
        self.client: httpx.Client | None = None

    def get(self, manifest: str) -> tuple[Gateway, ConformanceConfig, httpx.Client]:
        if manifest != self.manifest:
            self.close()
            gateways = MANIFESTS.get(manifest, ([SAME], []))[0]
            self.config = conformance_config(f"{manifest}.yaml", gateways, self.pool)
            self.manifest = manifest
            self.gateway = Gateway(self.config.docs, gateways=gateways).start()
            self.client = httpx.Client(timeout=10, follow_redirects=False)
        assert self.gateway and self.config and self.client
        return self.gateway, self.config, self.client

    def close(self) -> None:
        if self.client:
            self.client.close()
        if self.gateway:
            self.gateway.cleanup()
        self.manifest = self.gateway = self.config = self.client = None


@pytest.fixture(scope="module")
def gateways(backend_pool):
    cache = GatewayCache(backend_pool)
    yield cache
    cache.close()


def send(client: httpx.Client, port: int, case: Case, path: str | None = None) -> httpx.Response:
    headers = dict(case.headers)
    if case.host:
        headers["Host"] = case.host
    if case.backend_sets:
        headers["X-Echo-Set-Header"] = ",".join(f"{k}:{v}" for k, v in case.backend_sets.items())
    return client.request(case.method, f"http://127.0.0.1:{port}{path or case.path}", headers=headers)


def joined(values: list[str]) -> str:
    return ",".join(x.strip() for v in values for x in v.split(","))


def echo_header(echoed: dict[str, list[str]], name: str) -> list[str] | None:
    for k, values in echoed.items():
        if k.lower() == name.lower():
            return values
    return None


def check(case: Case, resp: httpx.Response, port: int) -> None:
    expected_status = case.status if isinstance(case.status, tuple) else (case.status,)
    assert resp.status_code in expected_status, (
        f"{case.method} {case.path} (Host {case.host}): status {resp.status_code}, "
        f"want {expected_status}; body {resp.text[:300]!r}"
    )
    if case.backend:
        body = resp.json()
        assert body["pod"].startswith(case.backend + "-"), f"served by {body['pod']}, want {case.backend}"
        assert body["namespace"] == case.namespace
        assert body["path"] == (case.expected_path or case.path)
        assert body["method"] == case.method
        if case.expected_host is not None:
            assert body["host"].split(":")[0] == case.expected_host
        for name, value in (case.expected_headers or {}).items():
            got = echo_header(body["headers"], name)
            assert got is not None, f"upstream did not get header {name}: {body['headers']}"
            assert joined(got) == value, f"upstream header {name}: {got}, want {value}"
        for name in case.absent_headers:
            assert echo_header(body["headers"], name) is None, f"upstream got header {name}"
    for name, value in case.response_headers.items():
        got = resp.headers.get_list(name)
        assert got, f"response lacks header {name}: {dict(resp.headers)}"
        assert joined(got) == value, f"response header {name}: {got}, want {value}"
    for name, allowed in case.response_header_values.items():
        got = resp.headers.get_list(name)
        assert got, f"response lacks header {name}: {dict(resp.headers)}"
        assert joined(got) in [joined([a]) for a in allowed], f"response header {name}: {got}, want one of {allowed}"
    for name in case.absent_response_headers:
        assert name not in resp.headers, f"response has header {name}: {resp.headers[name]}"
    if case.redirect is not None:
        location = resp.headers.get("location")
        assert location, "redirect without Location"
        url = urlsplit(location)
        want = case.redirect
        if "scheme" in want:
            assert url.scheme == want["scheme"], location
        host = want.get("host", case.host.split(":")[0] if case.host else "127.0.0.1")
        assert url.hostname == host, location
        if "port" in want:
            port_want = str(port) if want["port"] == LISTENER else want["port"]
            assert (str(url.port) if url.port else "") == port_want, location
        assert url.path == want.get("path", case.path.split("?")[0]), location


@pytest.mark.parametrize(
    ("manifest", "case"), CASES, ids=[f"{m.removeprefix('httproute-')}/{c.name}" for m, c in CASES]
)
def test_conformance(gateways: GatewayCache, backend_pool: BackendPool, manifest: str, case: Case) -> None:
    gateway, config, client = gateways.get(manifest)
    port = config.port(case.gateway, case.listener_port)
    backend_pool.mark()
    resp = send(client, port, case)
    check(case, resp, port)
    for service in case.mirrored_to:
        def mirrored(service=service):
            return [r for r in backend_pool.received(service) if r["path"] == case.path]
        got = wait_until(mirrored, 5, what=f"mirror of {case.path} at {service}")
        for name, value in (case.expected_headers or {}).items():
            assert joined(echo_header(got[0]["headers"], name) or []) == value, f"mirror header {name}"
        for name in case.absent_headers:
            assert echo_header(got[0]["headers"], name) is None, f"mirror got header {name}"
    for ns, service in case.not_received_by:
        assert backend_pool.received(service, ns) == [], f"{ns}/{service} received the request"


# --------------------------------------------------------------------------- statistical


def _serving_backend(resp: httpx.Response) -> str:
    return resp.json()["pod"].rsplit("-", 1)[0]


def test_weight_distribution(gateways: GatewayCache) -> None:
    """HTTPRouteWeight: 70/30/0 -- loose bounds over 400 requests."""
    _, config, client = gateways.get("httproute-weight")
    n = 400
    counts = Counter()
    for _ in range(n):
        resp = client.get(f"http://127.0.0.1:{config.port()}/")
        assert resp.status_code == 200
        counts[_serving_backend(resp)] += 1
    assert counts["infra-backend-v3"] == 0, counts
    assert 0.58 * n <= counts["infra-backend-v1"] <= 0.82 * n, counts
    assert 0.18 * n <= counts["infra-backend-v2"] <= 0.42 * n, counts


def test_backend_filters_follow_weighted_backend(gateways: GatewayCache) -> None:
    """HTTPRouteRequestHeaderModifierBackendWeights: a backendRef's filter applies only to it."""
    _, config, client = gateways.get("httproute-request-header-modifier-backend-weights")
    seen = Counter()
    for _ in range(100):
        resp = client.get(f"http://127.0.0.1:{config.port()}/")
        assert resp.status_code == 200
        body = resp.json()
        backend = _serving_backend(resp)
        assert body["headers"].get("Backend") == [backend], body["headers"]
        seen[backend] += 1
    assert set(seen) == {"infra-backend-v1", "infra-backend-v2"}, seen


@pytest.mark.parametrize(
    ("path", "low", "high"),
    [
        ("/percent-mirror", 0.05, 0.40),  # percent: 20
        ("/percent-mirror-fraction", 0.30, 0.70),  # fraction 25/50
        ("/percent-mirror-and-modify-headers", 0.15, 0.55),  # percent: 35
    ],
)
def test_percentage_mirror(gateways: GatewayCache, backend_pool: BackendPool, path, low, high) -> None:
    _, config, client = gateways.get("httproute-request-percentage-mirror")
    backend_pool.mark()
    n = 200
    for _ in range(n):
        resp = client.get(f"http://127.0.0.1:{config.port()}{path}")
        assert resp.status_code == 200
        assert _serving_backend(resp) == "infra-backend-v1"
    # Mirrors are fire-and-forget: give the last ones a moment to land.
    deadline = time.monotonic() + 2
    mirrored = 0
    while time.monotonic() < deadline:
        mirrored = len([r for r in backend_pool.received("infra-backend-v2") if r["path"] == path])
        if mirrored >= low * n:
            break
        time.sleep(0.05)
    time.sleep(0.2)
    mirrored = len([r for r in backend_pool.received("infra-backend-v2") if r["path"] == path])
    assert low * n <= mirrored <= high * n, f"{mirrored}/{n} mirrored"


RETRY_CASES = [
    ("/retry/code-500-attempts-3", "500", 2, 200),
    ("/retry/code-500-attempts-3", "500", 4, 500),
    ("/retry/code-500-attempts-3", "503", 2, 503),
    ("/retry/code-all-attempts-2", "500", 1, 200),
    ("/retry/code-all-attempts-2", "500", 3, 500),
    ("/retry/code-all-attempts-2", "502", 1, 200),
    ("/retry/code-all-attempts-2", "502", 3, 502),
    ("/retry/code-all-attempts-2", "503", 1, 200),
    ("/retry/code-all-attempts-2", "503", 3, 503),
    ("/retry/code-all-attempts-2", "504", 1, 200),
    ("/retry/code-all-attempts-2", "504", 3, 504),
]


@pytest.mark.parametrize(
    ("path", "code", "succeed_after", "want"),
    RETRY_CASES,
    ids=[f"{p.rsplit('/', 1)[1]}-{c}-after{s}-want{w}" for p, c, s, w in RETRY_CASES],
)
def test_retry(gateways: GatewayCache, backend_pool: BackendPool, path, code, succeed_after, want) -> None:
    """HTTPRouteRetry: the backend fails `succeed_after` times (per uuid), then succeeds."""
    _, config, client = gateways.get("httproute-retry")
    uid = str(uuidlib.uuid4())
    query = urlencode({"responseCode": code, "succeedAfter": succeed_after, "uuid": uid})
    backend_pool.mark()
    resp = client.get(f"http://127.0.0.1:{config.port()}{path}?{query}")
    assert resp.status_code == want, resp.text[:200]
    attempts = len([r for r in backend_pool.received("infra-backend-v3") if uid in r["path"]])
    if want == 200:
        assert attempts == succeed_after + 1
    elif str(want) == code and code == "503" and "500" in path:
        assert attempts == 1, "retried a code the rule does not list"
