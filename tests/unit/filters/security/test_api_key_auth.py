"""apiKeyAuth: Envoy's key sources and answers, keys held as digests, duplicate keys as
config errors, sanitize, the client-id header, and the attacks a gateway must stop
(a key one byte off, a key in a place the policy does not read, a forged client id)."""

from __future__ import annotations

import hmac

import pytest
import yaml

from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.lookup import find_match
from meshgate.config.errors import ConfigInvalid
from meshgate.config.loader import load_texts
from meshgate.filters.security import api_key_auth as mod
from meshgate.filters.security.api_key_auth import APIKeyAuth
from meshgate.filters.security.base import AUTH_FAILURES
from meshgate.http.headers import Headers
from meshgate.proxy.context import LocalReply, RequestContext

GROUP = "gateway.networking.k8s.io"
KEYS = {"alice": "alice-key-0123456789", "bob": "bob-key-9876543210"}


def docs(api_key: dict, *, secrets=None, consumers=(), extra_spec=None) -> list[dict]:
    out = [
        {"apiVersion": f"{GROUP}/v1", "kind": "Gateway", "metadata": {"name": "gw"},
         "spec": {"gatewayClassName": "meshgate", "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}},
        {"apiVersion": f"{GROUP}/v1", "kind": "HTTPRoute", "metadata": {"name": "r"},
         "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "svc", "port": 80}]}]}},
        {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "SecurityPolicy", "metadata": {"name": "p"},
         "spec": {"targetRefs": [{"group": GROUP, "kind": "HTTPRoute", "name": "r"}], "apiKeyAuth": api_key,
                  **(extra_spec or {})}},
    ]
    for name, data in (secrets if secrets is not None else {"keys": KEYS}).items():
        out.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data})
    out += list(consumers)
    return out


def compile_docs(documents: list[dict]):
    result = load_texts([("t.yaml", yaml.safe_dump_all(documents))])
    assert result.errors == [], [str(e) for e in result.errors]
    return compile_snapshot(result.resources)


def filters(api_key: dict, **kw) -> tuple:
    match = find_match(compile_docs(docs(api_key, **kw)), 8080, "gw.example", "/")
    return match.rule.filters


def the_filter(api_key: dict, **kw) -> APIKeyAuth:
    (f,) = [f for f in filters(api_key, **kw) if isinstance(f, APIKeyAuth)]
    return f


def errors_of(documents: list[dict]) -> list[str]:
    result = load_texts([("t.yaml", yaml.safe_dump_all(documents))])
    if result.errors:
        return [str(e) for e in result.errors]
    with pytest.raises(ConfigInvalid) as info:
        compile_snapshot(result.resources)
    return [str(e) for e in info.value.errors]


def request(path="/", query="", headers=None) -> RequestContext:
    target = path + "?" + query if query else path
    return RequestContext(
        "GET", target, path, query, Headers.from_pairs(list((headers or {}).items())), "gw.example",
        "gw.example", "http", "1.1", "127.0.0.1", 40000, 8080, "req-1", 0.0,
    )


HEADER = {"credentialRefs": [{"name": "keys"}], "extractFrom": [{"headers": ["x-api-key"]}]}


# --- good and bad keys ----------------------------------------------------------------


def test_a_good_key_passes_and_names_the_client():
    f = the_filter(HEADER)
    ctx = request(headers={"x-api-key": KEYS["alice"]})
    assert f.on_request(ctx) is None
    assert ctx.consumer == "alice"


def test_missing_key_is_401_with_envoys_body_and_a_challenge():
    before = AUTH_FAILURES.get(("api_key", "missing"), 0)
    reply = the_filter(HEADER).on_request(request())
    assert isinstance(reply, LocalReply)
    assert reply.status == 401
    assert reply.body == b"Client authentication failed."
    assert dict(reply.headers)["www-authenticate"] == 'APIKey realm="http://gw.example/"'
    assert AUTH_FAILURES[("api_key", "missing")] == before + 1


@pytest.mark.parametrize("offset", [0, 7, -1])
def test_a_key_one_byte_off_is_refused(offset):
    key = bytearray(KEYS["alice"].encode())
    key[offset] ^= 0x01
    before = AUTH_FAILURES.get(("api_key", "invalid"), 0)
    reply = the_filter(HEADER).on_request(request(headers={"x-api-key": key.decode()}))
    assert reply.status == 401 and reply.body == b"Client authentication failed."
    assert AUTH_FAILURES[("api_key", "invalid")] == before + 1


@pytest.mark.parametrize("key", [KEYS["alice"][:-1], KEYS["alice"] + "x", KEYS["alice"].upper(), " " + KEYS["alice"]])
def test_prefixes_extensions_and_case_changes_are_refused(key):
    assert the_filter(HEADER).on_request(request(headers={"x-api-key": key})).status == 401


def test_keys_are_held_only_as_digests_and_confirmed_with_compare_digest(monkeypatch):
    f = the_filter(HEADER)
    held = repr(f._table) + repr(f.describe())
    for key in KEYS.values():
        assert key not in held and key.encode() not in f._table
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(mod.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    assert f.on_request(request(headers={"x-api-key": KEYS["bob"]})) is None
    assert calls == [1]


def test_bearer_prefix_counts_without_it_as_envoy_does():
    f = the_filter({**HEADER, "extractFrom": [{"headers": ["authorization"]}]})
    ctx = request(headers={"authorization": "Bearer " + KEYS["bob"]})
    assert f.on_request(ctx) is None and ctx.consumer == "bob"


# --- where the key is -------------------------------------------------------------------


def test_a_key_in_the_query_when_only_a_header_is_read_is_missing():
    reply = the_filter(HEADER).on_request(request(query="x-api-key=" + KEYS["alice"]))
    assert reply.status == 401


def test_a_key_in_a_cookie_when_only_params_are_read_is_missing():
    f = the_filter({**HEADER, "extractFrom": [{"params": ["api_key"]}]})
    assert f.on_request(request(headers={"cookie": "api_key=" + KEYS["alice"]})).status == 401


def test_first_source_with_a_value_wins_in_order():
    f = the_filter({**HEADER, "extractFrom": [{"headers": ["x-api-key"]}, {"params": ["k"]}, {"cookies": ["ck"]}]})
    # header empty -> query is used
    ctx = request(query="k=" + KEYS["bob"], headers={"x-api-key": ""})
    assert f.on_request(ctx) is None and ctx.consumer == "bob"
    # a wrong header key is not rescued by a right cookie: the first found is the key
    ctx = request(headers={"x-api-key": "wrong", "cookie": "ck=" + KEYS["alice"]})
    assert f.on_request(ctx).status == 401
    ctx = request(headers={"cookie": 'other=1; ck="' + KEYS["alice"] + '"'})
    assert f.on_request(ctx) is None and ctx.consumer == "alice"


def test_query_param_is_percent_decoded_and_the_first_occurrence_counts():
    f = the_filter({**HEADER, "extractFrom": [{"params": ["api_key"]}]})
    encoded = "".join(f"%{b:02X}" for b in KEYS["alice"].encode())
    ctx = request(query=f"x=1&api_key={encoded}&api_key=nope")
    assert f.on_request(ctx) is None and ctx.consumer == "alice"
    assert f.on_request(request(query=f"api_key=nope&api_key={KEYS['alice']}")).status == 401


# --- sanitize and forwarded client id -------------------------------------------------------


def test_sanitize_removes_the_key_from_headers_query_cookies_and_the_logged_path():
    f = the_filter({
        "credentialRefs": [{"name": "keys"}],
        "extractFrom": [{"headers": ["x-api-key"]}, {"params": ["api_key"]}, {"cookies": ["k"]}],
        "sanitize": True,
    })
    ctx = request(
        "/a", query=f"x=1&api_key={KEYS['alice']}&y=2",
        headers={"cookie": f"session=s1; k={KEYS['alice']}; theme=dark", "x-api-key": "", "accept": "*/*"},
    )
    assert f.on_request(ctx) is None
    assert ctx.target() == "/a?x=1&y=2"
    assert ctx.raw_target == "/a?x=1&y=2"
    assert ctx.headers.get("cookie") == "session=s1; theme=dark"
    assert "x-api-key" not in ctx.headers and ctx.headers.get("accept") == "*/*"


def test_without_sanitize_the_key_is_forwarded():
    f = the_filter(HEADER)
    ctx = request(headers={"x-api-key": KEYS["alice"]})
    f.on_request(ctx)
    assert ctx.headers.get("x-api-key") == KEYS["alice"]


def test_client_id_header_replaces_a_forged_one():
    f = the_filter({**HEADER, "forwardClientIDHeader": "x-client-id"})
    ctx = request(headers={"x-api-key": KEYS["bob"], "x-client-id": "alice", "X-Client-ID": "root"})
    assert f.on_request(ctx) is None
    assert ctx.headers.get_all("x-client-id") == ["bob"]


def test_client_id_header_cannot_be_a_framing_header():
    errs = errors_of(docs({**HEADER, "forwardClientIDHeader": "Content-Length"}))
    assert any("framing or hop-by-hop" in e for e in errs), errs


# --- config errors ------------------------------------------------------------------------


def test_one_key_for_two_clients_is_an_error_naming_both_never_the_key():
    errs = errors_of(docs(HEADER, secrets={"keys": {"a": "same-key", "b": "same-key"}}))
    assert len(errs) == 1
    assert "client 'b' has the same API key as client 'a'" in errs[0]
    assert "spec.apiKeyAuth.credentialRefs[0]" in errs[0]
    assert "same-key" not in errs[0]


def test_duplicate_key_across_secrets_is_an_error_too():
    spec = {**HEADER, "credentialRefs": [{"name": "k1"}, {"name": "k2"}]}
    errs = errors_of(docs(spec, secrets={"k1": {"a": "shared"}, "k2": {"b": "shared"}}))
    assert len(errs) == 1 and "credentialRefs[1]" in errs[0] and "default/k1" in errs[0]


def test_a_client_in_two_secrets_keeps_the_first_key():
    spec = {**HEADER, "credentialRefs": [{"name": "k1"}, {"name": "k2"}]}
    f = the_filter(spec, secrets={"k1": {"a": "first"}, "k2": {"a": "second"}})
    assert f.on_request(request(headers={"x-api-key": "first"})) is None
    assert f.on_request(request(headers={"x-api-key": "second"})).status == 401


def test_missing_secret_is_an_error():
    errs = errors_of(docs({**HEADER, "credentialRefs": [{"name": "nope"}]}))
    assert any("Secret default/nope not found" in e for e in errs), errs


@pytest.mark.parametrize(
    "extract, message",
    [
        ([{"headers": ["a"], "params": ["b"]}], "exactly one of headers, params, or cookies"),
        ([{}], "exactly one of headers, params, or cookies"),
        ([], "at least 1"),
    ],
)
def test_extract_from_rules(extract, message):
    errs = errors_of(docs({**HEADER, "extractFrom": extract}))
    assert any(message in e for e in errs), errs


def test_credential_refs_must_be_secrets():
    errs = errors_of(docs({**HEADER, "credentialRefs": [{"name": "keys", "kind": "ConfigMap"}]}))
    assert any("must be Secret" in e for e in errs), errs


def test_empty_key_is_an_error():
    errs = errors_of(docs(HEADER, secrets={"keys": {"a": ""}}))
    assert any("the API key of client 'a' is empty" in e for e in errs), errs


# --- consumers ------------------------------------------------------------------------------


def test_a_bare_client_id_may_not_take_the_name_of_a_consumer():
    """Client "bob" of the Secret is not Consumer "bob" (who claims "alice"): had it
    been accepted, bob's key would pass for that Consumer in authorization and plans."""
    consumer = {"apiVersion": "meshgate.dev/v1alpha1", "kind": "Consumer", "metadata": {"name": "bob"},
                "spec": {"apiKeys": [{"clientID": "alice"}]}}
    (err,) = errors_of(docs(HEADER, consumers=[consumer]))
    assert "client 'bob' has the name of Consumer default/bob, which does not claim it" in err
    assert "spec.apiKeyAuth.credentialRefs[0]" in err


def test_the_consumer_that_claims_the_client_id_is_the_consumer():
    consumer = {"apiVersion": "meshgate.dev/v1alpha1", "kind": "Consumer", "metadata": {"name": "acme"},
                "spec": {"apiKeys": [{"clientID": "alice"}]}}
    f = the_filter({**HEADER, "forwardClientIDHeader": "x-client-id"}, consumers=[consumer])
    ctx = request(headers={"x-api-key": KEYS["alice"]})
    assert f.on_request(ctx) is None
    assert ctx.consumer == "acme" and ctx.headers.get("x-client-id") == "alice"
    ctx = request(headers={"x-api-key": KEYS["bob"]})
    f.on_request(ctx)
    assert ctx.consumer == "bob"
