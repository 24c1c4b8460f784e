"""Proxying behaviour of a real gateway: connections, streaming, forwarded headers,
hop-by-hop headers, error statuses and the admin endpoints."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
from harness import (
    EchoServer,
    Gateway,
    free_port,
    gateway_doc,
    parse_responses,
    pattern_bytes,
    prefix_rule,
    raw_request,
    route_doc,
    service_docs,
    wait_until,
)

BIG = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def echo_mod():
    with EchoServer("echo-0") as server:
        yield server


@pytest.fixture(scope="module")
def dead_port():
    """A port nothing listens on (checked free when chosen)."""
    return free_port()


@pytest.fixture(scope="module")
def gateway(echo_mod, dead_port):
    port = free_port()
    docs = [gateway_doc(port)]
    docs += service_docs("echo", [echo_mod])
    dead = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "dead", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 8080}]},
    }
    docs += [
        dead,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "dead-0", "namespace": "default", "labels": {"kubernetes.io/service-name": "dead"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": dead_port}],
            "endpoints": [{"addresses": ["127.0.0.1"]}],
        },
    ]
    docs.append(
        route_doc(
            "route",
            [
                prefix_rule("/app", "echo"),
                prefix_rule("/slow", "echo", timeouts={"request": "500ms"}),
                prefix_rule("/dead", "dead"),
                prefix_rule(
                    "/stamped",
                    "echo",
                    filters=[
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"set": [{"name": "x-stamped", "value": "by-gateway"}]},
                        }
                    ],
                ),
            ],
        )
    )
    access_log = tempfile.mktemp(prefix="meshgate-access-", suffix=".log")
    with Gateway(docs, extra_args=["--access-log", access_log]) as gw:
        gw.listener_port = port
        gw.access_log = Path(access_log)
        yield gw


@pytest.fixture
def base(gateway, echo_mod) -> str:
    echo_mod.mark()
    return f"http://127.0.0.1:{gateway.listener_port}"


def upstream_header(body: dict, name: str) -> list[str] | None:
    for k, v in body["headers"].items():
        if k.lower() == name.lower():
            return v
    return None


# --------------------------------------------------------------------------- connections


def test_downstream_keep_alive_reuses_one_connection(gateway, base) -> None:
    with socket.create_connection(("127.0.0.1", gateway.listener_port), timeout=5) as sock:
        for i in range(20):
            sock.sendall(f"GET /app/{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            data = b""
            deadline = time.monotonic() + 5
            while not parse_responses(data):
                assert time.monotonic() < deadline, "no response"
                chunk = sock.recv(65536)
                assert chunk, f"gateway closed the keep-alive connection after {i} requests"
                data += chunk
            (resp,) = parse_responses(data)
            assert resp.status == 200 and resp.json()["path"] == f"/app/{i}"


def test_local_replies_keep_the_connection_open(gateway, base) -> None:
    """A 404 (no route) answered at once keeps the keep-alive connection, as proxied
    responses do: then a request that is routed goes over the same connection."""
    with socket.create_connection(("127.0.0.1", gateway.listener_port), timeout=5) as sock:
        for path, status in (("/nowhere", 404), ("/nowhere/else", 404), ("/app/x", 200)):
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            data = b""
            deadline = time.monotonic() + 5
            while not parse_responses(data):
                assert time.monotonic() < deadline, "no response"
                chunk = sock.recv(65536)
                assert chunk, f"gateway closed the connection after {path}"
                data += chunk
            (resp,) = parse_responses(data)
            assert resp.status == status
            assert resp.header("connection") != "close"


def test_upstream_connections_are_pooled(base, echo_mod) -> None:
    with httpx.Client() as client:
        for i in range(20):
            assert client.get(f"{base}/app/pool{i}").status_code == 200
    peers = {r["peer"] for r in echo_mod.requests()}
    assert len(peers) <= 2, f"{len(peers)} upstream connections for 20 sequential requests"


# --------------------------------------------------------------------------- streaming


def test_large_upload_streamed_intact(base) -> None:
    digest = hashlib.sha256()

    def body():
        for block in pattern_bytes(BIG):
            digest.update(block)
            yield block

    with httpx.Client(timeout=60) as client:
        resp = client.post(f"{base}/app/upload", content=body())  # chunked
    assert resp.status_code == 200
    assert resp.json()["body_len"] == BIG
    assert resp.json()["body_sha256"] == digest.hexdigest()


def test_large_upload_with_content_length(base) -> None:
    payload = b"".join(pattern_bytes(BIG))
    with httpx.Client(timeout=60) as client:
        resp = client.post(f"{base}/app/upload", content=payload)
    assert resp.status_code == 200
    assert resp.json()["body_len"] == BIG
    assert resp.json()["body_sha256"] == hashlib.sha256(payload).hexdigest()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_large_download_streamed_intact(base, chunked: bool) -> None:
    want = hashlib.sha256()
    for block in pattern_bytes(BIG):
        want.update(block)
    got = hashlib.sha256()
    size = 0
    with httpx.Client(timeout=60) as client:
        with client.stream("GET", f"{base}/app/download?size={BIG}&chunked={int(chunked)}") as resp:
            assert resp.status_code == 200
            for chunk in resp.iter_raw():
                got.update(chunk)
                size += len(chunk)
    assert size == BIG
    assert got.hexdigest() == want.hexdigest()


def _read_responses(sock: socket.socket, n: int, head_only=()) -> list:
    data = b""
    deadline = time.monotonic() + 5
    while len([r for r in parse_responses(data, head_only) if r.status >= 200]) < n:
        assert time.monotonic() < deadline, f"only got {data[:300]!r}"
        chunk = sock.recv(65536)
        assert chunk, f"connection closed; got {data[:300]!r}"
        data += chunk
    return parse_responses(data, head_only)


def test_head_response_has_no_body_and_connection_stays_usable(gateway, base) -> None:
    with socket.create_connection(("127.0.0.1", gateway.listener_port), timeout=5) as sock:
        sock.sendall(b"HEAD /app/head HTTP/1.1\r\nHost: a\r\n\r\nGET /app/after-head HTTP/1.1\r\nHost: a\r\n\r\n")
        head, after = _read_responses(sock, 2, head_only=[0])
        assert head.status == 200 and int(head.header("content-length") or 0) > 0 and head.body == b""
        assert after.status == 200 and after.json()["path"] == "/app/after-head"


@pytest.mark.parametrize("code", [204, 304, 404, 500])
def test_bodyless_and_error_statuses_pass_through(gateway, base, code: int) -> None:
    with socket.create_connection(("127.0.0.1", gateway.listener_port), timeout=5) as sock:
        sock.sendall(
            f"GET /app/status/{code} HTTP/1.1\r\nHost: a\r\n\r\nGET /app/next HTTP/1.1\r\nHost: a\r\n\r\n".encode()
        )
        first, second = _read_responses(sock, 2)
        assert first.status == code and first.body == b""
        assert second.status == 200 and second.json()["path"] == "/app/next"


# --------------------------------------------------------------------------- headers


def test_x_forwarded_headers_set(base) -> None:
    resp = httpx.get(f"{base}/app/xff", headers={"Host": "shop.example:8443"})
    assert resp.status_code == 200
    body = resp.json()
    assert upstream_header(body, "X-Forwarded-For")[-1].split(",")[-1].strip() == "127.0.0.1"
    assert upstream_header(body, "X-Forwarded-Proto") == ["http"]
    assert upstream_header(body, "X-Forwarded-Host") == ["shop.example:8443"]


def test_x_forwarded_for_appends_to_existing(base) -> None:
    resp = httpx.get(f"{base}/app/xff", headers={"X-Forwarded-For": "203.0.113.7"})
    xff = ",".join(upstream_header(resp.json(), "X-Forwarded-For"))
    assert [p.strip() for p in xff.split(",")] == ["203.0.113.7", "127.0.0.1"]


def test_x_request_id_generated_when_absent(base) -> None:
    ids = set()
    for _ in range(3):
        body = httpx.get(f"{base}/app/rid").json()
        (rid,) = upstream_header(body, "X-Request-Id")
        assert len(rid) >= 16
        ids.add(rid)
    assert len(ids) == 3, "request ids are not unique"


def test_x_request_id_kept_when_present(base) -> None:
    rid = str(uuid.uuid4())
    body = httpx.get(f"{base}/app/rid", headers={"X-Request-Id": rid}).json()
    assert upstream_header(body, "X-Request-Id") == [rid]


def test_hop_by_hop_request_headers_removed(gateway, base) -> None:
    request = (
        b"GET /app/hop HTTP/1.1\r\nHost: a\r\nConnection: close, X-Foo\r\nX-Foo: secret\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Bar: kept\r\n\r\n"
    )
    raw, closed = raw_request(gateway.listener_port, request, timeout=5)
    (resp,) = parse_responses(raw)
    assert resp.status == 200
    headers = {k.lower() for k in resp.json()["headers"]}
    assert "x-foo" not in headers, "header named in Connection was forwarded"
    assert "keep-alive" not in headers
    assert "proxy-connection" not in headers
    assert "x-bar" in headers
    assert closed, "Connection: close from the client was not honoured"


def test_connection_cannot_remove_a_header_the_gateway_sets(gateway, base) -> None:
    """Fields a client names in Connection are dropped as they arrive, before filters
    run: naming a field a filter sets (an identity header, say) cannot remove it."""
    request = (
        b"GET /stamped/x HTTP/1.1\r\nHost: a\r\nConnection: X-Stamped, X-Foo\r\n"
        b"X-Foo: hop\r\n\r\n"
    )
    raw, _ = raw_request(gateway.listener_port, request, timeout=5)
    (resp,) = parse_responses(raw)
    body = resp.json()
    assert upstream_header(body, "x-stamped") == ["by-gateway"]
    assert upstream_header(body, "x-foo") is None


def test_header_names_with_underscores_are_refused(gateway, echo_mod) -> None:
    """Envoy Gateway's default: X_User would reach a CGI/WSGI upstream as X-User,
    past every filter that sets or strips X-User."""
    echo_mod.mark()
    raw, closed = raw_request(
        gateway.listener_port, b"GET /app/u HTTP/1.1\r\nHost: a\r\nX_User: admin\r\n\r\n", timeout=5
    )
    (resp,) = parse_responses(raw)
    assert resp.status == 400 and closed
    assert echo_mod.requests() == []


@pytest.mark.parametrize("action", ["DropHeader", "Allow"])
def test_client_traffic_policy_chooses_what_underscored_headers_do(echo_mod, action) -> None:
    """headers.withUnderscoresAction: DropHeader forwards the request without the
    header, Allow forwards it as is (the default, RejectRequest, is tested above)."""
    port = free_port()
    policy = {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "ClientTrafficPolicy",
        "metadata": {"name": "underscores", "namespace": "default"},
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}],
            "headers": {"withUnderscoresAction": action},
        },
    }
    docs = [gateway_doc(port), *service_docs("echo", [echo_mod]), route_doc("r", [prefix_rule("/", "echo")]), policy]
    with Gateway(docs):
        body = httpx.get(f"http://127.0.0.1:{port}/u", headers={"X_User": "admin"}).json()
    assert upstream_header(body, "x_user") == (["admin"] if action == "Allow" else None)


def test_header_limits_are_set_on_the_command_line(echo_mod) -> None:
    port = free_port()
    docs = [gateway_doc(port), *service_docs("echo", [echo_mod]), route_doc("r", [prefix_rule("/", "echo")])]
    with Gateway(docs, extra_args=["--max-header-count", "6", "--max-header-bytes", "2048"]):
        url = f"http://127.0.0.1:{port}/h"
        # httpx sends host, accept, accept-encoding, connection, user-agent: 5 fields.
        assert httpx.get(url, headers={"x-one": "1"}).status_code == 200
        assert httpx.get(url, headers={"x-one": "1", "x-two": "2"}).status_code == 431
        assert httpx.get(url, headers={"x-big": "v" * 3000}).status_code == 431


def test_hop_by_hop_response_headers_removed(base) -> None:
    resp = httpx.get(
        f"{base}/app/hop", headers={"X-Echo-Set-Header": "Connection:X-Resp-Hop,X-Resp-Hop:1,Keep-Alive:timeout=9"}
    )
    assert resp.status_code == 200
    assert "x-resp-hop" not in resp.headers
    assert "timeout=9" not in resp.headers.get("keep-alive", "")


# --------------------------------------------------------------------------- errors


def test_no_route_is_404(base, echo_mod) -> None:
    assert httpx.get(f"{base}/nowhere").status_code == 404
    assert echo_mod.requests() == []


def test_upstream_port_closed_is_503(base) -> None:
    assert httpx.get(f"{base}/dead").status_code == 503


def test_upstream_reset_before_response_is_502(base) -> None:
    assert httpx.get(f"{base}/app/reset-before-response").status_code == 502


def test_upstream_close_without_response_is_502(base) -> None:
    assert httpx.get(f"{base}/app/close").status_code == 502


def test_upstream_reset_mid_response_is_not_a_complete_200(gateway) -> None:
    """Head already forwarded: the only honest signal left is to cut the client off."""
    raw, closed = raw_request(
        gateway.listener_port, b"GET /app/reset HTTP/1.1\r\nHost: a\r\n\r\n", timeout=5
    )
    responses = parse_responses(raw)
    if responses and responses[0].status == 502:
        return
    assert closed, "client connection kept open after the upstream reset mid-body"
    assert raw.startswith(b"HTTP/1.1 200") and len(raw.split(b"\r\n\r\n", 1)[1]) < 100000


def test_request_timeout_is_504(base) -> None:
    started = time.monotonic()
    resp = httpx.get(f"{base}/slow?delay=3s", timeout=10)
    assert resp.status_code == 504
    assert time.monotonic() - started < 2.5


# --------------------------------------------------------------------------- admin


def test_admin_endpoints(gateway, base) -> None:
    assert httpx.get(f"{base}/app/metrics-probe").status_code == 200
    assert httpx.get(f"{base}/nowhere").status_code == 404
    assert gateway.admin("/ready").status_code == 200
    assert gateway.admin("/healthz").status_code == 200
    dump = gateway.admin("/config_dump")
    assert dump.status_code == 200 and dump.json().get("version")
    clusters = gateway.admin("/clusters")
    assert clusters.status_code == 200 and "echo" in clusters.text
    metrics = gateway.admin("/metrics")
    assert metrics.status_code == 200
    m = re.search(r'meshgate_http_requests_total\{[^}]*route="default/route"[^}]*code="200"[^}]*\} (\d+)', metrics.text)
    if m is None:
        m = re.search(r'meshgate_http_requests_total\{[^}]*code="200"[^}]*route="default/route"[^}]*\} (\d+)', metrics.text)
    assert m and float(m.group(1)) >= 1, metrics.text[:2000]
    assert re.search(r'meshgate_http_requests_total\{[^}]*code="404"', metrics.text), "404s not counted"
    stats = gateway.admin("/stats").json()
    assert stats["version"] == dump.json()["version"] and stats["workers"] == 1
    assert stats["routes"]["default/route"]["count"] >= 1
    assert any(r["route"] == "" and r["code"] == 404 for r in stats["requests"])


# --------------------------------------------------------------------------- access log


def test_access_log_records_each_outcome_with_its_response_flag(gateway, base) -> None:
    tag = uuid.uuid4().hex
    assert httpx.get(f"{base}/app/log-{tag}").status_code == 200
    assert httpx.get(f"{base}/nowhere-{tag}").status_code == 404
    assert httpx.get(f"{base}/dead/log-{tag}").status_code == 503
    raw, _ = raw_request(gateway.listener_port, b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400")

    def records():
        lines = gateway.access_log.read_text().splitlines() if gateway.access_log.exists() else []
        found = [json.loads(line) for line in lines]
        mine = {r["path"]: r for r in found if tag in r.get("path", "")}
        rejected = [r for r in found if r["status"] == 400 and r["response_flags"] == "DPE"]
        return (mine, rejected) if len(mine) == 3 and rejected else None

    mine, rejected = wait_until(records, 5, what="access log lines")
    ok, missing, dead = mine[f"/app/log-{tag}"], mine[f"/nowhere-{tag}"], mine[f"/dead/log-{tag}"]
    assert ok["status"] == 200 and ok["response_flags"] == "" and ok["route"] == "default/route"
    assert ok["upstream_host"].startswith("127.0.0.1:") and ok["request_id"]
    assert ok["method"] == "GET" and ok["protocol"] == "HTTP/1.1" and ok["bytes_sent"] > 0
    assert missing["status"] == 404 and missing["response_flags"] == "NR" and missing["route"] is None
    assert dead["status"] == 503 and dead["response_flags"] == "UF"
    assert rejected[-1]["client_address"] == "127.0.0.1"


def test_metrics_count_bytes_upstream_failures_and_process(gateway, base) -> None:
    def scrape() -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{gateway.admin_port}/metrics").text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    before = scrape()
    body = b"x" * 1000
    assert httpx.post(f"{base}/app/bytes", content=body).status_code == 200
    assert httpx.get(f"{base}/dead/x").status_code == 503
    after = scrape()

    def delta(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert delta('meshgate_http_request_bytes_total{route="default/route"}') == 1000
    assert delta('meshgate_http_response_bytes_total{route="default/route"}') > 0
    dead_cluster = next(k for k in after if k.startswith("meshgate_upstream_failures_total") and "dead" in k)
    assert 'flag="UF"' in dead_cluster and delta(dead_cluster) == 1
    assert any(k.startswith("meshgate_upstream_requests_total{") and 'code="200"' in k for k in after)
    assert after["process_resident_memory_bytes"] > 1e6 and after["process_open_fds"] > 3
    assert any(k.startswith("meshgate_config_info{version=") for k in after)
    assert any(k.startswith('meshgate_upstream_connections{') and 'state="idle"' in k for k in after)
