"""Counters of global rate limits, in Redis, shared by every gateway process.

One ``RedisCounters`` per process (``counters()``), configured from the command line
(``configure()``: ``--redis-url`` / ``MESHGATE_REDIS_URL``, ``--redis-timeout``,
``--rate-limit-fail-closed``). It is the background service of every global rate-limit
filter, so the engine starts it (a first PING, bounded) before a snapshot that needs it
takes traffic, and keeps it across reloads.

Counting is Envoy's ratelimit service's fixed window: a counter per rule, descriptor
and window start (``KEY:START``), incremented by the request's cost, expiring one
second after its window. ``hit()`` runs one Lua script for all the rules a request
matched (atomic: two gateways sharing a Redis can never both take the last unit),
and the scripts of all requests of one event-loop iteration go as one pipeline, so a
request costs at most one round trip and far less than one of CPU. The window start comes from Redis's own clock (``TIME``), so
gateways with skewed clocks still share windows.

Outages: the first failed call logs one line (the URL without its password) and
starts an outage; for ``RETRY_AFTER`` seconds after each failure requests do not wait
on Redis at all and ``hit()`` answers ``None`` (the filter fails open or closed, as
configured); then the next request tries again. The first success logs one line
with how long it lasted and how many requests were answered without Redis. redis-py
reconnects by itself; nothing is restarted. Every failed call counts in
``meshgate_ratelimit_redis_errors_total``.

Other counters share the client, the pipeline and the outage state: a module registers
its own Lua with ``script()`` and calls it with ``call()`` (plan quotas,
``meshgate.plans.counters``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("meshgate.ratelimit")

# After a failure, requests skip Redis this long before one tries again.
RETRY_AFTER = 0.5

# KEYS[i]: the counter's name without its window; ARGV[2i-1], ARGV[2i]: the rule's
# window in seconds and the request's cost. Returns, per key, the count after this
# request and the milliseconds left in the window. Cost 0 only reads.
LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #KEYS do
  local window = tonumber(ARGV[2 * i - 1])
  local cost = tonumber(ARGV[2 * i])
  local w = window * 1000000
  local start = now - (now % w)
  local key = KEYS[i] .. ':' .. string.format('%.0f', start / 1000000)
  local n
  if cost > 0 then
    n = redis.call('INCRBY', key, cost)
    if n == cost then
      redis.call('EXPIRE', key, window + 1)
    end
  else
    n = tonumber(redis.call('GET', key) or '0')
  end
  out[2 * i - 1] = n
  out[2 * i] = math.floor((start + w - now) / 1000)
end
return out
"""

# error class -> failed calls in this process (synced into metrics at scrape time)
REDIS_ERRORS: dict[str, int] = {}

# SHA1 -> Lua text of every script calls may name (loaded at start and after NOSCRIPT).
SCRIPTS: dict[str, str] = {}


def script(text: str) -> str:
    """Register a Lua script for ``RedisCounters.call``; returns its SHA1 (EVALSHA's name)."""
    sha = hashlib.sha1(text.encode()).hexdigest()
    SCRIPTS[sha] = text
    return sha


LUA_SHA = script(LUA)


@dataclass(slots=True)
class Settings:
    url: str | None = None
    timeout: float = 0.25  # seconds for connect and for each reply
    fail_closed: bool = False
    # True in a serving gateway: a global rule without a URL rejects the config.
    # False for `meshgate validate` and unit tests, which never talk to Redis.
    serving: bool = False


SETTINGS = Settings()
_COUNTERS: RedisCounters | None = None


def configure(url: str | None, timeout: float = 0.25, fail_closed: bool = False, serving: bool = True) -> None:
    """Set this process's Redis (from the command line) before any config is compiled."""
    global _COUNTERS
    SETTINGS.url = url or None
    SETTINGS.timeout = timeout
    SETTINGS.fail_closed = fail_closed
    SETTINGS.serving = serving
    _COUNTERS = None


def counters() -> RedisCounters:
    """This process's counters (one client, one outage state, whatever the config)."""
    global _COUNTERS
    if _COUNTERS is None:
        _COUNTERS = RedisCounters(SETTINGS.url, SETTINGS.timeout, SETTINGS.fail_closed)
    return _COUNTERS


def redact(url: str | None) -> str:
    """``url`` without its password, for logs."""
    if not url:
        return "(no --redis-url)"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def _error_class(exc: BaseException) -> str:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if isinstance(exc, (RedisTimeoutError, TimeoutError, asyncio.TimeoutError)):
        return "timeout"
    if isinstance(exc, (RedisConnectionError, OSError)):
        return "connection"
    return "response"


class RedisCounters:
    """Fixed-window counters in one Redis, with outage bookkeeping."""

    def __init__(self, url: str | None, timeout: float = 0.25, fail_closed: bool = False) -> None:
        self.url = url
        self.timeout = timeout
        self.fail_closed = fail_closed
        self._client = None
        self._pending: list = []  # (sha, keys, args, future) waiting for the next pipeline
        self._sending: set = set()  # pipelines in flight
        self.down_since: float | None = None  # monotonic start of the current outage
        self._retry_at = 0.0
        self.answered_without = 0  # requests decided without Redis in this outage

    def __repr__(self) -> str:
        state = "up" if self.down_since is None else "down"
        return f"<RedisCounters {redact(self.url)} {state}>"

    def _connect(self) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries inside redis-py: a request must not wait out a backoff; the
        # outage logic above decides when to try again.
        self._client = Redis.from_url(
            self.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
        )

    async def start(self) -> None:
        """Connect and load the script once, bounded, so the first requests do not pay
        for it. A Redis that is down is an outage like any other: logged, retried later."""
        if self.url is None:
            return
        if self._client is None:
            self._connect()
        try:
            await self._load_scripts()
        except Exception as exc:  # noqa: BLE001 - any failure is an outage, never a crash
            self._failed(exc, time.monotonic())
            return
        log.info("rate limit counters in %s", redact(self.url))

    async def _load_scripts(self) -> None:
        for text in list(SCRIPTS.values()):
            await self._client.script_load(text)  # type: ignore[union-attr]

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                asyncio.get_running_loop().create_task(client.aclose())
            except RuntimeError:
                pass

    def hit(self, keys: list[str], args: list[int]) -> asyncio.Future:
        """Add each cost to its counter. The future's result: per key (count after,
        ms left in the window), flattened; ``None`` when Redis cannot answer now.

        Calls made in the same event-loop iteration go to Redis as one pipeline (one
        write, one read): with hiredis, a reply in a pipeline of 50 costs ~25 us of
        CPU against ~120 us for a call of its own (bench/ratelimit_cost.py)."""
        return self.call(LUA_SHA, keys, args)

    def call(self, sha: str, keys: list[str], args: list) -> asyncio.Future:
        """Run the registered script ``sha`` (see ``script()``) in the next pipeline; the
        future's result is its reply, or ``None`` when Redis cannot answer now."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self.down_since is not None and time.monotonic() < self._retry_at:
            self.answered_without += 1
            fut.set_result(None)
            return fut
        if self._client is None:
            if self.url is None:
                fut.set_result(None)
                return fut
            self._connect()
        self._pending.append((sha, keys, args, fut))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list) -> None:
        from redis.exceptions import NoScriptError

        try:
            results = await self._pipeline(batch)
            if any(isinstance(r, NoScriptError) for r in results):
                # Redis restarted (or SCRIPT FLUSH): load the script, send again once.
                await self._load_scripts()
                results = await self._pipeline(batch)
            for r in results:
                if isinstance(r, Exception):
                    raise r
        except Exception as exc:  # noqa: BLE001 - redis-py raises many kinds; all mean "no answer"
            self._failed(exc, time.monotonic())
            self.answered_without += len(batch)
            for *_, fut in batch:
                if not fut.done():
                    fut.set_result(None)
            return
        if self.down_since is not None:
            self._recovered()
        for (*_, fut), r in zip(batch, results):
            if not fut.done():
                fut.set_result(r)

    async def _pipeline(self, batch: list) -> list:
        pipe = self._client.pipeline(transaction=False)  # type: ignore[union-attr]
        for sha, keys, args, _ in batch:
            pipe.evalsha(sha, len(keys), *keys, *args)
        return await pipe.execute(raise_on_error=False)

    def _failed(self, exc: BaseException, now: float) -> None:
        kind = _error_class(exc)
        REDIS_ERRORS[kind] = REDIS_ERRORS.get(kind, 0) + 1
        self._retry_at = now + RETRY_AFTER
        if self.down_since is None:
            self.down_since = now
            self.answered_without = 0
            log.error(
                "rate limit counters in %s unavailable (%s: %s); global rate limits and plans "
                "fail %s until it answers",
                redact(self.url),
                type(exc).__name__,
                exc,
                "closed (500)" if self.fail_closed else "open",
            )

    def _recovered(self) -> None:
        lasted = time.monotonic() - (self.down_since or 0.0)
        log.warning(
            "rate limit counters in %s available again after %.1fs; %d requests were "
            "answered without them",
            redact(self.url),
            lasted,
            self.answered_without,
        )
        self.down_since = None
        self.answered_without = 0
