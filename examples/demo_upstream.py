"""A tiny upstream app for the meshgate demo: answers every request with JSON that
describes the request it received and which instance answered.

Plain asyncio and the standard library only, so it runs before meshgate is installed.
It speaks just enough HTTP/1.1 for a demo: keep-alive, Content-Length and chunked
request bodies. Two knobs help show gateway behaviour:

    ?status=503   answer with that status (to watch retries, outlier detection)
    ?delay=1.5    wait that many seconds before answering (to watch timeouts)

Run both demo instances (what `make demo` does):

    python examples/demo_upstream.py                  # v1 on :8081, v2 on :8082
    python examples/demo_upstream.py v1=127.0.0.1:0   # any free port; prints it
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from urllib.parse import parse_qs, urlsplit

DEFAULT_INSTANCES = ("v1=127.0.0.1:8081", "v2=127.0.0.1:8082")
MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
MAX_DELAY = 30.0

REASONS = {
    200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request",
    404: "Not Found", 413: "Payload Too Large", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
}


class BadRequest(Exception):
    pass


async def _read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes:
    lowered = {name.lower(): value for name, value in headers}
    if "chunked" in lowered.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest("bad chunk size") from None
            if size == 0:
                # Trailers (if any) end with an empty line.
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return bytes(body)
            if len(body) + size > MAX_BODY:
                raise BadRequest("body too large")
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    length = lowered.get("content-length")
    if length is None:
        return b""
    if not length.isdigit() or int(length) > MAX_BODY:
        raise BadRequest("bad content-length")
    return await reader.readexactly(int(length))


def _describe(instance: str, method: str, target: str, version: str,
              headers: list[tuple[str, str]], body: bytes, peer: object) -> dict:
    parts = urlsplit(target)
    header_map: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        header_map[key] = f"{header_map[key]},{value}" if key in header_map else value
    return {
        "instance": instance,
        "pid": os.getpid(),
        "method": method,
        "path": parts.path,
        "query": parts.query,
        "http_version": version,
        "headers": header_map,
        "body_bytes": len(body),
        "client": f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer),
    }


async def _handle(instance: str, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            except asyncio.LimitOverrunError:
                await _reply(writer, 431, {"error": "request head too large"}, close=True)
                return
            lines = head.decode("latin-1").split("\r\n")
            try:
                method, target, version = lines[0].split(" ")
                headers = []
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers.append((name.strip(), value.strip()))
                body = await _read_body(reader, headers)
            except (ValueError, BadRequest, asyncio.IncompleteReadError) as exc:
                await _reply(writer, 400, {"error": f"bad request: {exc}"}, close=True)
                return
            info = _describe(instance, method, target, version, headers, body, peer)
            query = parse_qs(info["query"])
            status = 200
            if "status" in query and query["status"][0].isdigit():
                status = min(max(int(query["status"][0]), 200), 599)
            if "delay" in query:
                try:
                    await asyncio.sleep(min(max(float(query["delay"][0]), 0.0), MAX_DELAY))
                except ValueError:
                    pass
            connection = next((v.lower() for n, v in headers if n.lower() == "connection"), "")
            close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
            await _reply(writer, status, info, close=close, head_only=method == "HEAD",
                         instance=instance)
            if close:
                return
    finally:
        writer.close()


async def _reply(writer: asyncio.StreamWriter, status: int, payload: dict, *,
                 close: bool, head_only: bool = False, instance: str = "") -> None:
    body = (json.dumps(payload, indent=2) + "\n").encode()
    head = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
        "content-type: application/json",
        f"content-length: {len(body)}",
    ]
    if instance:
        head.append(f"x-upstream-instance: {instance}")
    if close:
        head.append("connection: close")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (b"" if head_only else body))
    try:
        await writer.drain()
    except ConnectionError:
        pass


async def start_instance(instance: str, host: str, port: int) -> asyncio.Server:
    """Start one instance; ``port=0`` picks a free port (see ``server.sockets``)."""
    return await asyncio.start_server(
        lambda r, w: _handle(instance, r, w), host, port, limit=MAX_HEAD, reuse_address=True
    )


def parse_instance(spec: str) -> tuple[str, str, int]:
    """``"v1=127.0.0.1:8081"`` -> ``("v1", "127.0.0.1", 8081)``."""
    name, _, address = spec.partition("=")
    host, _, port = address.rpartition(":")
    if not name or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=HOST:PORT, got {spec!r}")
    return name, host, int(port)


async def serve(specs: list[tuple[str, str, int]]) -> None:
    servers = []
    for name, host, port in specs:
        server = await start_instance(name, host, port)
        servers.append(server)
        bound = server.sockets[0].getsockname()
        print(f"demo upstream {name} listening on http://{bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Close the listeners and return; asyncio.run() cancels the open keep-alive
    # connections (wait_closed() would wait for clients such as the gateway's pool).
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "instances", nargs="*", type=parse_instance, metavar="NAME=HOST:PORT",
        help=f"instances to run (default: {' '.join(DEFAULT_INSTANCES)})",
    )
    args = parser.parse_args(argv)
    specs = args.instances or [parse_instance(s) for s in DEFAULT_INSTANCES]
    asyncio.run(serve(specs))


if __name__ == "__main__":
    main()
