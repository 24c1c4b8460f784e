"""RequestHeaderModifier and ResponseHeaderModifier (HTTPHeaderFilter).

Semantics, as the spec and its conformance tests define them:

- ``set`` replaces every value of the name (names are case-insensitive);
- ``add`` appends to an existing value, comma-joined on one line
  (``my-header: foo`` + add ``bar`` -> ``my-header: foo,bar``), or adds the field;
- ``remove`` deletes every value of the name.

They apply in the order remove, set, add (Envoy's order: remove before add).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshgate.filters.base import Filter

if TYPE_CHECKING:
    from meshgate.http.headers import Headers
    from meshgate.proxy.context import RequestContext, ResponseHead

# Fields whose values cannot be comma-joined (RFC 9110 5.3): each value is its own line.
_NEVER_JOINED = frozenset({"set-cookie"})


class _HeaderModifier(Filter):
    __slots__ = ("_add", "_config", "_remove", "_set")

    def __init__(
        self,
        set: list[tuple[str, str]],
        add: list[tuple[str, str]],
        remove: list[str],
    ) -> None:
        self._set = tuple((n.lower(), v) for n, v in set)
        # (name, value, may_join)
        self._add = tuple((n.lower(), v, n.lower() not in _NEVER_JOINED) for n, v in add)
        self._remove = tuple(dict.fromkeys(n.lower() for n in remove))
        self._config = {
            "set": [{"name": n, "value": v} for n, v in set],
            "add": [{"name": n, "value": v} for n, v in add],
            "remove": list(remove),
        }

    def _apply(self, headers: Headers) -> None:
        for name in self._remove:
            if name in headers:  # the usual case is absent: skip the list rebuild
                headers.remove(name)
        for name, value in self._set:
            headers.set(name, value)
        for name, value, may_join in self._add:
            if may_join:
                existing = headers.get_all(name)
                if existing:
                    existing.append(value)
                    headers.set(name, ",".join(existing))
                    continue
            headers.add(name, value)

    def describe(self) -> dict:
        return {"type": self.name, **self._config}


class RequestHeaderModifier(_HeaderModifier):
    __slots__ = ()
    name = "RequestHeaderModifier"

    def on_request(self, ctx: RequestContext) -> None:
        self._apply(ctx.headers)


class ResponseHeaderModifier(_HeaderModifier):
    __slots__ = ()
    name = "ResponseHeaderModifier"

    def on_response(self, ctx: RequestContext, head: ResponseHead) -> None:
        self._apply(head.headers)
