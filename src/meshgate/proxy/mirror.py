"""RequestMirror: fire-and-forget copies of a request to other backends.

A mirror never delays or breaks the main request: it is sent from its own task once
the main request's body is complete, its response is read and dropped, and any error
is counted and forgotten. Bodies larger than the replay limit are not mirrored.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshgate.proxy.engine import Engine
    from meshgate.proxy.exchange import Exchange

log = logging.getLogger("meshgate.mirror")
_MIRROR_TIMEOUT = 10.0


def send_mirrors(engine: Engine, exchange: Exchange) -> None:
    ctx = exchange.ctx
    mirrors = ctx.mirrors or ()
    ctx.mirrors = None  # sent once, whichever of "filters done" / "body done" is last
    if (exchange.req_chunked or exchange.req_length) and exchange.replay is None:
        return  # body too large to copy
    body = b"".join(exchange.replay or ())
    head_lines = [f"{ctx.method} {ctx.target()} HTTP/1.1\r\n"]
    for n, v in ctx.headers.items():
        if n in ("host", "content-length", "transfer-encoding", "connection", "keep-alive"):
            continue
        head_lines.append(f"{n}: {v}\r\n")
    # Envoy's convention: the mirror's Host carries a "-shadow" suffix.
    host = ctx.upstream_host or ctx.authority or "localhost"
    head_lines.append(f"host: {host}-shadow\r\ncontent-length: {len(body)}\r\n")
    head_lines.append(f"x-forwarded-for: {ctx.client_ip}\r\nconnection: close\r\n\r\n")
    request = "".join(head_lines).encode("latin-1") + body
    for mirror in mirrors:
        if mirror.cluster is None:
            continue
        cluster = engine.upstreams.clusters.get(mirror.cluster)
        if cluster is None or not cluster.routable:
            continue
        ep = cluster.pick(ctx).endpoint
        engine.loop.create_task(_send_one(ep.host, ep.port, request))


async def _send_one(host: str, port: int, request: bytes) -> None:
    writer = None
    try:
        async with asyncio.timeout(_MIRROR_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            await writer.drain()
            await reader.read()  # until the mirror closes (we sent connection: close)
    except (OSError, TimeoutError) as exc:
        log.debug("mirror to %s:%d failed: %r", host, port, exc)
    finally:
        if writer is not None:
            writer.close()
