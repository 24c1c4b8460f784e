"""Echo upstream for the e2e tests: a stand-in for the Gateway API conformance `echo-basic`.

Run as its own process (the harness starts it): it binds 127.0.0.1 on the port given
(0 = any), prints ``READY <port>`` on stdout, and answers every request with the JSON
the conformance echo server returns (``path`` = request target, ``host``, ``method``,
``proto``, ``headers`` as canonical name -> list of values, without Host, ``namespace``,
``pod``), plus ``body_len``/``body_sha256``/``trailers`` of what it received.

Features the conformance tests and the proxy tests use:
- ``?delay=1s`` (Go duration) waits before answering (timeouts);
- ``.../status/NNN`` answers with that status (features below match the path's end too);
- ``?responseCode=500&succeedAfter=2&uuid=U`` answers responseCode for the first
  ``succeedAfter`` requests carrying that uuid, then 200 (retries);
- ``X-Echo-Set-Header: Name:value,Name2:value`` sets response headers;
- ``/download?size=N[&chunked=1]`` streams N deterministic bytes (see ``pattern_bytes``);
- ``/reset`` sends a head and part of the body, then resets the connection;
- ``/reset-before-response`` resets the connection after reading the request;
- ``/close`` closes the connection without answering.

Side channel: with ``--log FILE`` every request head it receives is appended to FILE as
one JSON line, before the body is read, and a second line (``"complete": true``) once the
body has been read. The harness reads that file; nothing of it is
reachable over HTTP, so the proxy cannot touch it by accident.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import socket
import struct
import sys
import time
from urllib.parse import parse_qs, urlsplit

PATTERN_BLOCK = bytes(range(256)) * 256  # 64 KiB


def pattern_bytes(size: int):
    """The deterministic body `/download?size=N` sends, as 64 KiB blocks."""
    left = size
    while left > 0:
        block = PATTERN_BLOCK if left >= len(PATTERN_BLOCK) else PATTERN_BLOCK[:left]
        left -= len(block)
        yield block


def canonical(name: str) -> str:
    # Go's textproto.CanonicalMIMEHeaderKey, which echo-basic's JSON reflects.
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    total, pos = 0.0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            raise ValueError(text)
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(text)
    return total


class BadRequest(Exception):
    pass


class EchoServer:
    def __init__(self, pod: str, namespace: str, log_path: str | None) -> None:
        self.pod = pod
        self.namespace = namespace
        self.log = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115
        self.attempts: dict[str, int] = {}

    def record(self, entry: dict) -> None:
        if self.log is not None:
            self.log.write(json.dumps(entry) + "\n")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                keep_alive = await self.one_request(reader, writer)
                if not keep_alive:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except BadRequest as exc:
            self.record({"pod": self.pod, "bad_request": str(exc), "t": time.time()})
            try:
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except ConnectionError:
                pass
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - a test peer: closing must not raise
                pass

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> None:
        # SO_LINGER 0 turns the close into a TCP RST.
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                self.record({"pod": self.pod, "partial": exc.partial[:200].decode("latin-1")})
            return False
        lines = head[:-4].decode("latin-1").split("\r\n")
        try:
            method, target, proto = lines[0].split(" ")
        except ValueError:
            raise BadRequest(lines[0]) from None
        raw_headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise BadRequest(line)
            raw_headers.append((name, value.strip()))
        headers: dict[str, list[str]] = {}
        host = ""
        for name, value in raw_headers:
            if name.lower() == "host":
                host = value
                continue
            headers.setdefault(canonical(name), []).append(value)
        lower = {k.lower(): v for k, v in headers.items()}
        self.record(
            {
                "pod": self.pod,
                "method": method,
                "path": target,
                "host": host,
                "proto": proto,
                "headers": headers,
                "peer": writer.get_extra_info("peername")[1],
                "t": time.time(),
            }
        )

        connection = ",".join(lower.get("connection", [])).lower()
        if proto == "HTTP/1.0":
            keep_alive = "keep-alive" in connection
        else:
            keep_alive = "close" not in connection

        if "100-continue" in ",".join(lower.get("expect", [])).lower():
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

        digest = hashlib.sha256()
        body_len = 0
        trailers: dict[str, list[str]] = {}
        te = ",".join(lower.get("transfer-encoding", [])).lower()
        if "chunked" in te:
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size_text = size_line[:-2].split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise BadRequest(f"chunk size {size_text!r}") from None
                if size == 0:
                    break
                left = size
                while left:
                    data = await reader.read(min(left, 1 << 16))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", left)
                    digest.update(data)
                    body_len += len(data)
                    left -= len(data)
                if await reader.readexactly(2) != b"\r\n":
                    raise BadRequest("chunk without CRLF")
            while True:
                line = await reader.readuntil(b"\r\n")
                if line == b"\r\n":
                    break
                name, _, value = line[:-2].decode("latin-1").partition(":")
                trailers.setdefault(canonical(name.strip()), []).append(value.strip())
        elif "content-length" in lower:
            left = int(lower["content-length"][0])
            while left:
                data = await reader.read(min(left, 1 << 16))
                if not data:
                    raise asyncio.IncompleteReadError(b"", left)
                digest.update(data)
                body_len += len(data)
                left -= len(data)

        # Second record: the whole request (body included) arrived, framed as above.
        self.record({"pod": self.pod, "complete": True, "path": target, "body_len": body_len})
        url = urlsplit(target)
        query = parse_qs(url.query)
        path = url.path
        # Features are keyed on the last path segment so that any route prefix works.
        action = path.rsplit("/", 1)[-1]

        if "delay" in query:
            await asyncio.sleep(parse_duration(query["delay"][0]))

        extra: list[tuple[str, str]] = []
        for spec in lower.get("x-echo-set-header", []):
            for pair in spec.split(","):
                name, _, value = pair.strip().partition(":")
                if name:
                    extra.append((name, value.strip()))

        if action == "close":
            return False
        if action == "reset-before-response":
            self._reset(writer)
            return False
        if action == "reset":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            await writer.drain()
            await asyncio.sleep(0.05)
            self._reset(writer)
            return False
        if action == "download":
            size = int(query.get("size", ["0"])[0])
            chunked = query.get("chunked", ["0"])[0] == "1"
            out = [b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"]
            out.append(b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: %d\r\n" % size)
            if not keep_alive:
                out.append(b"Connection: close\r\n")
            writer.write(b"".join(out) + b"\r\n")
            for block in pattern_bytes(size):
                writer.write(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
                await writer.drain()
            if chunked:
                writer.write(b"0\r\n\r\n")
            await writer.drain()
            return keep_alive

        status = 200
        status_match = re.search(r"/status/(\d\d\d)$", path)
        if status_match:
            status = int(status_match.group(1))
        uuid = query.get("uuid", [None])[0]
        if uuid is not None and "responseCode" in query:
            n = self.attempts[uuid] = self.attempts.get(uuid, 0) + 1
            if n <= int(query.get("succeedAfter", ["0"])[0]):
                status = int(query["responseCode"][0])

        if status_match:
            body = b""
        else:
            body = json.dumps(
                {
                    "path": target,
                    "host": host,
                    "method": method,
                    "proto": proto,
                    "headers": headers,
                    "namespace": self.namespace,
                    "ingress": "",
                    "service": "",
                    "pod": self.pod,
                    "body_len": body_len,
                    "body_sha256": digest.hexdigest(),
                    "trailers": trailers,
                },
                indent=1,
            ).encode()
        out = [f"HTTP/1.1 {status} X\r\n".encode()]
        for name, value in extra:
            out.append(f"{name}: {value}\r\n".encode("latin-1"))
        if body:
            out.append(b"Content-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n")
        out.append(b"X-Echo-Pod: %s\r\n" % self.pod.encode())
        out.append(b"Content-Length: %d\r\n" % len(body))
        if not keep_alive:
            out.append(b"Connection: close\r\n")
        out.append(b"\r\n")
        writer.write(b"".join(out))
        if method != "HEAD":
            writer.write(body)
        await writer.drain()
        return keep_alive


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pod", default="echo-0")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--log", default=None)
    args = parser.parse_args()
    echo = EchoServer(args.pod, args.namespace, args.log)
    server = await asyncio.start_server(echo.handle, "127.0.0.1", args.port, limit=1 << 20)
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
