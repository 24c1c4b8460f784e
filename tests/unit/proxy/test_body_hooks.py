"""Body hooks (``on_request_body`` / ``on_response_body``): a rule whose filters have
one sees whole bodies, can replace them or answer instead, and the engine reframes
what it sends. Driven in process: a real Engine on 127.0.0.1 in front of a small
asyncio upstream, requests from httpx."""

from __future__ import annotations

import asyncio
import json

import pytest
from inprocess import Request, Upstream, compile_with, free_port, serve

from meshgate.filters.base import Filter
from meshgate.filters.gateway_api.mirror import RequestMirror
from meshgate.proxy.context import LocalReply


def answer(request: Request) -> tuple[int, list, bytes]:
    """JSON: method, the body it got, its framing headers. ``/big`` answers 64 KiB;
    ``/close`` answers a close-delimited body."""
    if request.target == "/big":
        return 200, [("content-type", "application/json")], b"x" * 65536
    if request.target == "/close":
        return 200, [("connection", "close")], b"until-close"
    out = json.dumps(
        {
            "method": request.method,
            "body": request.body.decode("latin-1"),
            "content-length": request.headers.get("content-length"),
            "transfer-encoding": request.headers.get("transfer-encoding"),
        }
    ).encode()
    return 200, [("content-type", "application/json")], out


class Upper(Filter):
    """Upper-cases request bodies, refuses ``deny``, reverses response bodies."""

    name = "upper"
    body_limit = 1024

    def on_request_body(self, ctx, body):
        if body == b"deny":
            return LocalReply(422, [("content-type", "text/plain")], b"no\n")
        return body.upper()

    async def on_response_body(self, ctx, head, body):
        head.headers.set("x-body-hooked", str(len(body)))
        return body[::-1]


@pytest.fixture
async def gateway():
    async with serve((Upper(),), answer) as (client, _):
        yield client


async def test_the_request_body_is_replaced_and_reframed(gateway):
    r = await gateway.post("/", content=b"hello")
    sent = json.loads(r.content[::-1])  # the response hook reversed it
    assert (sent["body"], sent["content-length"], sent["transfer-encoding"]) == ("HELLO", "5", None)


async def test_a_chunked_request_body_goes_upstream_with_a_length(gateway):
    async def chunks():
        yield b"ab"
        yield b"cd"

    r = await gateway.post("/", content=chunks())
    sent = json.loads(r.content[::-1])
    assert (sent["body"], sent["content-length"], sent["transfer-encoding"]) == ("ABCD", "4", None)


async def test_a_body_hook_can_answer_instead_of_the_upstream(gateway):
    r = await gateway.post("/", content=b"deny")
    assert (r.status_code, r.content) == (422, b"no\n")


async def test_a_request_body_over_the_limit_is_413(gateway):
    r = await gateway.post("/", content=b"x" * 2000)
    assert r.status_code == 413


async def test_the_response_body_is_replaced_with_its_head_and_length(gateway):
    r = await gateway.get("/")
    assert r.headers["x-body-hooked"] == str(len(r.content))
    assert r.headers["content-length"] == str(len(r.content))
    assert json.loads(r.content[::-1])["method"] == "GET"


async def test_a_response_body_over_the_limit_is_502(gateway):
    r = await gateway.get("/big")
    assert r.status_code == 502


async def test_a_close_delimited_response_body_is_hooked_whole(gateway):
    r = await gateway.get("/close")
    assert (r.status_code, r.content) == (200, b"until-close"[::-1])


async def test_head_requests_skip_the_response_body_hook(gateway):
    r = await gateway.head("/")
    assert r.status_code == 200 and "x-body-hooked" not in r.headers


# --- a plain hook that sometimes returns an awaitable ----------------------------------


class SometimesWaits(Filter):
    """Waits (an awaitable) only for /wait and /teapot; answers 418 after waiting for
    /teapot; otherwise passes at once."""

    name = "sometimes-waits"

    def on_request(self, ctx):
        if ctx.path in ("/wait", "/teapot"):
            return self._later(ctx)
        return None

    async def _later(self, ctx):
        await asyncio.sleep(0)
        if ctx.path == "/teapot":
            return LocalReply(418, [], b"waited\n")
        return None


class Marks(Filter):
    name = "marks"

    def on_request(self, ctx):
        ctx.headers.set("x-marked", "yes")


@pytest.fixture
async def deferring_gateway():
    filters = (SometimesWaits(), Marks())
    _, rule = compile_with(filters, free_port(), free_port())
    assert not rule.needs_task  # plain hooks: the fast path serves most requests
    async with serve(filters, answer) as served:
        yield served


async def test_a_deferred_request_runs_the_hooks_after_the_waiting_one(deferring_gateway):
    client, upstream = deferring_gateway
    for path in ("/", "/wait"):
        r = await client.post(path, content=b"x")
        assert r.status_code == 200
    # Marks ran after SometimesWaits in both cases: the upstream got its header.
    assert [(s.target, s.headers.get("x-marked")) for s in upstream.seen] == [("/", "yes"), ("/wait", "yes")]
    r = await client.get("/teapot")
    assert (r.status_code, r.content) == (418, b"waited\n")


# --- mirrors ------------------------------------------------------------------------


@pytest.mark.parametrize("body_later", [False, True])
async def test_a_mirrored_request_with_a_body_hook_mirrors_the_body_sent_upstream(body_later):
    # The mirror goes to the rule's own backend (the cluster name taken from the
    # compiled rule); the body arrives with the head, or after it (a large or slow one).
    upstream = await Upstream(answer).start()
    port = free_port()
    _, rule = compile_with((), port, upstream.port)
    mirror = RequestMirror(rule.backends[0].cluster, 100.0)
    upstream.close()
    async with serve((mirror, Upper()), answer) as (client, upstream):

        async def later():
            await asyncio.sleep(0.05)
            yield b"hello"

        r = await client.post("/", content=later() if body_later else b"hello")
        assert r.status_code == 200
        for _ in range(100):
            if len(upstream.seen) == 2:
                break
            await asyncio.sleep(0.01)
        bodies = sorted((s.headers["host"].endswith("-shadow"), s.body) for s in upstream.seen)
        assert bodies == [(False, b"HELLO"), (True, b"HELLO")]
