"""Response cache (meshgate.dev CachePolicy): ``build(spec, refs)`` makes its filter.

Stores outlive snapshots: they are kept in a process-wide registry keyed by the policy
and its store settings, so a reload that leaves a policy's store as it was keeps its
entries (and purges reach every store that still serves). ``purge.py`` answers the
admin API's ``POST /cache/purge`` from the same registry.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from meshgate.config.models.meta import parse_duration
from meshgate.filters.cache.filter import CacheFilter, KeySpec
from meshgate.filters.cache.store import MemoryStore

if TYPE_CHECKING:
    from meshgate.config.compile.refs import PolicyRefs
    from meshgate.config.models.cache_policy import CachePolicySpec
    from meshgate.filters.base import Filter

# (policy "ns/name", store settings) -> store; alive while a filter holds it.
STORES: weakref.WeakValueDictionary[tuple, object] = weakref.WeakValueDictionary()


def store_for(policy: str, spec: CachePolicySpec, refs: PolicyRefs | None = None):
    """The policy's store: the one it already has when its settings did not change."""
    if spec.store.type == "Redis":
        from meshgate.filters.cache.redis_store import RedisStore
        from meshgate.ratelimit.redis_counters import SETTINGS

        if SETTINGS.url is None and SETTINGS.serving and refs is not None:
            refs.error(("store", "type"), "a Redis store needs the gateway's --redis-url")
        wanted = ("Redis", SETTINGS.url, SETTINGS.timeout)
        make = lambda: RedisStore(SETTINGS.url, policy, SETTINGS.timeout)
    else:
        wanted = ("Memory", spec.maxEntries, spec.maxBytes)
        make = lambda: MemoryStore(spec.maxEntries, spec.maxBytes)
    key = (policy, wanted)
    store = STORES.get(key)
    if store is None:
        store = STORES[key] = make()
    return store


def build(spec: CachePolicySpec, refs: PolicyRefs) -> tuple[Filter, ...]:
    """The filter of a CachePolicy (``refs`` bound at its ``spec``)."""
    k = spec.key
    return (
        CacheFilter(
            policy=refs.key,
            store=store_for(refs.key, spec, refs),
            keyspec=KeySpec(k.host, k.query, k.queryParams, k.headers, k.consumer),
            default_ttl=parse_duration(spec.defaultTTL) if spec.defaultTTL else None,
            max_ttl=parse_duration(spec.maxTTL) if spec.maxTTL else None,
            max_object_bytes=spec.maxObjectBytes,
            coalesce=spec.coalesce,
            coalesce_timeout=parse_duration(spec.coalesceTimeout),
        ),
    )


__all__ = ["STORES", "CacheFilter", "KeySpec", "MemoryStore", "build", "store_for"]
