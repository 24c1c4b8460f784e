"""Body hooks (``on_request_body`` / ``on_response_body``): a rule whose filters have
one sees whole bodies, can replace them or answer instead, and the engine reframes
what it sends. Driven in process: a real Engine on 127.0.0.1 in front of a small
asyncio upstream, requests from httpx."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import httpx
import pytest

from meshgate.config.compile import compile_snapshot
from meshgate.config.loader import load_texts
from meshgate.filters.base import Filter
from meshgate.proxy.context import LocalReply
from meshgate.proxy.engine import Engine


class Upstream:
    """Answers every request with JSON: method, the body it got, its framing headers.
    ``/big`` answers 64 KiB; ``/close`` answers a close-delimited body."""

    async def start(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ")
                fields = dict(
                    (k.strip().lower(), v.strip())
                    for k, v in (line.split(":", 1) for line in lines[1:] if line)
                )
                body = b""
                if "content-length" in fields:
                    body = await reader.readexactly(int(fields["content-length"]))
                if target == "/big":
                    out = b"x" * 65536
                elif target == "/close":
                    writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil-close")
                    await writer.drain()
                    writer.close()
                    return
                else:
                    out = json.dumps(
                        {
                            "method": method,
                            "body": body.decode("latin-1"),
                            "content-length": fields.get("content-length"),
                            "transfer-encoding": fields.get("transfer-encoding"),
                        }
                    ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%b" % (len(out), out)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


class Upper(Filter):
    """Upper-cases request bodies, refuses ``deny``, reverses response bodies."""

    name = "upper"
    body_limit = 1024

    def on_request_body(self, ctx, body):  # noqa: ANN001, ANN201
        if body == b"deny":
            return LocalReply(422, [("content-type", "text/plain")], b"no\n")
        return body.upper()

    async def on_response_body(self, ctx, head, body):  # noqa: ANN001, ANN201
        head.headers.set("x-body-hooked", str(len(body)))
        return body[::-1]


def config(gateway_port: int, upstream_port: int) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: meshgate
  listeners: [{{name: http, port: {gateway_port}, protocol: HTTP}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: up}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {upstream_port}}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
    - backendRefs: [{{group: gateway.envoyproxy.io, kind: Backend, name: up}}]
"""


def free_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
async def gateway():
    upstream = await Upstream().start()
    port = free_port()
    loaded = load_texts([("c.yaml", config(port, upstream.port))])
    assert not loaded.errors
    snapshot = compile_snapshot(loaded.resources)
    # Put the test filter on the one rule (as a compiled plugin would be).
    (match,) = snapshot.ports[port].default_listener.any_host.matches
    hooked = replace(match.rule, filters=(Upper(),))
    object.__setattr__(match, "rule", hooked)
    engine = Engine(bind="127.0.0.1")
    await engine.apply(snapshot)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        yield client
    await engine.drain(0.1)
    upstream.server.close()


async def test_the_request_body_is_replaced_and_reframed(gateway):
    r = await gateway.post("/", content=b"hello")
    sent = json.loads(r.content[::-1])  # the response hook reversed it
    assert (sent["body"], sent["content-length"], sent["transfer-encoding"]) == ("HELLO", "5", None)


async def test_a_chunked_request_body_goes_upstream_with_a_length(gateway):
    async def chunks():
        yield b"ab"
        yield b"cd"

    r = await gateway.post("/", content=chunks())
    sent = json.loads(r.content[::-1])
    assert (sent["body"], sent["content-length"], sent["transfer-encoding"]) == ("ABCD", "4", None)


async def test_a_body_hook_can_answer_instead_of_the_upstream(gateway):
    r = await gateway.post("/", content=b"deny")
    assert (r.status_code, r.content) == (422, b"no\n")


async def test_a_request_body_over_the_limit_is_413(gateway):
    r = await gateway.post("/", content=b"x" * 2000)
    assert r.status_code == 413


async def test_the_response_body_is_replaced_with_its_head_and_length(gateway):
    r = await gateway.get("/")
    assert r.headers["x-body-hooked"] == str(len(r.content))
    assert r.headers["content-length"] == str(len(r.content))
    assert json.loads(r.content[::-1])["method"] == "GET"


async def test_a_response_body_over_the_limit_is_502(gateway):
    r = await gateway.get("/big")
    assert r.status_code == 502


async def test_a_close_delimited_response_body_is_hooked_whole(gateway):
    r = await gateway.get("/close")
    assert (r.status_code, r.content) == (200, b"until-close"[::-1])


async def test_head_requests_skip_the_response_body_hook(gateway):
    r = await gateway.head("/")
    assert r.status_code == 200 and "x-body-hooked" not in r.headers


# --- a plain hook that sometimes returns an awaitable ----------------------------------


class SometimesWaits(Filter):
    """Waits (an awaitable) only for /wait and /teapot; answers 418 after waiting for
    /teapot; otherwise passes at once."""

    name = "sometimes-waits"

    def on_request(self, ctx):  # noqa: ANN001, ANN201
        if ctx.path in ("/wait", "/teapot"):
            return self._later(ctx)
        return None

    async def _later(self, ctx):  # noqa: ANN001, ANN202
        await asyncio.sleep(0)
        if ctx.path == "/teapot":
            return LocalReply(418, [], b"waited\n")
        return None


class Marks(Filter):
    name = "marks"

    def on_request(self, ctx):  # noqa: ANN001, ANN201
        ctx.headers.set("x-marked", "yes")


@pytest.fixture
async def deferring_gateway():
    upstream = await Upstream().start()
    port = free_port()
    loaded = load_texts([("c.yaml", config(port, upstream.port))])
    snapshot = compile_snapshot(loaded.resources)
    (match,) = snapshot.ports[port].default_listener.any_host.matches
    rule = replace(match.rule, filters=(SometimesWaits(), Marks()))
    assert not rule.needs_task  # plain hooks: the fast path serves most requests
    object.__setattr__(match, "rule", rule)
    engine = Engine(bind="127.0.0.1")
    await engine.apply(snapshot)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        yield client
    await engine.drain(0.1)
    upstream.server.close()


async def test_a_deferred_request_runs_the_hooks_after_the_waiting_one(deferring_gateway):
    for path in ("/", "/wait"):
        r = await deferring_gateway.post(path, content=b"x")
        assert r.status_code == 200
    # Marks ran after SometimesWaits in both cases (the upstream got its header):
    # the upstream echoes no headers, so check through a reply that Marks would not make.
    r = await deferring_gateway.get("/teapot")
    assert (r.status_code, r.content) == (418, b"waited\n")
