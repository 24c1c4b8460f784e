"""In-process harness for filter and engine tests: a real Engine on 127.0.0.1 in front
of a small asyncio upstream whose answers each test chooses, the filters under test put
on the one compiled rule (as a compiled plugin would be), requests from httpx.

Imported as ``from inprocess import ...`` (tests/unit/conftest.py puts this folder on
sys.path)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from http import HTTPStatus

import httpx

from meshgate.config.compile import compile_snapshot
from meshgate.config.loader import load_texts
from meshgate.config.snapshot import CompiledRule, Snapshot
from meshgate.proxy.engine import Engine

# (status, [(name, value)], body). With ("connection", "close") among the fields the
# body is close-delimited: no content-length, and the connection closes after it.
Answer = tuple[int, list[tuple[str, str]], bytes]


@dataclass
class Request:
    """One request as the upstream read it."""

    method: str
    target: str
    fields: list[tuple[str, str]]  # as sent, names and values stripped
    headers: dict[str, str]  # lower-cased names
    body: bytes


def echo(request: Request) -> Answer:
    """Answers JSON: method, target, headers (the fields as sent), body (as text).
    ``/raw...`` answers the request body back with the request's content-type."""
    if request.target.startswith("/raw"):
        out = request.body
        ctype = request.headers.get("content-type", "application/octet-stream")
    else:
        record = {
            "method": request.method,
            "target": request.target,
            "headers": request.fields,
            "body": request.body.decode("latin-1"),
        }
        out, ctype = json.dumps(record).encode(), "application/json"
    return 200, [("content-type", ctype), ("x-upstream", "yes")], out


class Upstream:
    """HTTP/1.1 on 127.0.0.1 (port chosen at start): reads each request with its
    content-length body, keeps it in ``seen`` and writes what ``answer`` returns for it
    (``answer`` may be a coroutine function). No body for HEAD, 204 and 304."""

    def __init__(self, answer: Callable[[Request], Answer | Awaitable[Answer]] = echo) -> None:
        self.answer = answer
        self.seen: list[Request] = []

    async def start(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await self._read(reader)
                self.seen.append(request)
                answer = self.answer(request)
                if inspect.isawaitable(answer):
                    answer = await answer
                status, fields, body = answer
                close = any(n.lower() == "connection" and v == "close" for n, v in fields)
                bodiless = status in (204, 304)
                out = b"HTTP/1.1 %d %b\r\n" % (status, _reason(status))
                out += b"".join(b"%b: %b\r\n" % (n.encode(), v.encode()) for n, v in fields)
                if not (close or bodiless):
                    out += b"content-length: %d\r\n" % len(body)
                out += b"\r\n" + (body if request.method != "HEAD" and not bodiless else b"")
                writer.write(out)
                await writer.drain()
                if close:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> Request:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ")
        fields = [(k.strip(), v.strip()) for k, v in (line.split(":", 1) for line in lines[1:] if line)]
        headers = {k.lower(): v for k, v in fields}
        body = b""
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        return Request(method, target, fields, headers, body)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"X"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def config(gateway_port: int, upstream_port: int) -> str:
    """A Gateway with one HTTP listener and one HTTPRoute rule to a Backend."""
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


def compile_with(filters: tuple, gateway_port: int, upstream_port: int) -> tuple[Snapshot, CompiledRule]:
    """The compiled ``config`` with ``filters`` on its one rule, and that rule."""
    loaded = load_texts([("c.yaml", config(gateway_port, upstream_port))])
    assert not loaded.errors
    snapshot = compile_snapshot(loaded.resources)
    (match,) = snapshot.ports[gateway_port].default_listener.any_host.matches
    rule = replace(match.rule, filters=tuple(filters))
    object.__setattr__(match, "rule", rule)
    return snapshot, rule


@contextlib.asynccontextmanager
async def serve(filters: tuple, answer: Callable[[Request], Answer | Awaitable[Answer]] = echo):
    """(httpx client to the gateway, the upstream) with ``filters`` on the rule and the
    upstream answering with ``answer``."""
    upstream = await Upstream(answer).start()
    port = free_port()
    snapshot, _ = compile_with(filters, port, upstream.port)
    engine = Engine(bind="127.0.0.1")
    await engine.apply(snapshot)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client, upstream
    finally:
        await engine.drain(0.1)
        upstream.close()


def compiled_filter(texts: list[tuple[str, str]], cls: type, port: int = 8080, host: str = "localhost", path: str = "/"):
    """The one filter of class ``cls`` on the rule that serves ``host``/``path`` on
    ``port``, once the YAML ``texts`` ((file name, text) pairs) are loaded and compiled."""
    from meshgate.config.compile.lookup import find_match

    result = load_texts(texts)
    assert result.errors == [], [str(e) for e in result.errors]
    match = find_match(compile_snapshot(result.resources), port, host, path)
    (f,) = [f for f in match.rule.filters if isinstance(f, cls)]
    return f
