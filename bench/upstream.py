"""The benchmark's upstream: answers any request with 200 and a 100-byte body, keep-alive.

It must cost as little CPU as possible so it is never the bottleneck of a proxy
run on a 2-core machine. `start_upstream()` therefore prefers a second nginx
instance serving the body itself (`return 200 "..."`, C, one worker); when nginx
is not installed it falls back to the server in this file: a raw asyncio
Protocol on uvloop with httptools parsing (both are meshgate dependencies), no
framework, a prebuilt response, pipelining-safe.

Run the Python server by hand:  .venv/bin/python bench/upstream.py --port 8081
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import (
    BODY,
    Managed,
    find_nginx,
    http_status,
    launch,
    nginx_upstream_argv,
    wait_ready,
)

RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"\r\n" + BODY
)
RESPONSE_CLOSE = RESPONSE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)


class _Conn(asyncio.Protocol):
    __slots__ = ("close_after", "out", "parser", "transport")

    def __init__(self) -> None:
        import httptools

        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.out: list[bytes] = []
        self.close_after = False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        import httptools

        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.transport.close()
            return
        if self.out:
            # one write for every request completed in this chunk (pipelining)
            self.transport.write(b"".join(self.out) if len(self.out) > 1 else self.out[0])
            self.out.clear()
            if self.close_after:
                self.transport.close()

    # httptools callback
    def on_message_complete(self) -> None:
        if self.parser.should_keep_alive():
            self.out.append(RESPONSE)
        else:
            self.out.append(RESPONSE_CLOSE)
            self.close_after = True


def serve(host: str, port: int) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # plain asyncio still works, just slower
        pass

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Conn, host, port, backlog=4096, reuse_address=True)
        bound = server.sockets[0].getsockname()[1]
        print(f"upstream listening on {host}:{bound}", flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


def start_upstream(workdir: Path, port: int, force_python: bool = False) -> tuple[Managed, str]:
    """Start the upstream on 127.0.0.1:port and wait until it answers.

    Returns (process, kind) with kind "nginx" or "python".
    """
    workdir.mkdir(parents=True, exist_ok=True)
    nginx = None if force_python else find_nginx()
    if nginx:
        proc = launch("upstream-nginx", nginx_upstream_argv(nginx, workdir, port), workdir)
        kind = "nginx"
    else:
        argv = [sys.executable, str(Path(__file__).resolve()), "--port", str(port)]
        proc = launch("upstream-python", argv, workdir, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        kind = "python"
    try:
        wait_ready(proc, lambda: http_status(f"http://127.0.0.1:{port}/") == 200, 20.0, "answering GET /")
    except BaseException:
        proc.stop()
        raise
    return proc, kind


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Fast 100-byte HTTP/1.1 upstream (uvloop + httptools).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    a = ap.parse_args()
    serve(a.host, a.port)
