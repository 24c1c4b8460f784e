"""Resource models: defaults a user relies on, and the spec rules that reject bad config
with the field that is wrong."""

from __future__ import annotations

import textwrap

import pytest

from meshgate.config.loader import load_texts
from meshgate.config.models import Backend, Gateway, HTTPRoute, parse_duration


def load_one(yaml_text: str):
    result = load_texts([("t.yaml", textwrap.dedent(yaml_text))])
    assert not result.errors, [str(e) for e in result.errors]
    assert len(result.resources) == 1
    return result.resources[0].obj


def errors_of(yaml_text: str) -> list[str]:
    result = load_texts([("t.yaml", textwrap.dedent(yaml_text))])
    return [str(e) for e in result.errors]


def route(rules: str, extra_spec: str = "") -> str:
    return (
        "apiVersion: gateway.networking.k8s.io/v1\n"
        "kind: HTTPRoute\n"
        "metadata: {name: r, namespace: ns}\n"
        "spec:\n"
        "  parentRefs: [{name: gw}]\n" + extra_spec + "  rules:\n" + textwrap.indent(textwrap.dedent(rules), "  ")
    )


def one_error(yaml_text: str) -> str:
    errors = errors_of(yaml_text)
    assert len(errors) == 1, errors
    return errors[0]


# --- defaults -------------------------------------------------------------------------


def test_httproute_defaults_follow_the_spec():
    obj = load_one(
        """
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: r}
        spec:
          parentRefs: [{name: gw}]
          rules:
          - backendRefs: [{name: svc, port: 80}]
            matches: [{headers: [{name: x, value: y}], queryParams: [{name: q, value: v}]}]
        """
    )
    assert isinstance(obj, HTTPRoute)
    assert obj.metadata.namespace == "default"
    parent = obj.spec.parentRefs[0]
    assert (parent.group, parent.kind, parent.namespace, parent.sectionName) == (
        "gateway.networking.k8s.io",
        "Gateway",
        None,
        None,
    )
    rule = obj.spec.rules[0]
    ref = rule.backendRefs[0]
    assert (ref.group, ref.kind, ref.weight, ref.namespace) == ("", "Service", 1, None)
    match = rule.matches[0]
    assert (match.path.type, match.path.value) == ("PathPrefix", "/")
    assert match.headers[0].type == "Exact"
    assert match.queryParams[0].type == "Exact"


def test_omitted_rules_and_matches_default_to_prefix_slash():
    obj = load_one(
        """
        apiVersion: gateway.networking.k8s.io/v1beta1
        kind: HTTPRoute
        metadata: {name: r}
        spec:
          parentRefs: [{name: gw}]
        """
    )
    [rule] = obj.spec.rules
    [match] = rule.matches
    assert (match.path.type, match.path.value) == ("PathPrefix", "/")
    assert rule.backendRefs == []


def test_gateway_listener_defaults_and_placeholder_class_name():
    obj = load_one(
        """
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw, namespace: infra}
        spec:
          gatewayClassName: "{GATEWAY_CLASS_NAME}"
          listeners:
          - {name: http, port: 80, protocol: HTTP}
        """
    )
    assert isinstance(obj, Gateway)
    assert obj.spec.gatewayClassName == "{GATEWAY_CLASS_NAME}"
    listener = obj.spec.listeners[0]
    assert listener.allowedRoutes.namespaces.from_ == "Same"
    assert listener.hostname is None


def test_from_is_spelled_from_in_yaml_and_from__in_python():
    obj = load_one(
        """
        apiVersion: gateway.networking.k8s.io/v1beta1
        kind: ReferenceGrant
        metadata: {name: g, namespace: backends}
        spec:
          from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}]
          to: [{group: "", kind: Service}]
        """
    )
    assert obj.spec.from_[0].namespace == "web"
    assert obj.spec.to[0].name is None
    assert obj.model_dump(by_alias=True)["spec"]["from"][0]["kind"] == "HTTPRoute"


def test_redirect_and_mirror_defaults():
    obj = load_one(
        route(
            """
            - filters:
              - type: RequestRedirect
                requestRedirect: {scheme: https}
            - filters:
              - type: RequestMirror
                requestMirror:
                  backendRef: {name: svc, port: 8080}
                  fraction: {numerator: 1}
              backendRefs: [{name: svc, port: 80}]
            """
        )
    )
    assert obj.spec.rules[0].filters[0].requestRedirect.statusCode == 302
    mirror = obj.spec.rules[1].filters[0].config
    assert (mirror.fraction.numerator, mirror.fraction.denominator) == (1, 100)


def test_cors_max_age_defaults_to_5():
    obj = load_one(route("- filters: [{type: CORS, cors: {allowOrigins: ['*']}}]\n"))
    assert obj.spec.rules[0].filters[0].cors.maxAge == 5


def test_models_are_frozen():
    obj = load_one(route("- backendRefs: [{name: svc, port: 80}]\n"))
    with pytest.raises(Exception):
        obj.spec.rules[0].backendRefs[0].weight = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "seconds"), [("10s", 10), ("500ms", 0.5), ("1h2m", 3720), ("0s", 0), ("1m1s1ms", 61.001)]
)
def test_durations_keep_their_text_and_parse(text, seconds):
    obj = load_one(route(f"- timeouts: {{request: {text}}}\n  backendRefs: [{{name: s, port: 80}}]\n"))
    assert obj.spec.rules[0].timeouts.request == text
    assert parse_duration(text) == pytest.approx(seconds)


# --- rejected config ------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["10", "1d", "1.5s", "123456s", "1h1h1h1h1h", "-1s"])
def test_bad_duration_is_rejected(bad):
    error = one_error(route(f"- timeouts: {{request: '{bad}'}}\n"))
    assert error.startswith("t.yaml:1:HTTPRoute/ns/r:spec.rules[0].timeouts.request: ")
    assert "Gateway API Duration" in error


def test_backend_request_longer_than_request_is_rejected():
    error = one_error(route("- timeouts: {request: 1s, backendRequest: 2s}\n"))
    assert "spec.rules[0].timeouts.backendRequest: cannot be longer than the request timeout" in error
    load_one(route("- timeouts: {request: 0s, backendRequest: 2s}\n"))  # 0s disables the limit


def test_filter_type_needs_its_own_config():
    error = one_error(route("- filters: [{type: RequestRedirect}]\n"))
    assert error.endswith("spec.rules[0].filters[0].requestRedirect: required when type is RequestRedirect")


def test_filter_config_of_another_type_is_rejected():
    error = one_error(
        route(
            """
            - filters:
              - type: RequestHeaderModifier
                requestHeaderModifier: {set: [{name: a, value: b}]}
                urlRewrite: {hostname: example.com}
            """
        )
    )
    assert error.endswith(
        "spec.rules[0].filters[0].urlRewrite: must not be set when type is RequestHeaderModifier"
    )


def test_unknown_filter_type_lists_the_supported_ones():
    error = one_error(route("- filters: [{type: Bogus}]\n"))
    assert "spec.rules[0].filters[0].type:" in error
    assert "'RequestHeaderModifier'" in error and "'ExtensionRef'" in error


def test_redirect_and_rewrite_cannot_share_a_rule():
    error = one_error(
        route(
            """
            - filters:
              - {type: RequestRedirect, requestRedirect: {hostname: a.example}}
              - {type: URLRewrite, urlRewrite: {hostname: b.example}}
            """
        )
    )
    assert error.endswith(
        "spec.rules[0].filters[1].type: RequestRedirect and URLRewrite filters cannot be used together"
    )


def test_redirect_with_backend_refs_is_rejected():
    error = one_error(
        route(
            """
            - filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
              backendRefs: [{name: svc, port: 80}]
            """
        )
    )
    assert error.endswith(
        "spec.rules[0].backendRefs: a rule with a RequestRedirect filter must not have backendRefs"
    )


def test_core_filters_cannot_repeat():
    error = one_error(
        route(
            """
            - filters:
              - {type: RequestHeaderModifier, requestHeaderModifier: {remove: [a]}}
              - {type: RequestHeaderModifier, requestHeaderModifier: {remove: [b]}}
            """
        )
    )
    assert error.endswith("spec.rules[0].filters[1].type: RequestHeaderModifier filter cannot be repeated")


def test_replace_prefix_match_needs_a_single_path_prefix_match():
    rewrite = "  filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}]\n"
    load_one(route("- matches: [{path: {type: PathPrefix, value: /v1}}]\n" + rewrite))
    error = one_error(route("- matches: [{path: {type: Exact, value: /v1}}]\n" + rewrite))
    assert error.endswith(
        "spec.rules[0].filters[0].urlRewrite.path.type: "
        "URLRewrite with ReplacePrefixMatch needs exactly one match, of type PathPrefix"
    )


def test_path_modifier_value_must_fit_its_type():
    error = one_error(
        route(
            "- filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replacePrefixMatch: /x}}}]\n"
        )
    )
    assert "spec.rules[0].filters[0].urlRewrite.path.replaceFullPath: required when type is ReplaceFullPath" in error


@pytest.mark.parametrize(
    ("match", "path", "needle"),
    [
        ("{path: {type: RegularExpression, value: '/a(['}}", "matches[0].path.value", "invalid regular expression"),
        ("{headers: [{name: x, type: RegularExpression, value: '*'}]}", "matches[0].headers[0].value", "invalid regular expression"),
        ("{queryParams: [{name: q, type: RegularExpression, value: '(?P<'}]}", "matches[0].queryParams[0].value", "invalid regular expression"),
        ("{path: {type: PathPrefix, value: foo}}", "matches[0].path.value", "start with '/'"),
        ("{path: {type: Exact, value: /a//b}}", "matches[0].path.value", "must not contain '//'"),
        ("{headers: [{name: 'bad header', value: v}]}", "matches[0].headers[0].name", "not a valid header name"),
        ("{headers: [{name: X-A, value: v}, {name: x-a, value: w}]}", "matches[0].headers[1].name", "duplicate name"),
        ("{method: FETCH}", "matches[0].method", "Input should be"),
    ],
)
def test_bad_matches_name_the_field(match, path, needle):
    error = one_error(route(f"- matches: [{match}]\n"))
    assert f":spec.rules[0].{path}: " in error
    assert needle in error


def test_header_modifier_rejects_two_actions_on_one_header():
    error = one_error(
        route(
            "- filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-A, value: '1'}], remove: [x-a]}}]\n"
        )
    )
    assert "spec.rules[0].filters[0].requestHeaderModifier.remove[0]: header 'x-a' already has an action (set)" in error


def test_unquoted_yaml_number_where_a_string_belongs_says_to_quote_it():
    error = one_error(
        route("- filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-A, value: 1}]}}]\n")
    )
    assert error.endswith("requestHeaderModifier.set[0].value: must be a string, got 1; quote the value in YAML")


def test_header_values_cannot_inject_lines():
    error = one_error(
        route(
            "- filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: a, value: \"x\\r\\nEvil: 1\"}]}}]\n"
        )
    )
    assert "responseHeaderModifier.add[0].value: header value must not contain CR, LF or NUL" in error


def test_mirror_takes_percent_or_fraction_not_both():
    error = one_error(
        route(
            "- filters: [{type: RequestMirror, requestMirror: {backendRef: {name: s, port: 80}, percent: 5, fraction: {numerator: 1}}}]\n"
        )
    )
    assert "requestMirror.fraction: only one of percent or fraction may be specified" in error


def test_service_backend_ref_needs_a_port():
    error = one_error(route("- backendRefs: [{name: svc}]\n"))
    assert error.endswith("spec.rules[0].backendRefs[0].port: required when referring to a Service")
    load_one(route("- backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: b}]\n"))


def test_session_persistence_is_rejected_as_unsupported():
    error = one_error(route("- sessionPersistence: {sessionName: s}\n"))
    assert "spec.rules[0].sessionPersistence: sessionPersistence is not supported by meshgate yet" in error


def test_spec_limits():
    many_rules = "".join(f"- matches: [{{path: {{value: /r{i}}}}}]\n" for i in range(17))
    assert "spec.rules: List should have at most 16 items" in one_error(route(many_rules))
    hostnames = "  hostnames: [" + ", ".join(f"h{i}.example.com" for i in range(17)) + "]\n"
    assert "spec.hostnames: List should have at most 16 items" in one_error(
        route("- {}\n", extra_spec=hostnames)
    )
    backends = "".join(f"  - {{name: s{i}, port: 80}}\n" for i in range(17))
    assert "spec.rules[0].backendRefs: List should have at most 16 items" in one_error(
        route("- backendRefs:\n" + backends)
    )


def test_duplicate_rule_names_are_rejected():
    error = one_error(route("- name: a\n- name: a\n"))
    assert error.endswith("spec.rules[1].name: rule name 'a' is already used by rules[0]")


def test_gateway_listener_names_must_be_unique():
    error = one_error(
        """
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw}
        spec:
          gatewayClassName: c
          listeners:
          - {name: web, port: 80, protocol: HTTP}
          - {name: web, port: 8080, protocol: HTTP}
        """
    )
    assert error == (
        "t.yaml:1:Gateway/default/gw:spec.listeners[1].name: "
        "listener name 'web' is already used by listeners[0]"
    )


@pytest.mark.parametrize(
    ("listener", "path", "message"),
    [
        ("{name: a, port: 443, protocol: HTTPS}", "listeners[0].tls", "required for protocol HTTPS"),
        ("{name: a, port: 80, protocol: HTTP, tls: {certificateRefs: [{name: c}]}}", "listeners[0].tls", "must not be set for protocol HTTP"),
        ("{name: a, port: 80, protocol: QUIC}", "listeners[0].protocol", "Input should be"),
        ("{name: a, port: 0, protocol: HTTP}", "listeners[0].port", "greater than or equal to 1"),
        ("{name: a, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector}}}", "listeners[0].allowedRoutes.namespaces.selector", "required when from is Selector"),
        ("{name: a, port: 80, protocol: HTTP, hostname: 'Bad_Host'}", "listeners[0].hostname", "not a valid hostname"),
    ],
)
def test_bad_listeners(listener, path, message):
    error = one_error(
        f"""
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {{name: gw}}
        spec:
          gatewayClassName: c
          listeners: [{listener}]
        """
    )
    assert f"spec.{path}: " in error and message in error


def test_backend_endpoints():
    obj = load_one(
        """
        apiVersion: gateway.envoyproxy.io/v1alpha1
        kind: Backend
        metadata: {name: b}
        spec:
          endpoints: [{ip: {address: 10.0.0.1, port: 8080}}, {ip: {address: '::1', port: 8080}}]
          appProtocols: [gateway.envoyproxy.io/h2c]
        """
    )
    assert isinstance(obj, Backend)
    assert obj.spec.endpoints[1].ip.address == "::1"


@pytest.mark.parametrize(
    ("endpoint", "path", "message"),
    [
        ("{unix: {path: /tmp/s.sock}}", "endpoints[0].unix", "unix socket endpoints are not supported"),
        ("{ip: {address: 10.0.0.1, port: 1}, fqdn: {hostname: a.b, port: 1}}", "endpoints[0].fqdn", "only one of ip or fqdn"),
        ("{zone: z}", "endpoints[0]", "one of ip or fqdn must be specified"),
        ("{ip: {address: not-an-ip, port: 1}}", "endpoints[0].ip.address", "not an IPv4 or IPv6 address"),
    ],
)
def test_bad_backend_endpoints(endpoint, path, message):
    error = one_error(
        f"""
        apiVersion: gateway.envoyproxy.io/v1alpha1
        kind: Backend
        metadata: {{name: b}}
        spec:
          endpoints: [{endpoint}]
        """
    )
    assert f"spec.{path}: " in error and message in error


def test_service_and_endpoint_slice():
    result = load_texts(
        [
            (
                "svc.yaml",
                textwrap.dedent(
                    """
                    apiVersion: v1
                    kind: Service
                    metadata: {name: web, namespace: shop}
                    spec:
                      clusterIP: 10.96.0.10
                      ports:
                      - {name: http, port: 80, targetPort: http, appProtocol: kubernetes.io/h2c}
                      - {name: admin, port: 9000, targetPort: 9001}
                    ---
                    apiVersion: discovery.k8s.io/v1
                    kind: EndpointSlice
                    metadata:
                      name: web-1
                      namespace: shop
                      labels: {kubernetes.io/service-name: web}
                    addressType: IPv4
                    endpoints:
                    - addresses: [127.0.0.1]
                      conditions: {ready: false}
                    - addresses: [127.0.0.2]
                    ports: [{name: http, port: 8080}]
                    """
                ),
            )
        ]
    )
    assert not result.errors
    service, slice_ = (r.obj for r in result.resources)
    assert service.spec.ports[0].targetPort == "http"
    assert service.spec.ports[1].targetPort == 9001
    assert service.spec.ports[0].protocol == "TCP"
    assert slice_.service_name == "web"
    assert [e.is_ready for e in slice_.endpoints] == [False, True]


def test_endpoint_slice_addresses_must_fit_address_type():
    error = one_error(
        """
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: s}
        addressType: IPv4
        endpoints: [{addresses: ['::1']}]
        """
    )
    assert error.endswith("EndpointSlice/default/s:endpoints[0].addresses[0]: '::1' is not an IPv4 address")


def test_secret_data_must_be_base64():
    error = one_error(
        """
        apiVersion: v1
        kind: Secret
        metadata: {name: s}
        data: {token: "not base64!"}
        """
    )
    assert error.endswith("Secret/default/s:data.token: value is not valid base64")


def test_kubectl_metadata_fields_are_tolerated():
    obj = load_one(
        """
        apiVersion: v1
        kind: Namespace
        metadata:
          name: shop
          uid: 0b1c
          resourceVersion: "123"
          generation: 2
          creationTimestamp: "2024-01-02T03:04:05Z"
          labels: {team: a}
        """
    )
    assert obj.metadata.labels == {"team": "a"}
    assert obj.metadata.creationTimestamp.year == 2024
