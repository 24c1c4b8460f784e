"""A misbehaving upstream for the resilience e2e tests, switchable while it runs.

Run as its own process (``FlakyServer`` below starts it): it serves HTTP/1.1 on
127.0.0.1:<port> (0 = any) and a control listener on a second port, then prints
``READY <port> <control_port>`` on stdout. Every answer names the server (``X-Backend``
header and ``{"name": ...}`` body) so a test can tell the backends apart.

Behaviour of ordinary requests (``mode``), set over HTTP or per request:
- ``ok``: 200 with the JSON body;
- ``500``: 500 with the JSON body;
- ``stall``: read the request and never answer (the connection stays open);
- ``close``: read the request and close the connection without answering;
- ``slow``: wait ``delay`` seconds, then 200.
``?mode=...&delay=...`` on a request overrides the switch for that request only.

Control (on the control port, and on the serving port while it listens; never counted):
- ``POST /__control`` with JSON, any subset of ``{"mode": "ok"|"500"|"stall"|"close"|"slow",
  "delay": seconds, "health": status, "listen": bool, "drop_connections": bool,
  "reset_count": bool}``. ``listen: false`` really closes the listening socket, so new
  connects are refused (and ``drop_connections`` also closes the open ones, as a dying
  process would); ``listen: true`` binds the same port again. Answers the new state.
- ``GET /__count``: ``{"count", "health_checks", "last_request_at", "statuses", ...}``;
  ``count`` is ordinary requests received (heads read), ``last_request_at`` the wall
  clock time of the last one.
- ``GET /health``: answers with the ``health`` status (200 unless switched); counted in
  ``health_checks``, not in ``count``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, urlsplit

MODES = ("ok", "500", "stall", "close", "slow")
LOCALHOST = "127.0.0.1"


class Flaky:
    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.mode = "ok"
        self.delay = 0.0
        self.health = 200
        self.count = 0
        self.health_checks = 0
        self.last_request_at = 0.0
        self.statuses: dict[str, int] = {}
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.StreamWriter] = set()

    # -- listening socket ------------------------------------------------------------

    async def listen(self) -> None:
        if self.server is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOCALHOST, self.port))
        self.port = sock.getsockname()[1]
        self.server = await asyncio.start_server(self.serve, sock=sock, limit=1 << 20)

    async def stop_listening(self, drop_connections: bool) -> None:
        if self.server is not None:
            self.server.close()  # closes the listening socket now: connects are refused
            self.server = None
        if drop_connections:
            for writer in list(self.connections):
                writer.transport.abort()
            self.connections.clear()

    # -- control ---------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "name": self.name,
            "mode": self.mode,
            "delay": self.delay,
            "health": self.health,
            "listening": self.server is not None,
            "count": self.count,
            "health_checks": self.health_checks,
            "last_request_at": self.last_request_at,
            "statuses": dict(self.statuses),
            "open_connections": len(self.connections),
        }

    async def control(self, body: bytes) -> dict:
        cmd = json.loads(body or b"{}")
        if "mode" in cmd:
            if cmd["mode"] not in MODES:
                raise ValueError(f"unknown mode {cmd['mode']!r}")
            self.mode = cmd["mode"]
        if "delay" in cmd:
            self.delay = float(cmd["delay"])
        if "health" in cmd:
            self.health = int(cmd["health"])
        if cmd.get("reset_count"):
            self.count = self.health_checks = 0
            self.statuses.clear()
            self.last_request_at = 0.0
        if "listen" in cmd:
            if cmd["listen"]:
                await self.listen()
            else:
                await self.stop_listening(bool(cmd.get("drop_connections", True)))
        return self.state()

    async def serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                parsed = await read_request(reader)
                if parsed is None:
                    break
                method, path, _, body = parsed
                status, doc = await self.control_request(method, path, body)
                await respond(writer, status, json.dumps(doc).encode(), self.name)
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            writer.close()

    async def control_request(
        self, method: str, path: str, body: bytes
    ) -> tuple[int, dict]:
        if path == "/__control" and method == "POST":
            try:
                return 200, await self.control(body)
            except (ValueError, TypeError) as exc:
                return 400, {"error": str(exc)}
        if path == "/__count":
            return 200, self.state()
        return 404, {"error": f"no control path {path}"}

    # -- serving ---------------------------------------------------------------------

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections.add(writer)
        try:
            while True:
                parsed = await read_request(reader)
                if parsed is None:
                    break
                method, target, _, body = parsed
                url = urlsplit(target)
                if url.path.startswith("/__"):
                    status, doc = await self.control_request(method, url.path, body)
                    await respond(writer, status, json.dumps(doc).encode(), self.name)
                    continue
                if url.path.endswith("/health"):
                    self.health_checks += 1
                    await respond(writer, self.health, b"", self.name)
                    continue
                self.count += 1
                self.last_request_at = time.time()
                query = parse_qs(url.query)
                mode = query.get("mode", [self.mode])[0]
                delay = float(query.get("delay", [self.delay])[0])
                if mode == "stall":
                    await reader.read()  # until the peer gives up; never answer
                    break
                if mode == "close":
                    break
                if mode == "slow" and delay > 0:
                    await asyncio.sleep(delay)
                status = 500 if mode == "500" else 200
                self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
                doc = {
                    "name": self.name,
                    "path": target,
                    "method": method,
                    "count": self.count,
                }
                await respond(writer, status, json.dumps(doc).encode(), self.name)
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            self.connections.discard(writer)
            with contextlib.suppress(Exception):  # a test peer: closing must not raise
                writer.close()


async def read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes] | None:
    """One request (Content-Length bodies only; the tests send no others), or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    return method, target, headers, body


async def respond(
    writer: asyncio.StreamWriter, status: int, body: bytes, name: str
) -> None:
    head = (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nX-Backend: {name}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--name", default="flaky-0")
    args = parser.parse_args()
    flaky = Flaky(args.name, args.port)
    await flaky.listen()
    control = await asyncio.start_server(
        flaky.serve_control, LOCALHOST, args.control_port
    )
    print(f"READY {flaky.port} {control.sockets[0].getsockname()[1]}", flush=True)
    async with control:
        await control.serve_forever()


# --------------------------------------------------------------------------- test side


class FlakyServer:
    """``flaky_server.py`` as a subprocess, driven over its control port."""

    def __init__(self, name: str = "flaky-0") -> None:
        self.name = name
        self.pod = name  # harness.endpoint_slices names the EndpointSlice after `pod`
        self.port = 0
        self.control_port = 0
        self.proc: subprocess.Popen | None = None
        self._stderr = Path(
            tempfile.mkstemp(prefix=f"meshgate-{name}-", suffix=".stderr")[1]
        )

    def spawn(self) -> None:
        with open(self._stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--name", self.name],
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 10.0) -> FlakyServer:
        from harness import _read_line

        assert self.proc is not None and self.proc.stdout is not None
        line = _read_line(self.proc.stdout, timeout)
        if not line.startswith(b"READY "):
            self.stop()
            raise RuntimeError(f"flaky server {self.name} did not start: {line!r}")
        _, port, control_port = line.split()
        self.port, self.control_port = int(port), int(control_port)
        return self

    def start(self, timeout: float = 10.0) -> FlakyServer:
        self.spawn()
        return self.wait_ready(timeout)

    def stop(self) -> None:
        from harness import _terminate

        if self.proc is not None:
            _terminate(self.proc, 3)
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None
        self._stderr.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    # -- control
    def control(self, **cmd) -> dict:
        import httpx

        resp = httpx.post(
            f"http://{LOCALHOST}:{self.control_port}/__control", json=cmd, timeout=5
        )
        resp.raise_for_status()
        return resp.json()

    def set_mode(self, mode: str, delay: float | None = None) -> dict:
        cmd: dict = {"mode": mode}
        if delay is not None:
            cmd["delay"] = delay
        return self.control(**cmd)

    def set_health(self, status: int) -> dict:
        return self.control(health=status)

    def stop_accepting(self, drop_connections: bool = True) -> dict:
        return self.control(listen=False, drop_connections=drop_connections)

    def start_accepting(self) -> dict:
        return self.control(listen=True)

    def reset_count(self) -> dict:
        return self.control(reset_count=True)

    def stats(self) -> dict:
        import httpx

        return httpx.get(
            f"http://{LOCALHOST}:{self.control_port}/__count", timeout=5
        ).json()

    def count(self) -> int:
        return self.stats()["count"]


def start_flaky_servers(names) -> list[FlakyServer]:
    """Start one FlakyServer per name, in parallel; stop them all on failure."""
    servers = [FlakyServer(name) for name in names]
    try:
        for server in servers:
            server.spawn()
        for server in servers:
            server.wait_ready()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
