"""``POST /cache/purge`` on the admin listener: drop stored responses by URL or path prefix.

Body (JSON), one of:
- ``{"key": "api.example.com/items?page=2"}``: entries whose URL (host, path and query
  as requested) is exactly this, every Vary variant and key variant (headers, consumer);
- ``{"prefix": "/items/"}``: entries whose path starts with this;
- ``"host": "api.example.com"`` narrows either to one host (alone: the whole host);
- ``"policy": "namespace/name"`` narrows to one CachePolicy's store.

Answer: ``200 {"purged": N}`` (entries dropped, summed over the stores of this process
and the shared Redis ones), ``400`` with the reason, ``405`` for another method.
"""

from __future__ import annotations

import orjson

from meshgate.filters.cache import STORES


async def handle_purge(method: str, body: bytes) -> tuple[int, bytes, str]:
    if method != "POST":
        return 405, b"use POST\n", "text/plain"
    try:
        doc = orjson.loads(body or b"null")
    except orjson.JSONDecodeError:
        return 400, b'{"error": "the body must be JSON"}', "application/json"
    error = _check(doc)
    if error is not None:
        return 400, orjson.dumps({"error": error}), "application/json"
    purged = await purge(doc.get("key"), doc.get("prefix"), doc.get("host"), doc.get("policy"))
    return 200, orjson.dumps({"purged": purged}), "application/json"


def _check(doc: object) -> str | None:
    if not isinstance(doc, dict):
        return 'expected an object: {"key": URL} or {"prefix": PATH}, optionally with "host" and "policy"'
    unknown = sorted(set(doc) - {"key", "prefix", "host", "policy"})
    if unknown:
        return f"unknown field(s): {', '.join(unknown)}"
    for name in ("key", "prefix", "host", "policy"):
        if name in doc and (not isinstance(doc[name], str) or not doc[name]):
            return f"{name} must be a non-empty string"
    if "key" in doc and "prefix" in doc:
        return "give key or prefix, not both"
    if not ({"key", "prefix", "host"} & set(doc)):
        return "give key, prefix or host"
    if "prefix" in doc and not doc["prefix"].startswith("/"):
        return "prefix is a path and starts with /"
    return None


async def purge(url: str | None, prefix: str | None, host: str | None = None, policy: str | None = None) -> int:
    purged = 0
    seen = set()
    for (name, _), store in list(STORES.items()):
        if (policy is not None and name != policy) or id(store) in seen:
            continue
        seen.add(id(store))
        purged += await store.purge(url=url, prefix=prefix, host=host.lower() if host else None)
    return purged
