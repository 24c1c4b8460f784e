"""A cache store in Redis (the gateway's ``--redis-url``), shared by gateway processes.

One Redis key per primary key, ``meshgate:cache:POLICY|KEY``, holding all its Vary
variants in one value: a 4-byte length, the variants' metadata as JSON, then their
bodies. Keys expire when the last variant has outlived its freshness and staleness
windows (plus an hour when it has validators, so it can still be revalidated); the
size is Redis's to bound (``maxmemory`` with an LRU ``maxmemory-policy``).

Redis failing is never a request failure: a read that fails is a miss, a write that
fails is skipped; the first failure of an outage logs one line, the recovery another.
"""

from __future__ import annotations

import logging
import math
import struct

import orjson

from meshgate.filters.cache.store import Entry, replace_variant

log = logging.getLogger("meshgate.cache")

PREFIX = "meshgate:cache:"
_VALIDATOR_GRACE = 3600.0


def encode(entries: list[Entry]) -> bytes:
    meta = orjson.dumps([{**e.to_dict(), "n": len(e.body)} for e in entries])
    return struct.pack(">I", len(meta)) + meta + b"".join(e.body for e in entries)


def decode(blob: bytes) -> list[Entry]:
    (n,) = struct.unpack_from(">I", blob)
    at = 4 + n
    out = []
    for m in orjson.loads(blob[4:at]):
        size = m.pop("n")
        m["headers"] = [tuple(p) for p in m["headers"]]
        m["vary"] = tuple(tuple(p) for p in m["vary"])
        out.append(Entry(body=blob[at : at + size], **m))
        at += size
    return out


def expiry(entries: list[Entry]) -> int:
    """Seconds Redis keeps the key: until the last variant is of no more use."""
    longest = 1.0
    for e in entries:
        left = e.lifetime - e.initial_age + max(e.stale_while_revalidate, e.stale_if_error)
        if e.etag is not None or e.last_modified is not None:
            left += _VALIDATOR_GRACE
        longest = max(longest, left)
    return math.ceil(longest)


class RedisStore:
    def __init__(self, url: str | None, policy: str, timeout: float = 0.25) -> None:
        self.url = url
        self.prefix = PREFIX + policy + "|"
        self.timeout = timeout
        self._client = None
        self.down = False
        self.errors = 0

    def __repr__(self) -> str:
        return f"<RedisStore {self.prefix}* {'down' if self.down else 'up'}>"

    def _redis(self):
        if self._client is None and self.url is not None:
            from redis.asyncio import Redis

            self._client = Redis.from_url(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
            )
        return self._client

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if not self.down:
            self.down = True
            from meshgate.ratelimit.redis_counters import redact

            log.error("cache store in %s unavailable (%s: %s): requests go upstream", redact(self.url), type(exc).__name__, exc)

    def _ok(self) -> None:
        if self.down:
            self.down = False
            log.warning("cache store in Redis answers again")

    async def get(self, key: str) -> list[Entry] | None:
        client = self._redis()
        if client is None:
            return None
        try:
            blob = await client.get(self.prefix + key)
        except Exception as exc:  # noqa: BLE001 - any failure is a miss, never a request failure
            self._failed(exc)
            return None
        self._ok()
        return decode(blob) if blob else None

    async def put(self, key: str, entry: Entry) -> None:
        entries = replace_variant(await self.get(key) or [], entry)
        client = self._redis()
        if client is None:
            return
        try:
            await client.set(self.prefix + key, encode(entries), ex=expiry(entries))
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)

    async def drop(self, key: str) -> None:
        client = self._redis()
        if client is None:
            return
        try:
            await client.delete(self.prefix + key)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)

    async def purge(self, url: str | None = None, prefix: str | None = None, host: str | None = None) -> int:
        from meshgate.filters.cache.store import _purged

        client = self._redis()
        if client is None:
            return 0
        dropped = 0
        async for name in client.scan_iter(match=_glob_escape(self.prefix) + "*", count=500):
            blob = await client.get(name)
            if not blob:
                continue
            entries = decode(blob)
            keep = [e for e in entries if not _purged(e, url, prefix, host)]
            if len(keep) == len(entries):
                continue
            dropped += len(entries) - len(keep)
            if keep:
                await client.set(name, encode(keep), ex=expiry(keep))
            else:
                await client.delete(name)
        return dropped

    def stop(self) -> None:
        self._client = None

    def describe(self) -> dict:
        from meshgate.ratelimit.redis_counters import redact

        return {"type": "Redis", "url": redact(self.url), "down": self.down, "errors": self.errors}


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
