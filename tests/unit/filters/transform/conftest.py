"""In-process harness for policy filters: a real Engine on 127.0.0.1 in front of an
asyncio echo upstream (it answers what it received as JSON), the filters under test put
on the one compiled rule, requests from httpx. Also a PolicyRefs stand-in that serves
ConfigMaps from a dict and records errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from dataclasses import replace

import httpx
import pytest

from meshgate.config.compile import compile_snapshot
from meshgate.config.loader import load_texts
from meshgate.proxy.engine import Engine


class FakeRefs:
    def __init__(self, configmaps: dict | None = None) -> None:
        self.configmaps = configmaps or {}
        self.errors: list[tuple[tuple, str]] = []
        self.key = "default/policy"

    def error(self, path, message):
        self.errors.append((("spec", *path), message))

    def configmap(self, name, path, namespace=None):
        if name not in self.configmaps:
            self.error(path, f"ConfigMap default/{name} not found")
            return None
        return self.configmaps[name]


class EchoUpstream:
    """Answers JSON: method, target, headers, body (as text). ``/raw/...`` answers the
    request body back with the request's content-type."""

    async def start(self) -> EchoUpstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.seen: list[dict] = []
        return self

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ")
                fields = [
                    tuple(x.strip() for x in line.split(":", 1))
                    for line in lines[1:]
                    if line
                ]
                lookup = {k.lower(): v for k, v in fields}
                body = b""
                if "content-length" in lookup:
                    body = await reader.readexactly(int(lookup["content-length"]))
                record = {
                    "method": method,
                    "target": target,
                    "headers": fields,
                    "body": body.decode("latin-1"),
                }
                self.seen.append(record)
                if target.startswith("/raw"):
                    out, ctype = (
                        body,
                        lookup.get("content-type", "application/octet-stream"),
                    )
                else:
                    out, ctype = json.dumps(record).encode(), "application/json"
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: %b\r\nx-upstream: yes\r\ncontent-length: %d\r\n\r\n%b"
                    % (ctype.encode(), len(out), out)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def _config(gateway_port: int, upstream_port: int) -> str:
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


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextlib.asynccontextmanager
async def serve(filters: tuple):
    """(httpx client to the gateway, the upstream) with ``filters`` on the rule."""
    upstream = await EchoUpstream().start()
    port = _free_port()
    loaded = load_texts([("c.yaml", _config(port, upstream.port))])
    assert not loaded.errors
    snapshot = compile_snapshot(loaded.resources)
    (match,) = snapshot.ports[port].default_listener.any_host.matches
    object.__setattr__(match, "rule", replace(match.rule, filters=tuple(filters)))
    engine = Engine(bind="127.0.0.1")
    await engine.apply(snapshot)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client, upstream
    finally:
        await engine.drain(0.1)
        upstream.server.close()


@pytest.fixture
def fake_refs():
    return FakeRefs


@pytest.fixture
def gateway_with():
    """``async with gateway_with(filters) as (client, upstream): ...``"""
    return serve
