"""API keys, basic auth and consumers end to end: a real ``meshgate gateway`` in front of
a real echo upstream, on 127.0.0.1.

- apiKeyAuth: a good key reaches the upstream with the client id (and without the key,
  sanitize); a wrong, missing or misplaced key is Envoy's 401; route A's key does not
  open route B (each route has its own Secret);
- basicAuth: bcrypt and SHA users, a wrong password, a repeated bcrypt login served
  from the cache;
- the consumer: in the consumer header upstream (a client's forged copy removed, also
  on a route nobody authenticates), in the access log, and failures in
  ``meshgate_auth_failures_total``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time

import bcrypt
import httpx
import pytest
from harness import (
    EchoServer,
    Gateway,
    free_port,
    gateway_doc,
    policy_doc,
    prefix_rule,
    route_doc,
    service_docs,
    serving,
    wait_until,
)

# Test-only credentials.
ORDERS_KEY = "test-only-orders-key-acme-0001"
GLOBEX_KEY = "test-only-orders-key-globex-0002"
REPORTS_KEY = "test-only-reports-key-acme-0003"
ALICE_HASH = bcrypt.hashpw(b"alice-pw", bcrypt.gensalt(rounds=10)).decode().replace("$2b$", "$2y$", 1)
BOB_HASH = "{SHA}" + base64.b64encode(hashlib.sha1(b"bob-pw").digest()).decode()


def secret(name: str, data: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"},
            "stringData": data}


def security_policy(name: str, route: str, spec: dict) -> dict:
    return policy_doc("SecurityPolicy", name, spec, route)


def config(port: int, echo: EchoServer) -> list[dict]:
    return [
        gateway_doc(port),
        *service_docs("echo", [echo]),
        route_doc("orders", [prefix_rule("/orders", "echo")]),
        route_doc("reports", [prefix_rule("/reports", "echo")]),
        route_doc("admin", [prefix_rule("/admin", "echo")]),
        route_doc("open", [prefix_rule("/open", "echo")]),
        secret("orders-keys", {"acme-prod": ORDERS_KEY, "globex": GLOBEX_KEY}),
        secret("reports-keys", {"acme-reporting": REPORTS_KEY}),
        secret("admin-users", {".htpasswd": f"alice:{ALICE_HASH}\nbob:{BOB_HASH}\n"}),
        security_policy("orders", "orders", {
            "apiKeyAuth": {
                "credentialRefs": [{"name": "orders-keys"}],
                "extractFrom": [{"headers": ["x-api-key"]}, {"params": ["api_key"]}],
                "forwardClientIDHeader": "x-client-id",
                "sanitize": True,
            },
            "consumerHeader": "x-consumer",
        }),
        security_policy("reports", "reports", {
            "apiKeyAuth": {"credentialRefs": [{"name": "reports-keys"}], "extractFrom": [{"headers": ["x-api-key"]}]},
            "consumerHeader": "x-consumer",
        }),
        security_policy("admin", "admin", {
            "basicAuth": {"users": {"name": "admin-users"}, "forwardUsernameHeader": "x-user"},
            "consumerHeader": "x-consumer",
        }),
        # No authentication at all: the consumer header is still never the client's.
        security_policy("open", "open", {"consumerHeader": "x-consumer"}),
        {"apiVersion": "meshgate.dev/v1alpha1", "kind": "Consumer", "metadata": {"name": "acme", "namespace": "default"},
         "spec": {"apiKeys": [{"clientID": "acme-prod"}, {"clientID": "acme-reporting"}],
                  "basicAuth": [{"username": "alice"}]}},
    ]


@pytest.fixture(scope="module")
def served():
    port = free_port()
    with EchoServer() as echo, serving(config(port, echo), port, access_log=True, echo=echo) as gw:
        yield gw


def get(gw: Gateway, path: str, **kw) -> httpx.Response:
    return httpx.get(gw.base + path, timeout=10, **kw)


def upstream_headers(r: httpx.Response) -> dict[str, list[str]]:
    assert r.status_code == 200, (r.status_code, r.text)
    return {k.lower(): v for k, v in r.json()["headers"].items()}


def failures(gw: Gateway, method: str, reason: str) -> float:
    m = re.search(
        rf'^meshgate_auth_failures_total\{{method="{method}",reason="{reason}"\}} ([0-9.e+]+)$',
        gw.admin("/metrics").text,
        re.MULTILINE,
    )
    return float(m.group(1)) if m else 0.0


def log_entries(gw: Gateway) -> list[dict]:
    text = gw.access_log.read_text() if gw.access_log.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- API keys -----------------------------------------------------------------------------


def test_good_key_reaches_the_upstream_as_its_consumer_without_the_key(served):
    served.echo.mark()
    r = get(served, "/orders/1", headers={"x-api-key": ORDERS_KEY, "x-client-id": "forged"})
    h = upstream_headers(r)
    assert h["x-client-id"] == ["acme-prod"]
    assert h["x-consumer"] == ["acme"]
    assert "x-api-key" not in h  # sanitize
    r = get(served, "/orders/2?api_key=" + GLOBEX_KEY + "&page=3")
    h = upstream_headers(r)
    assert r.json()["path"] == "/orders/2?page=3"  # the key left the query
    assert h["x-client-id"] == ["globex"] and h["x-consumer"] == ["globex"]


@pytest.mark.parametrize(
    "path, headers, reason",
    [
        ("/orders/1", {}, "missing"),
        ("/orders/1", {"x-api-key": ORDERS_KEY[:-1] + "2"}, "invalid"),  # one byte off
        ("/orders/1", {"x-api-key": ORDERS_KEY + "x"}, "invalid"),
        ("/orders/1", {"x-api-key": ""}, "missing"),
        ("/orders/1", {"authorization": "Bearer " + ORDERS_KEY}, "missing"),  # a header it does not read
        ("/reports/1?x-api-key=" + REPORTS_KEY, {}, "missing"),  # query, where only the header is read
        ("/reports/1", {"x-api-key": ORDERS_KEY}, "invalid"),  # another route's key
        ("/orders/1", {"x-api-key": REPORTS_KEY}, "invalid"),
    ],
)
def test_bad_missing_misplaced_or_foreign_keys_are_refused(served, path, headers, reason):
    served.echo.mark()
    before = failures(served, "api_key", reason)
    r = get(served, path, headers=headers)
    assert r.status_code == 401
    assert r.text == "Client authentication failed."
    assert r.headers["www-authenticate"].startswith('APIKey realm="http://')
    assert ORDERS_KEY not in r.headers["www-authenticate"] and REPORTS_KEY not in r.headers["www-authenticate"]
    assert served.echo.count() == 0
    assert failures(served, "api_key", reason) == before + 1


def test_second_route_opens_with_its_own_key_for_the_same_consumer(served):
    h = upstream_headers(get(served, "/reports/1", headers={"x-api-key": REPORTS_KEY}))
    assert h["x-consumer"] == ["acme"]
    assert "x-client-id" not in h  # that route does not forward it
    assert h["x-api-key"] == [REPORTS_KEY]  # and does not sanitize


# --- basic auth ---------------------------------------------------------------------------


def test_bcrypt_and_sha_users_pass_and_a_repeated_login_is_fast(served):
    with httpx.Client(base_url=served.base, timeout=10) as client:  # one connection: time the check only
        t0 = time.perf_counter()
        h = upstream_headers(client.get("/admin/", auth=("alice", "alice-pw"), headers={"x-user": "root"}))
        first = time.perf_counter() - t0
        assert h["x-user"] == ["alice"] and h["x-consumer"] == ["acme"]
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            upstream_headers(client.get("/admin/", auth=("alice", "alice-pw")))
            times.append(time.perf_counter() - t0)
        repeated = sorted(times)[2]
        print(f"basic auth, bcrypt cost 10: first {first * 1000:.1f} ms, cached (median) {repeated * 1000:.1f} ms")
        assert repeated < first / 3
        h = upstream_headers(client.get("/admin/", auth=("bob", "bob-pw")))
        assert h["x-user"] == ["bob"] and h["x-consumer"] == ["bob"]


@pytest.mark.parametrize(
    "auth, reason, body",
    [
        (("alice", "alice-pW"), "invalid", "Invalid username/password combination."),
        (("bob", "wrong"), "invalid", "Invalid username/password combination."),
        (("mallory", "alice-pw"), "invalid", "Invalid username/password combination."),
        (None, "missing", "Missing username and password."),
    ],
)
def test_bad_basic_credentials_are_refused(served, auth, reason, body):
    served.echo.mark()
    before = failures(served, "basic_auth", reason)
    r = get(served, "/admin/x?y=1", auth=auth)
    assert r.status_code == 401 and r.text.endswith(body)
    assert r.headers["www-authenticate"] == f'Basic realm="{served.base}/admin/x?y=1"'
    assert served.echo.count() == 0
    assert failures(served, "basic_auth", reason) == before + 1


def test_cached_login_does_not_accept_a_wrong_password(served):
    assert get(served, "/admin/", auth=("alice", "alice-pw")).status_code == 200
    assert get(served, "/admin/", auth=("alice", "alice-pw ")).status_code == 401


@pytest.mark.parametrize("value", ["Basic !!!", "Basic " + base64.b64encode(b"alicealice-pw").decode(), "Basic ="])
def test_malformed_authorization_headers(served, value):
    r = get(served, "/admin/", headers={"authorization": value})
    assert r.status_code == 401 and "Invalid basic credential format." in r.text


# --- the consumer ------------------------------------------------------------------------


def test_forged_consumer_header_is_removed_on_a_route_without_authentication(served):
    h = upstream_headers(get(served, "/open/", headers={"x-consumer": "acme", "X-Consumer": "admin"}))
    assert "x-consumer" not in h


def test_consumer_is_in_the_access_log(served):
    upstream_headers(get(served, "/orders/log-me", headers={"x-api-key": ORDERS_KEY}))
    upstream_headers(get(served, "/admin/log-me", auth=("bob", "bob-pw")))
    get(served, "/orders/log-me-denied")

    def logged():
        found = {e["path"]: e for e in log_entries(served) if "log-me" in (e.get("path") or "")}
        return found if len(found) == 3 else None

    found = wait_until(logged, 10, what="access log lines")
    assert found["/orders/log-me"]["consumer"] == "acme"
    assert found["/admin/log-me"]["consumer"] == "bob"
    assert found["/orders/log-me-denied"]["consumer"] is None
    assert found["/orders/log-me-denied"]["status"] == 401


def test_the_key_in_the_query_is_not_in_the_access_log(served):
    upstream_headers(get(served, f"/orders/q-log?api_key={GLOBEX_KEY}&z=1"))
    entry = wait_until(
        lambda: [e for e in log_entries(served) if (e.get("path") or "").startswith("/orders/q-log")],
        10, what="access log line",
    )[0]
    assert entry["path"] == "/orders/q-log?z=1" and GLOBEX_KEY not in json.dumps(entry)


def test_requests_metric_counts_by_consumer(served):
    upstream_headers(get(served, "/orders/m", headers={"x-api-key": ORDERS_KEY}))
    text = served.admin("/metrics").text
    assert re.search(r'^meshgate_http_requests_total\{[^}]*consumer="acme"\} [0-9.e+]+$', text, re.MULTILINE)
