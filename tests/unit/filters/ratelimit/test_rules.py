"""Which requests a rule selects and which bucket each one counts in: headers (Exact,
RegularExpression, Distinct, invert), methods, path, sourceCIDR (Exact, Distinct),
consumer (meshgate extension), and the model's refusals."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from ratelimit_helpers import policy, request

from meshgate.config.models.traffic_policy import RateLimitSpec


def only_rule(selectors: str):
    (rule,) = policy(
        "local: {rules: [{clientSelectors: " + selectors + ", limit: {requests: 1, unit: Second}}]}"
    ).local
    return rule


def test_no_selectors_selects_every_request_into_one_bucket():
    (rule,) = policy("local: {rules: [{limit: {requests: 3, unit: Minute}}]}").local
    assert rule.descriptor(request()) == ""
    assert (rule.requests, rule.window, rule.limit_header) == (3, 60, "3, 3;w=60")


def test_exact_and_regex_headers_select_without_distinguishing():
    rule = only_rule(
        "[{headers: [{name: X-Plan, value: free}, {name: x-client, type: RegularExpression, value: 'app-[0-9]+'}]}]"
    )
    assert rule.descriptor(request(headers={"x-plan": "free", "x-client": "app-12"})) == ""
    assert rule.descriptor(request(headers={"x-plan": "paid", "x-client": "app-12"})) is None
    assert rule.descriptor(request(headers={"x-plan": "free", "x-client": "app-x"})) is None
    assert rule.descriptor(request(headers={"x-client": "app-1"})) is None  # absent header


def test_inverted_header_selects_other_values_and_absence():
    rule = only_rule("[{headers: [{name: x-plan, value: paid, invert: true}]}]")
    assert rule.descriptor(request(headers={"x-plan": "free"})) == ""
    assert rule.descriptor(request()) == ""
    assert rule.descriptor(request(headers={"x-plan": "paid"})) is None


def test_distinct_header_names_a_bucket_per_value_and_skips_requests_without_it():
    rule = only_rule("[{headers: [{name: x-user, type: Distinct}]}]")
    assert rule.descriptor(request(headers={"x-user": "alice"})) == "alice"
    assert rule.descriptor(request(headers={"x-user": "bob"})) == "bob"
    assert rule.descriptor(request()) is None


def test_several_distinct_selectors_combine():
    rule = only_rule(
        "[{headers: [{name: x-user, type: Distinct}]}, {sourceCIDR: {type: Distinct, value: 0.0.0.0/0}}]"
    )
    a = rule.descriptor(request(headers={"x-user": "alice"}, client_ip="10.0.0.1"))
    b = rule.descriptor(request(headers={"x-user": "alice"}, client_ip="10.0.0.2"))
    assert a and b and a != b
    assert rule.descriptor(request(client_ip="10.0.0.1")) is None


def test_source_cidr_exact_shares_a_bucket_distinct_splits_it():
    exact = only_rule("[{sourceCIDR: {value: 192.168.0.0/16}}]")
    assert exact.descriptor(request(client_ip="192.168.1.1")) == ""
    assert exact.descriptor(request(client_ip="192.168.7.9")) == ""
    assert exact.descriptor(request(client_ip="10.0.0.1")) is None
    distinct = only_rule("[{sourceCIDR: {type: Distinct, value: 192.168.0.0/16}}]")
    assert distinct.descriptor(request(client_ip="192.168.1.1")) == "192.168.1.1"
    assert distinct.descriptor(request(client_ip="10.0.0.1")) is None
    v6 = only_rule("[{sourceCIDR: {type: Distinct, value: '::/0'}}]")
    assert v6.descriptor(request(client_ip="2001:db8::1")) == "2001:db8::1"
    mapped = only_rule("[{sourceCIDR: {value: 10.0.0.0/8}}]")
    assert mapped.descriptor(request(client_ip="::ffff:10.1.2.3")) == ""


def test_methods_are_ored_and_path_matches_like_httproute():
    rule = only_rule("[{methods: [{value: POST}, {value: PUT}], path: {value: /api}}]")
    assert rule.descriptor(request("POST", "/api/items")) == ""
    assert rule.descriptor(request("PUT", "/api")) == ""
    assert rule.descriptor(request("GET", "/api")) is None
    assert rule.descriptor(request("POST", "/apiary")) is None  # element-wise prefix
    not_get = only_rule("[{methods: [{value: GET, invert: true}]}]")
    assert not_get.descriptor(request("DELETE")) == ""
    assert not_get.descriptor(request("GET")) is None
    regex = only_rule("[{path: {type: RegularExpression, value: '/v[0-9]+/.*'}}]")
    assert regex.descriptor(request(path="/v2/x")) == ""
    assert regex.descriptor(request(path="/x/v2/x")) is None
    exact = only_rule("[{path: {type: Exact, value: /login, invert: true}}]")
    assert exact.descriptor(request(path="/login")) is None
    assert exact.descriptor(request(path="/other")) == ""


def test_consumer_selector_reads_who_authentication_found():
    distinct = only_rule("[{consumer: {type: Distinct}}]")
    assert distinct.descriptor(request(consumer="alice")) == "alice"
    assert distinct.descriptor(request()) is None  # not authenticated: not selected
    exact = only_rule("[{consumer: {value: bob}}]")
    assert exact.descriptor(request(consumer="bob")) == ""
    assert exact.descriptor(request(consumer="alice")) is None


def test_cost_and_shared_are_compiled():
    (rule,) = policy(
        "global: {rules: [{limit: {requests: 10, unit: Day}, shared: true, "
        "cost: {request: {from: Number, number: 3}}}]}"
    ).global_
    assert (rule.cost, rule.shared, rule.window) == (3, True, 86400)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{type: Global, local: {rules: []}}", "If RateLimit type is Global, global field needs to be set."),
        ("{}", "at least one of global or local must be set"),
        (
            "{local: {rules: [{clientSelectors: [{headers: [{name: a, type: Distinct, value: x}]}], limit: {requests: 1, unit: Second}}]}}",
            "value must not be set with type Distinct",
        ),
        (
            "{local: {rules: [{clientSelectors: [{headers: [{name: a}]}], limit: {requests: 1, unit: Second}}]}}",
            "value is required with type Exact",
        ),
        (
            "{local: {rules: [{clientSelectors: [{headers: [{name: a, type: RegularExpression, value: '('}]}], limit: {requests: 1, unit: Second}}]}}",
            "invalid regular expression",
        ),
        (
            "{local: {rules: [{limit: {requests: 1, unit: Week}}]}}",
            "Input should be",
        ),
        (
            "{local: {rules: [{clientSelectors: [{consumer: {type: Distinct, value: a}}], limit: {requests: 1, unit: Second}}]}}",
            "value is required with type Exact and not allowed with Distinct",
        ),
        (
            "{global: {rules: [{cost: {request: {from: Metadata}}, limit: {requests: 1, unit: Second}}]}}",
            "Metadata is not supported by meshgate yet",
        ),
    ],
)
def test_the_model_refuses_what_envoy_gateway_refuses(text, message):
    import yaml

    with pytest.raises(ValidationError, match=message.replace("(", r"\(")[:60]):
        RateLimitSpec.model_validate(yaml.safe_load(text))
