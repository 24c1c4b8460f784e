"""A JWKS endpoint for the e2e tests, run as its own process (``JWKSServer`` starts it).

It binds 127.0.0.1 on the port given (0 = any), prints ``READY <port>`` and serves:

- ``GET /jwks.json`` (any path not under ``/control``): the current key set, or the
  failure the control switch asks for (``status`` other than 200: that status;
  ``mode: close``: the connection is closed without an answer);
- ``POST /control``: a JSON object with any of ``keys`` (the JWK list to serve),
  ``status``, ``mode`` (``serve`` | ``close``); answers the new state;
- ``GET /control``: the state, with ``hits`` (JWKS requests, by path) and
  ``last_hit`` (time.time() of the last one, by path).

Standard library only, so it runs with any interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path


class State:
    def __init__(self) -> None:
        self.keys: list[dict] = []
        self.status = 200
        self.mode = "serve"
        self.hits: dict[str, int] = {}
        self.last_hit: dict[str, float] = {}

    def dump(self) -> dict:
        return {
            "keys": [k.get("kid") for k in self.keys],
            "status": self.status,
            "mode": self.mode,
            "hits": self.hits,
            "last_hit": self.last_hit,
        }


STATE = State()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            fields = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name:
                    fields[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(fields.get("content-length", "0") or 0))
            path = target.split("?", 1)[0]
            if path == "/control":
                if method == "POST":
                    change = json.loads(body or b"{}")
                    for key in ("keys", "status", "mode"):
                        if key in change:
                            setattr(STATE, key, change[key])
                reply(writer, 200, json.dumps(STATE.dump()).encode())
            else:
                STATE.hits[target] = STATE.hits.get(target, 0) + 1
                STATE.last_hit[target] = time.time()
                if STATE.mode == "close":
                    return
                if STATE.status != 200:
                    reply(writer, STATE.status, b"unavailable")
                else:
                    reply(writer, 200, json.dumps({"keys": STATE.keys}).encode())
            await writer.drain()
            if fields.get("connection", "").lower() == "close":
                return
    finally:
        writer.close()


def reply(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    writer.write(
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--keys", type=Path, help="a JSON file with the JWK list to serve first")
    args = ap.parse_args()
    if args.keys:
        STATE.keys = json.loads(args.keys.read_text())
    server = await asyncio.start_server(handle, "127.0.0.1", args.port)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    sys.stdout.close()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
