"""Stored responses and the stores that keep them.

An ``Entry`` is one stored response with what RFC 9111 needs to reuse it: when it was
requested and received, its corrected initial age, freshness lifetime, staleness
windows, validators and the request values its ``Vary`` names. Entries sharing a
primary key (the policy's cache key) are its Vary variants.

A store is two small async calls on the request path (``get``, ``put``) and one
admin call (``purge``); ``MemoryStore`` (this process, LRU within entry and byte
bounds) and ``RedisStore`` (``redis_store.py``, shared by gateways) implement them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

#: most Vary variants kept for one primary key; the oldest goes first
MAX_VARIANTS = 16


@dataclass(slots=True)
class Entry:
    status: int
    headers: list[tuple[str, str]]  # as received, minus UNSTORED_FIELDS
    body: bytes
    response_time: float  # when the response arrived (seconds since the epoch)
    initial_age: float  # corrected_initial_age (RFC 9111 section 4.2.3)
    lifetime: float  # freshness lifetime, seconds
    stale_while_revalidate: float  # seconds a stale entry may still be served while refreshing
    stale_if_error: float  # seconds a stale entry may still be served when the origin fails
    must_revalidate: bool  # must-revalidate, proxy-revalidate or s-maxage: never served stale
    no_cache: bool  # revalidated before every use
    etag: str | None
    last_modified: str | None
    vary: tuple[tuple[str, str], ...]  # (field name, the request's value, "" if absent)
    url: str  # host + path + "?query" as requested: what purges match
    host: str
    path: str

    def age(self, now: float) -> float:
        """current_age (section 4.2.3)."""
        return self.initial_age + max(0.0, now - self.response_time)

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(n) + len(v) + 4 for n, v in self.headers) + 256

    def matches(self, headers) -> bool:
        """Do the request's ``headers`` select this variant (section 4.1)?"""
        for name, value in self.vary:
            if vary_value(headers, name) != value:
                return False
        return True

    def to_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__slots__ if f != "body"}


def vary_value(headers, name: str) -> str:
    """A request field's values normalized for Vary matching: combined with ", " and
    whitespace around commas dropped (section 4.1 allows this normalization)."""
    values = headers.get_all(name)
    if not values:
        return ""
    return ",".join(p.strip() for v in values for p in v.split(","))


def pick(entries: list[Entry] | None, headers) -> Entry | None:
    if entries:
        for entry in entries:
            if entry.matches(headers):
                return entry
    return None


class Store(Protocol):
    async def get(self, key: str) -> list[Entry] | None:
        """The variants stored under ``key`` (newest first), or None."""

    async def put(self, key: str, entry: Entry) -> None:
        """Store ``entry`` under ``key``, replacing the variant with the same Vary values."""

    async def drop(self, key: str) -> None:
        """Forget every variant under ``key`` (an unsafe method changed the resource)."""

    async def purge(self, url: str | None = None, prefix: str | None = None, host: str | None = None) -> int:
        """Drop entries whose ``url`` is ``url``, or whose path starts with ``prefix``
        (on ``host`` when given); the number of entries dropped."""

    def describe(self) -> dict: ...


def replace_variant(entries: list[Entry], entry: Entry) -> list[Entry]:
    kept = [e for e in entries if e.vary != entry.vary]
    return [entry, *kept[: MAX_VARIANTS - 1]]


class MemoryStore:
    """Entries in this process: least recently used primary keys go first when a bound
    (entries, bytes) is passed."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, list[Entry]] = OrderedDict()
        self.entries = 0
        self.bytes = 0
        self.evictions = 0

    def __repr__(self) -> str:
        return f"<MemoryStore {self.entries}/{self.max_entries} entries, {self.bytes}/{self.max_bytes} bytes>"

    def get_now(self, key: str) -> list[Entry] | None:
        entries = self._items.get(key)
        if entries is not None:
            self._items.move_to_end(key)
        return entries

    async def get(self, key: str) -> list[Entry] | None:
        return self.get_now(key)

    def put_now(self, key: str, entry: Entry) -> None:
        if entry.size > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._account(old, -1)
        entries = replace_variant(old or [], entry)
        self._items[key] = entries
        self._account(entries, 1)
        while (self.entries > self.max_entries or self.bytes > self.max_bytes) and self._items:
            _, dropped = self._items.popitem(last=False)
            self._account(dropped, -1)
            self.evictions += len(dropped)

    async def put(self, key: str, entry: Entry) -> None:
        self.put_now(key, entry)

    def _account(self, entries: list[Entry], sign: int) -> None:
        self.entries += sign * len(entries)
        self.bytes += sign * sum(e.size for e in entries)

    def drop_now(self, key: str) -> None:
        entries = self._items.pop(key, None)
        if entries is not None:
            self._account(entries, -1)

    async def drop(self, key: str) -> None:
        self.drop_now(key)

    async def purge(self, url: str | None = None, prefix: str | None = None, host: str | None = None) -> int:
        dropped = 0
        for key in list(self._items):
            entries = self._items[key]
            keep = [e for e in entries if not _purged(e, url, prefix, host)]
            if len(keep) == len(entries):
                continue
            dropped += len(entries) - len(keep)
            self._account(entries, -1)
            if keep:
                self._items[key] = keep
                self._account(keep, 1)
            else:
                del self._items[key]
        return dropped

    def describe(self) -> dict:
        return {
            "type": "Memory",
            "entries": self.entries,
            "bytes": self.bytes,
            "maxEntries": self.max_entries,
            "maxBytes": self.max_bytes,
            "evictions": self.evictions,
        }


def _purged(entry: Entry, url: str | None, prefix: str | None, host: str | None) -> bool:
    if host is not None and entry.host != host:
        return False
    if url is not None:
        return entry.url == url
    if prefix is not None:
        return entry.path.startswith(prefix)
    return host is not None
