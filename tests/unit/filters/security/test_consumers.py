"""Consumer kind, ConsumerIndex (client ids, users, JWT identities per namespace; a
credential claimed twice is a config error) and the consumerHeader stage, which always
drops the client's copy of the header."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from meshgate.cli.validate import validate
from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.inputs import ErrorSink, Inputs
from meshgate.config.compile.lookup import find_match
from meshgate.config.errors import ConfigInvalid
from meshgate.config.loader import load_paths, load_texts
from meshgate.config.models import MODELS, Consumer
from meshgate.filters.security.consumer_header import ConsumerHeader, header_value
from meshgate.filters.security.consumers import ConsumerIndex
from meshgate.http.headers import Headers
from meshgate.proxy.context import RequestContext

GROUP = "gateway.networking.k8s.io"
REPO = Path(__file__).resolve().parents[4]
EXAMPLES = REPO / "examples" / "security"


def consumer(name: str, spec: dict, namespace: str = "default", labels=None) -> dict:
    meta = {"name": name, "namespace": namespace, **({"labels": labels} if labels else {})}
    return {"apiVersion": "meshgate.dev/v1alpha1", "kind": "Consumer", "metadata": meta, "spec": spec}


def load(documents: list[dict]):
    result = load_texts([("t.yaml", yaml.safe_dump_all(documents))])
    return result


def index(documents: list[dict]) -> tuple[ConsumerIndex, ErrorSink]:
    result = load(documents)
    assert result.errors == [], [str(e) for e in result.errors]
    errors = ErrorSink()
    return ConsumerIndex(Inputs(result.resources, errors), errors), errors


# --- the kind -----------------------------------------------------------------------------


def test_consumer_is_a_served_kind():
    assert MODELS[("meshgate.dev", "Consumer")] is Consumer
    result = load([consumer("acme", {"apiKeys": [{"clientID": "acme-prod"}]}, labels={"plan": "gold"})])
    assert result.errors == [] and result.warnings == []
    assert result.resources[0].obj.metadata.labels == {"plan": "gold"}


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"apiKeys": [{"clientID": "bad id"}]}, "is not a client id"),
        ({"jwt": [{"issuer": "https://i"}]}, "exactly one of subject or claim"),
        ({"jwt": [{"issuer": "https://i", "subject": "s", "claim": {"name": "a", "value": "b"}}]},
         "exactly one of subject or claim"),
        ({"basicAuth": [{"username": "a:b"}]}, "no ':'"),
        ({"keys": []}, "keys"),
    ],
)
def test_bad_consumers_are_rejected_by_field(spec, message):
    errors = [str(e) for e in load([consumer("c", spec)]).errors]
    assert len(errors) == 1 and message in errors[0], errors
    assert errors[0].startswith("t.yaml:1:Consumer/default/c:spec."), errors


# --- the index ------------------------------------------------------------------------------


def test_lookups_by_client_id_user_and_claims_are_per_namespace():
    idx, errors = index([
        consumer("acme", {
            "apiKeys": [{"clientID": "acme-prod"}],
            "basicAuth": [{"username": "acme-ops"}],
            "jwt": [{"issuer": "https://idp", "subject": "u-1"},
                    {"issuer": "https://idp", "claim": {"name": "client_id", "value": "acme-app"}}],
        }, labels={"plan": "gold"}),
        consumer("other", {"apiKeys": [{"clientID": "acme-prod"}]}, namespace="team-b"),
    ])
    assert not errors
    assert idx.by_client_id("default", "acme-prod") == "acme"
    assert idx.by_client_id("team-b", "acme-prod") == "other"
    assert idx.by_client_id("team-c", "acme-prod") is None
    assert idx.by_username("default", "acme-ops") == "acme"
    assert idx.by_username("team-b", "acme-ops") is None
    assert idx.by_claims("default", {"iss": "https://idp", "sub": "u-1"}) == "acme"
    assert idx.by_claims("default", {"iss": "https://idp", "sub": "x", "client_id": "acme-app"}) == "acme"
    assert idx.by_claims("default", {"iss": "https://idp", "client_id": ["a", "acme-app"]}) == "acme"
    assert idx.by_claims("default", {"iss": "https://evil", "sub": "u-1"}) is None
    assert idx.by_claims("default", {"sub": "u-1"}) is None
    assert idx.by_claims("team-b", {"iss": "https://idp", "sub": "u-1"}) is None
    assert idx.labels("default", "acme") == {"plan": "gold"}


@pytest.mark.parametrize(
    "spec, path, what",
    [
        ({"apiKeys": [{"clientID": "shared"}]}, "spec.apiKeys[0].clientID", "client id 'shared'"),
        ({"basicAuth": [{"username": "shared"}]}, "spec.basicAuth[0].username", "basic-auth user 'shared'"),
        ({"jwt": [{"issuer": "i", "subject": "shared"}]}, "spec.jwt[0].subject", "JWT subject 'shared' of issuer 'i'"),
        ({"jwt": [{"issuer": "i", "claim": {"name": "c", "value": "shared"}}]}, "spec.jwt[0].claim", "JWT claim c='shared' of issuer 'i'"),
    ],
)
def test_a_credential_claimed_by_two_consumers_is_an_error(spec, path, what):
    _, errors = index([consumer("a", spec), consumer("b", spec)])
    (err,) = [str(e) for e in errors.errors]
    assert err.startswith(f"t.yaml:2:Consumer/default/b:{path}:"), err
    assert f"{what} is already claimed by Consumer default/a" in err


def test_duplicate_claim_rejects_the_whole_config_through_compile():
    docs = [
        {"apiVersion": f"{GROUP}/v1", "kind": "Gateway", "metadata": {"name": "gw"},
         "spec": {"gatewayClassName": "meshgate", "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"}]}},
        consumer("a", {"apiKeys": [{"clientID": "x"}]}),
        consumer("b", {"apiKeys": [{"clientID": "x"}]}),
    ]
    with pytest.raises(ConfigInvalid) as info:
        compile_snapshot(load(docs).resources)
    assert "already claimed" in str(info.value.errors[0])


# --- the consumer header ------------------------------------------------------------------


def request(headers: dict) -> RequestContext:
    return RequestContext(
        "GET", "/", "/", "", Headers.from_pairs(list(headers.items())), "h", "h", "http", "1.1",
        "127.0.0.1", 1, 8080, "r", 0.0,
    )


def test_consumer_header_is_set_and_a_forged_one_always_removed():
    f = ConsumerHeader("X-Consumer")
    ctx = request({"x-consumer": "admin", "X-CONSUMER": "root"})
    f.on_request(ctx)  # nobody authenticated: the client's copies go
    assert "x-consumer" not in ctx.headers
    ctx = request({"x-consumer": "admin"})
    ctx.consumer = "acme"
    f.on_request(ctx)
    assert ctx.headers.get_all("x-consumer") == ["acme"]


@pytest.mark.parametrize(
    "identity, value",
    [("acme", "acme"), ("a b", "a b"), ("j\u00fcrgen", "j%C3%BCrgen"), ("x\r\nInjected: 1", "x%0D%0AInjected: 1"),
     ("50%", "50%25")],
)
def test_identities_never_break_a_header_line(identity, value):
    assert header_value(identity) == value


def test_consumer_header_stage_runs_after_authentication():
    docs = [
        {"apiVersion": f"{GROUP}/v1", "kind": "Gateway", "metadata": {"name": "gw"},
         "spec": {"gatewayClassName": "meshgate", "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}},
        {"apiVersion": f"{GROUP}/v1", "kind": "HTTPRoute", "metadata": {"name": "r"},
         "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "svc", "port": 80}]}]}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"}, "stringData": {"c1": "k1"}},
        {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "SecurityPolicy", "metadata": {"name": "p"},
         "spec": {"targetRefs": [{"group": GROUP, "kind": "HTTPRoute", "name": "r"}], "consumerHeader": "x-consumer",
                  "apiKeyAuth": {"credentialRefs": [{"name": "keys"}], "extractFrom": [{"headers": ["k"]}]}}},
    ]
    match = find_match(compile_snapshot(load(docs).resources), 8080, "h", "/")
    assert [f.name for f in match.rule.filters] == ["APIKeyAuth", "ConsumerHeader"]
    ctx = request({"k": "k1", "x-consumer": "forged"})
    for f in match.rule.filters:
        assert f.on_request(ctx) is None
    assert ctx.headers.get_all("x-consumer") == ["c1"]


def test_consumer_header_cannot_be_a_framing_header():
    errors = [str(e) for e in load([{
        "apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "SecurityPolicy", "metadata": {"name": "p"},
        "spec": {"targetRefs": [{"group": GROUP, "kind": "HTTPRoute", "name": "r"}], "consumerHeader": "Transfer-Encoding"},
    }]).errors]
    assert len(errors) == 1 and "spec.consumerHeader" in errors[0] and "framing" in errors[0]


# --- the examples ----------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["api-keys", "basic-auth"])
def test_examples_validate_and_compile(folder):
    path = EXAMPLES / folder
    result = CliRunner().invoke(validate, [str(path)])
    assert result.exit_code == 0, result.output
    loaded = load_paths([path])
    assert loaded.errors == [] and loaded.warnings == []
    snapshot = compile_snapshot(loaded.resources)
    assert snapshot.dump["policies"]["SecurityPolicy"], "the example's SecurityPolicy attaches"


def run_chain(snapshot, port: int, path: str, query: str = "", headers: dict | None = None):
    """The request after the route's security filters, or the reply that refused it."""
    import asyncio

    match = find_match(snapshot, port, "localhost", path)
    target = path + "?" + query if query else path
    ctx = RequestContext(
        "GET", target, path, query, Headers.from_pairs(list((headers or {}).items())), "localhost",
        f"localhost:{port}", "http", "1.1", "127.0.0.1", 1, port, "r", 0.0,
    )
    for f in match.rule.filters:
        result = f.on_request(ctx)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        if result is not None:
            return result
    return ctx


def example(name: str):
    loaded = load_paths([EXAMPLES / name])
    return compile_snapshot(loaded.resources)


def test_api_keys_example_answers_as_its_page_says():
    snap = example("api-keys")
    ctx = run_chain(snap, 8150, "/orders/1", headers={"x-api-key": "test-only-acme-orders-key-1f9c3b7e"})
    assert ctx.headers.get("x-client-id") == "acme-prod" and ctx.headers.get("x-consumer") == "acme"
    assert "x-api-key" not in ctx.headers
    ctx = run_chain(snap, 8150, "/orders/1", "api_key=test-only-globex-orders-key-8d2a4c6f&page=2")
    assert ctx.consumer == "globex" and ctx.target() == "/orders/1?page=2"
    for path, key in (("/orders/1", "test-only-acme-orders-key-1f9c3b7f"), ("/reports/1", "test-only-acme-orders-key-1f9c3b7e")):
        reply = run_chain(snap, 8150, path, headers={"x-api-key": key})
        assert reply.status == 401 and reply.body == b"Client authentication failed."
    assert run_chain(snap, 8150, "/reports/1", headers={"x-api-key": "test-only-acme-reports-key-5e7b9d1a"}).consumer == "acme"


def test_basic_auth_example_answers_as_its_page_says():
    import base64

    def auth(user, pw):
        return {"authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}

    snap = example("basic-auth")
    ctx = run_chain(snap, 8160, "/", headers=auth("alice", "alice-test-password"))
    assert (ctx.headers.get("x-user"), ctx.headers.get("x-consumer")) == ("alice", "alice")
    ctx = run_chain(snap, 8160, "/", headers=auth("ci", "ci-test-password"))
    assert (ctx.headers.get("x-user"), ctx.headers.get("x-consumer")) == ("ci", "automation")
    assert run_chain(snap, 8160, "/", headers=auth("bob", "bob-test-password")).consumer == "bob"
    reply = run_chain(snap, 8160, "/", headers=auth("bob", "wrong"))
    assert reply.status == 401
    assert dict(reply.headers)["www-authenticate"] == 'Basic realm="http://localhost:8160/"'


@pytest.mark.parametrize("page, folder", [("api-keys.md", "api-keys"), ("basic-auth.md", "basic-auth")])
def test_pages_show_the_example_policy_as_it_is(page, folder):
    text = (REPO / "docs" / "security" / page).read_text()
    policy = (EXAMPLES / folder / "policy.yaml").read_text()
    assert "```yaml\n" + policy.rstrip() + "\n```" in text


def test_consumers_page_example_is_a_valid_consumer():
    text = (REPO / "docs" / "security" / "consumers.md").read_text()
    blocks = text.split("```yaml\n")[1:]
    docs = [yaml.safe_load(b.split("```")[0]) for b in blocks]
    result = load(docs)
    assert result.errors == [], [str(e) for e in result.errors]
    kinds = [r.kind for r in result.resources]
    assert kinds == ["Consumer", "SecurityPolicy"]
