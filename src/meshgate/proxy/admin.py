"""The admin listener: /ready, /healthz, /config_dump, /clusters, /metrics, POST /drain.

Not on the request hot path, so it is a small asyncio-streams server; it reads the
engine's state and never changes the data plane except through ``POST /drain``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from meshgate.proxy.errors import reason_phrase

log = logging.getLogger("meshgate.admin")


class AdminServer:
    def __init__(
        self,
        engine: Any,
        status: Callable[[], dict],
        on_drain: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.status = status  # -> {"ready": bool, "last_error": str|None, ...}
        self.on_drain = on_drain
        self.server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, host, port, reuse_address=True)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                    return
                request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
                parts = request_line.split(" ")
                if len(parts) != 3:
                    await self._send(writer, 400, b"bad request\n", "text/plain", close=True)
                    return
                method, target, _ = parts
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1].strip() or 0)
                if length:
                    await reader.readexactly(length)
                close = b"connection: close" in head.lower()
                status, body, ctype = self.handle(method, target.split("?", 1)[0])
                await self._send(writer, status, body, ctype, close)
                if close:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    async def _send(
        self, writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str, close: bool
    ) -> None:
        head = (
            f"HTTP/1.1 {status} {reason_phrase(status)}\r\ncontent-type: {ctype}\r\n"
            f"content-length: {len(body)}\r\n{'connection: close' + chr(13) + chr(10) if close else ''}\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()

    def handle(self, method: str, path: str) -> tuple[int, bytes, str]:
        engine = self.engine
        status = self.status()
        if path == "/ready":
            if status.get("ready") and not engine.draining:
                return 200, b"ready\n", "text/plain"
            return 503, b"not ready\n", "text/plain"
        if path == "/healthz":
            return 200, b"ok\n", "text/plain"
        if path == "/config_dump":
            snap = engine.snapshot
            doc = {
                "version": snap.version if snap is not None else None,
                "ports": engine.bound_ports,
                "last_reload": status,
                "config": snap.dump if snap is not None else None,
            }
            return 200, orjson.dumps(doc, option=orjson.OPT_INDENT_2), "application/json"
        if path == "/clusters":
            return (
                200,
                orjson.dumps(engine.upstreams.describe(), option=orjson.OPT_INDENT_2),
                "application/json",
            )
        if path == "/metrics":
            return 200, engine.metrics.render().encode(), "text/plain; version=0.0.4"
        if path == "/drain":
            if method != "POST":
                return 405, b"use POST\n", "text/plain"
            if self.on_drain is not None:
                self.on_drain()
            return 200, b"draining\n", "text/plain"
        return 404, b"not found\n", "text/plain"
