"""The admin endpoints an operator or an orchestrator reads: readiness, the active
config, clusters, metrics, and POST /drain. Driven through ``AdminServer.handle`` on a
real (unbound) Engine, and once over TCP."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from meshgate.config.snapshot import Cluster, Endpoint, Snapshot
from meshgate.proxy.admin import AdminServer
from meshgate.proxy.engine import Engine


class Status:
    """What the runtime reports: readiness and the last reload."""

    def __init__(self) -> None:
        self.ready = False
        self.last_error: str | None = None

    def __call__(self) -> dict:
        return {"ready": self.ready, "last_error": self.last_error}


SNAPSHOT = Snapshot(
    version="0123456789ab",
    ports={},  # no listener to bind: the admin view does not need one
    clusters={"web": Cluster("web", (Endpoint("127.0.0.1", 9),), source="service/default/web:80")},
    dump={"routes": {"default/r": {"hostnames": []}}},
)


@pytest.fixture
async def engine():
    engine = Engine(bind="127.0.0.1")
    yield engine
    await engine.drain(deadline=0)


@pytest.fixture
def status():
    return Status()


@pytest.fixture
def drains():
    return []


@pytest.fixture
def admin(engine, status, drains):
    return AdminServer(engine, status, on_drain=lambda: drains.append(True))


async def test_ready_is_503_until_the_first_config_is_live(admin, engine, status):
    assert admin.handle("GET", "/ready")[:2] == (503, b"not ready\n")
    await engine.apply(SNAPSHOT)
    status.ready = True
    assert admin.handle("GET", "/ready")[:2] == (200, b"ready\n")


async def test_ready_turns_503_while_draining(admin, engine, status):
    await engine.apply(SNAPSHOT)
    status.ready = True
    engine.draining = True
    assert admin.handle("GET", "/ready")[0] == 503


async def test_healthz_is_always_200(admin):
    assert admin.handle("GET", "/healthz")[:2] == (200, b"ok\n")


async def test_config_dump_shows_the_active_version_and_last_reload(admin, engine, status):
    status.last_error = "cfg.yaml:1: bad"
    status_code, body, ctype = admin.handle("GET", "/config_dump")
    assert (status_code, ctype) == (200, "application/json")
    doc = orjson.loads(body)
    assert doc["version"] is None and doc["config"] is None  # nothing applied yet
    assert doc["last_reload"]["last_error"] == "cfg.yaml:1: bad"

    await engine.apply(SNAPSHOT)
    doc = orjson.loads(admin.handle("GET", "/config_dump")[1])
    assert doc["version"] == "0123456789ab"
    assert doc["ports"] == []
    assert doc["config"] == {"routes": {"default/r": {"hostnames": []}}}


async def test_clusters_lists_endpoints_with_pool_counters(admin, engine):
    await engine.apply(SNAPSHOT)
    status_code, body, ctype = admin.handle("GET", "/clusters")
    assert (status_code, ctype) == (200, "application/json")
    web = orjson.loads(body)["web"]
    assert web["source"] == "service/default/web:80"
    (ep,) = web["endpoints"]
    assert ep["address"] == "127.0.0.1:9"
    assert (ep["active"], ep["idle"], ep["queued"]) == (0, 0, 0)


async def test_metrics_is_prometheus_text(admin, engine):
    engine.metrics.observe("default/r", 200, 0.02, gateway="default/gw", listener="http")
    engine.metrics.observe("default/r", 200, 0.02, gateway="default/gw", listener="http", consumer="acme")
    status_code, body, ctype = admin.handle("GET", "/metrics")
    assert status_code == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert (
        'meshgate_http_requests_total{route="default/r",code="200",code_class="2xx",'
        'gateway="default/gw",listener="http",consumer=""} 1'
    ) in text.splitlines()
    assert (
        'meshgate_http_requests_total{route="default/r",code="200",code_class="2xx",'
        'gateway="default/gw",listener="http",consumer="acme"} 1'
    ) in text.splitlines()


async def test_unknown_path_is_404(admin):
    assert admin.handle("GET", "/nope")[:2] == (404, b"not found\n")
    assert admin.handle("GET", "/")[0] == 404


async def test_drain_needs_post(admin, drains):
    assert admin.handle("GET", "/drain")[0] == 405
    assert drains == []
    assert admin.handle("POST", "/drain")[:2] == (200, b"draining\n")
    assert drains == [True]


async def test_admin_answers_over_tcp_with_keep_alive(admin, engine, status):
    await admin.start("127.0.0.1", 0)
    port = admin.servers[0].sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert await reader.readexactly(len(b"not ready\n")) == b"not ready\n"

        status.ready = True
        await engine.apply(SNAPSHOT)
        writer.write(b"GET /ready?verbose=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(), 5)  # read to EOF: the server closes
        assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"connection: close\r\n" in rest
        assert rest.endswith(b"\r\n\r\nready\n")
    finally:
        writer.close()
        admin.close()
