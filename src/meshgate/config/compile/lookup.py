"""Which compiled match a request would hit: the engine's lookup path, for ``meshgate
explain``, the admin API and tests. Not used on the request path itself (the engine
walks the same objects inline, with its own parsed request).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qs

from meshgate.config.snapshot import CompiledMatch, Snapshot
from meshgate.http.headers import Headers


def find_match(
    snapshot: Snapshot,
    port: int,
    host: str,
    path: str,
    *,
    method: str = "GET",
    headers: Iterable[tuple[str, str]] = (),
    query: str = "",
) -> CompiledMatch | None:
    """The match a request would hit, or None when it gets a 404 (no listener, no
    table for the host, or no match in the table). ``host`` may carry a port, which
    is ignored like the engine does."""
    router = snapshot.ports.get(port)
    if router is None:
        return None
    host = host.rsplit(":", 1)[0].lower() if not host.startswith("[") else host.lower()
    listener = router.select(host)
    if listener is None:
        return None
    table = listener.hosts_for(host)
    if table is None:
        return None
    parsed = parse_qs(query, keep_blank_values=True) if table.needs_query else None
    return table.find(method, path, Headers.from_pairs(headers), parsed)
