"""Authentication services for the auth tests: an external authorization service (Envoy
ext_authz HTTP style) and an OAuth2 introspection endpoint (RFC 7662).

Both are plain asyncio HTTP/1.1 servers on 127.0.0.1. The unit tests run them in their
own event loop (``await ExtAuthService().start()``); the e2e tests run this file as a
process (``AuthServiceProcess``), which prints ``READY <port>`` and is driven and read
over HTTP on the same port (paths under ``/__``, never reached by check requests).

ExtAuthService decides by the ``Authorization`` header of the check request:
- ``Bearer allow``: 200 with ``x-user: alice``, ``x-tenant: t1``, ``x-not-listed: 1``;
- ``Bearer deny``: 403, JSON body ``{"error": "forbidden by policy"}``, ``x-deny-reason``;
- ``Bearer redirect``: 302 to ``https://login.example/?next=...``;
- ``Bearer boom``: 500; ``Bearer slow``: 200 after ``slow_seconds`` (2);
- none: 401 ``who are you?`` with ``WWW-Authenticate: Bearer realm="ext"``.
Every check request is recorded (method, target, headers): ``GET /__requests``.

IntrospectionService answers ``POST <any path>`` with form ``token=...``: the claims
set for that token (``active: true`` added), else ``{"active": false}``. The client must
authenticate with HTTP Basic ``client_id``/``client_secret`` (else 401
``invalid_client``). Built-in tokens: ``good`` (scope ``read write``, sub ``alice``,
exp in an hour), ``readonly`` (scope ``read``), ``expiring`` (exp in
``expiring_seconds``). ``POST /__control`` with ``{"tokens": {...}, "status": N,
"reset": true}`` changes them (``status`` other than 200 makes every answer that
status); ``GET /__count`` reads ``{"calls", "by_token", "last"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Self
from urllib.parse import parse_qsl, quote_plus, unquote_plus

LOCALHOST = "127.0.0.1"


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, list[tuple[str, str]], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    length = int(dict(headers).get("content-length", "0") or 0)
    body = await reader.readexactly(length) if length else b""
    return method, target, headers, body


def encode_response(status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} X\r\n"]
    lines += [f"{n}: {v}\r\n" for n, v in headers]
    lines.append(f"content-length: {len(body)}\r\n\r\n")
    return "".join(lines).encode("latin-1") + body


class _Server:
    """One listener; subclasses answer ``handle()``; ``/__`` paths are control."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> _Server:
        self.server = await asyncio.start_server(self._serve, LOCALHOST, port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1)
            self.server = None

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                req = await read_request(reader)
                if req is None:
                    break
                method, target, headers, body = req
                if target.startswith("/__"):
                    status, doc = self.control(method, target, body)
                    out = encode_response(status, [("content-type", "application/json")], json.dumps(doc).encode())
                else:
                    status, fields, payload = await self.handle(method, target, headers, body)
                    out = encode_response(status, fields, payload)
                writer.write(out)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def handle(self, method, target, headers, body):
        raise NotImplementedError

    def control(self, method: str, target: str, body: bytes) -> tuple[int, dict]:
        raise NotImplementedError


class ExtAuthService(_Server):
    def __init__(self, slow_seconds: float = 2.0) -> None:
        super().__init__()
        self.slow_seconds = slow_seconds
        self.requests: list[dict] = []

    async def handle(self, method, target, headers, body):
        self.requests.append({"method": method, "target": target, "headers": headers, "body_len": len(body)})
        auth = dict(headers).get("authorization")
        if auth == "Bearer allow":
            return 200, [("x-user", "alice"), ("x-tenant", "t1"), ("x-not-listed", "1")], b"ok"
        if auth == "Bearer deny":
            body = json.dumps({"error": "forbidden by policy"}).encode()
            return 403, [("content-type", "application/json"), ("x-deny-reason", "policy")], body
        if auth == "Bearer redirect":
            return 302, [("location", "https://login.example/?next=" + quote_plus(target))], b""
        if auth == "Bearer boom":
            return 500, [], b"internal"
        if auth == "Bearer slow":
            await asyncio.sleep(self.slow_seconds)
            return 200, [("x-user", "slow")], b""
        return 401, [("www-authenticate", 'Bearer realm="ext"'), ("content-type", "text/plain")], b"who are you?"

    def control(self, method: str, target: str, body: bytes) -> tuple[int, dict]:
        if target == "/__requests":
            return 200, {"requests": self.requests}
        if target == "/__reset":
            self.requests.clear()
            return 200, {}
        return 404, {}


class IntrospectionService(_Server):
    def __init__(self, client_id: str = "gateway", client_secret: str = "s3cret:&+", expiring_seconds: float = 2.0) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        now = time.time()
        self.tokens: dict[str, dict] = {
            "good": {"scope": "read write", "sub": "alice", "client_id": "app-1", "exp": int(now + 3600),
                     "iss": "https://as.example", "ext": {"tenant": "t1"}},
            "readonly": {"scope": "read", "sub": "bob", "client_id": "app-2", "exp": int(now + 3600)},
            "expiring": {"scope": "read write", "sub": "carol", "exp": now + expiring_seconds},
        }
        self.status = 200
        self.calls = 0
        self.by_token: dict[str, int] = {}
        self.last: dict = {}

    def _authenticated(self, headers: list[tuple[str, str]]) -> bool:
        value = dict(headers).get("authorization", "")
        if not value.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(value[6:]).decode()
        except ValueError:
            return False
        cid, _, secret = decoded.partition(":")
        # RFC 6749 2.3.1: each part form-urlencoded before base64.
        return unquote_plus(cid) == self.client_id and unquote_plus(secret) == self.client_secret

    async def handle(self, method, target, headers, body):
        form = dict(parse_qsl(body.decode()))
        self.calls += 1
        token = form.get("token", "")
        self.by_token[token] = self.by_token.get(token, 0) + 1
        self.last = {"method": method, "target": target, "headers": headers, "form": form}
        json_type = [("content-type", "application/json")]
        if self.status != 200:
            return self.status, json_type, b'{"error": "server_error"}'
        if method != "POST" or dict(headers).get("content-type") != "application/x-www-form-urlencoded":
            return 400, json_type, b'{"error": "invalid_request"}'
        if not self._authenticated(headers):
            return 401, [*json_type, ("www-authenticate", "Basic")], b'{"error": "invalid_client"}'
        claims = self.tokens.get(token)
        doc = {"active": False} if claims is None else {"active": True, **claims}
        return 200, json_type, json.dumps(doc).encode()

    def control(self, method: str, target: str, body: bytes) -> tuple[int, dict]:
        if target == "/__count":
            return 200, {"calls": self.calls, "by_token": self.by_token, "last": self.last}
        if target == "/__control":
            cmd = json.loads(body or b"{}")
            if cmd.get("reset"):
                self.calls = 0
                self.by_token.clear()
            if "tokens" in cmd:
                self.tokens.update(cmd["tokens"])
            if "status" in cmd:
                self.status = int(cmd["status"])
            return 200, {"calls": self.calls}
        return 404, {}


# --------------------------------------------------------------------------- as a process


class AuthServiceProcess:
    """This file run as a process (``role``: ext-auth | introspection); killed by us only."""

    def __init__(self, role: str, *args: str) -> None:
        self.role = role
        self.args = list(args)
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 10.0) -> AuthServiceProcess:
        from harness import _read_line

        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__)), self.role, *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        line = _read_line(self.proc.stdout, timeout)
        if not line.startswith(b"READY "):
            self.stop()
            raise RuntimeError(f"{self.role} service did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        from harness import _terminate

        proc, self.proc = self.proc, None
        if proc is None:
            return
        _terminate(proc, 3)
        if proc.stdout:
            proc.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def get(self, path: str) -> dict:
        import httpx

        return httpx.get(self.url + path, timeout=5).json()

    def post(self, path: str, doc: dict) -> dict:
        import httpx

        return httpx.post(self.url + path, json=doc, timeout=5).json()


async def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["ext-auth", "introspection"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--expiring-seconds", type=float, default=2.0)
    args = parser.parse_args()
    if args.role == "ext-auth":
        server: _Server = ExtAuthService()
    else:
        server = IntrospectionService(expiring_seconds=args.expiring_seconds)
    await server.start(args.port)
    print(f"READY {server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop()


if __name__ == "__main__":
    asyncio.run(_main())
