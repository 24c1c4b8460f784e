"""The demo a new user runs first (`make demo`): examples/*.yaml loads and compiles with
no error or warning, routes the requests README and run_demo.py advertise where they
say, and examples/demo_upstream.py answers."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.lookup import find_match
from meshgate.config.loader import load_paths

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GATEWAY_PORT = 8080
V1 = "service/default/demo-v1:80"
V2 = "backend/default/demo-v2"


@pytest.fixture(scope="module")
def snapshot():
    result = load_paths([EXAMPLES])
    assert result.errors == []
    assert result.warnings == []
    return compile_snapshot(r for r in result.resources)


def _rule(snapshot, path, headers=()):
    match = find_match(snapshot, GATEWAY_PORT, "localhost:8080", path, headers=headers)
    assert match is not None, f"{path} is not routed"
    return match.rule


def _clusters(rule):
    return {b.cluster: b.weight for b in rule.backends}


def test_examples_load_and_compile_without_errors_or_warnings(snapshot):
    kinds = sorted(r.kind for r in load_paths([EXAMPLES]).resources)
    assert kinds == ["Backend", "EndpointSlice", "Gateway"] + ["HTTPRoute"] * 4 + ["Service"]
    for name, route in snapshot.dump["routes"].items():
        for parent in route["parents"]:
            failed = [c for c in parent["conditions"] if c["status"] != "True"]
            assert failed == [], f"{name}: {failed}"


def test_both_backend_styles_resolve_to_the_demo_upstreams(snapshot):
    endpoints = {
        name: [(e.host, e.port) for e in cluster.endpoints]
        for name, cluster in snapshot.clusters.items()
    }
    assert endpoints == {V1: [("127.0.0.1", 8081)], V2: [("127.0.0.1", 8082)]}


def test_api_goes_to_v1_with_the_demo_header(snapshot):
    rule = _rule(snapshot, "/api/hello")
    assert _clusters(rule) == {V1: 1}
    (modifier,) = rule.filters
    assert modifier.describe()["type"] == "RequestHeaderModifier"
    assert modifier.describe()["add"] == [{"name": "x-demo", "value": "meshgate"}]


def test_canary_header_sends_api_to_v2(snapshot):
    assert _clusters(_rule(snapshot, "/api/hello", [("X-Canary", "true")])) == {V2: 1}
    assert _clusters(_rule(snapshot, "/api/hello", [("x-canary", "false")])) == {V1: 1}


def test_shop_is_a_90_10_split(snapshot):
    rule = _rule(snapshot, "/shop/cart")
    assert _clusters(rule) == {V1: 90, V2: 10}
    assert rule.total_weight == 100


def test_old_redirects_permanently_to_new(snapshot):
    rule = _rule(snapshot, "/old/page")
    assert rule.no_backends
    (redirect,) = rule.filters
    described = redirect.describe()
    assert described["type"] == "RequestRedirect"
    assert described["statusCode"] == 301
    assert described["path"] == {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}
    assert _clusters(_rule(snapshot, "/new/page")) == {V1: 1}


def test_legacy_is_rewritten_to_api(snapshot):
    rule = _rule(snapshot, "/legacy/orders")
    assert _clusters(rule) == {V1: 1}
    (rewrite,) = rule.filters
    assert rewrite.describe()["path"] == {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/api"}


def test_unrouted_paths_get_no_match(snapshot):
    # Prefixes match whole segments: /apix is not under /api.
    for path in ("/", "/apix", "/nothing-here"):
        assert find_match(snapshot, GATEWAY_PORT, "localhost", path) is None


# --- the demo upstream -------------------------------------------------------------------


def _load_demo_upstream():
    spec = importlib.util.spec_from_file_location("demo_upstream", EXAMPLES / "demo_upstream.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _exchange(reader, writer, request: bytes):
    writer.write(request)
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    status = int(head.split(" ", 2)[1])
    headers = dict(
        (k.strip().lower(), v.strip())
        for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:] if line)
    )
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, json.loads(body)


async def test_demo_upstream_describes_the_request_and_keeps_the_connection():
    demo = _load_demo_upstream()
    server = await demo.start_instance("v1", "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        status, headers, info = await _exchange(
            reader, writer,
            b"POST /api/orders?id=7 HTTP/1.1\r\nHost: shop\r\nX-Demo: meshgate\r\n"
            b"Content-Length: 5\r\n\r\nhello",
        )
        assert status == 200
        assert headers["x-upstream-instance"] == "v1"
        assert info["instance"] == "v1"
        assert (info["method"], info["path"], info["query"]) == ("POST", "/api/orders", "id=7")
        assert info["headers"]["x-demo"] == "meshgate"
        assert info["body_bytes"] == 5
        # Same connection, chunked body, and the ?status knob.
        status, _, info = await _exchange(
            reader, writer,
            b"PUT /x?status=503 HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
        )
        assert status == 503
        assert info["body_bytes"] == 3
        writer.close()
    finally:
        server.close()


def test_demo_upstream_command_serves_and_stops_on_sigterm():
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "demo_upstream.py"), "v2=127.0.0.1:0"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )
    try:
        line = proc.stdout.readline()
        found = re.search(r"demo upstream v2 listening on (http://127\.0\.0\.1:\d+)", line)
        assert found, line
        import urllib.request

        with urllib.request.urlopen(found.group(1) + "/shop", timeout=5) as response:
            assert json.loads(response.read())["instance"] == "v2"
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
