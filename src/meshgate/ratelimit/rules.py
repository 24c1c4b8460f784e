"""Rate-limit rules as the data plane sees them: the limit, the cost and the client
selectors of one BackendTrafficPolicy rule, compiled once per config.

``RateLimitRule.descriptor(ctx)`` is the per-request question: ``None`` when the rule
does not select the request, else the string that names the request's bucket within
the rule: ``""`` when every selected request shares one bucket, the distinct values
(header value, client address, consumer) joined with ``\\x1f`` otherwise. Matchers
answer yes/no; distinct selectors answer a value or ``None`` (absent header, address
outside the CIDR, no consumer: the rule does not apply, as in Envoy).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshgate.proxy.context import RequestContext

# Envoy's ratelimit service (config_impl.go, UnitToDivider): month and year are fixed.
UNIT_SECONDS = {
    "Second": 1,
    "Minute": 60,
    "Hour": 3600,
    "Day": 86400,
    "Month": 86400 * 30,
    "Year": 86400 * 365,
}
SEPARATOR = "\x1f"  # between distinct values in a descriptor; never in a header value


# --- matchers: the request is selected or not ------------------------------------------


class HeaderValue:
    """A header equal to ``value`` (or matching ``regex``); ``invert`` flips the answer,
    and an absent header counts as "does not match" (so inverted, it is selected)."""

    __slots__ = ("invert", "name", "regex", "value")

    def __init__(self, name: str, value: str | None, regex: str | None, invert: bool) -> None:
        self.name = name.lower()
        self.value = value
        self.regex = re.compile(regex) if regex is not None else None
        self.invert = invert

    def __call__(self, ctx: RequestContext) -> bool:
        got = ctx.headers.get_joined(self.name)
        if got is None:
            hit = False
        elif self.regex is not None:
            hit = self.regex.fullmatch(got) is not None
        else:
            hit = got == self.value
        return hit is not self.invert

    def describe(self) -> dict:
        kind = "RegularExpression" if self.regex is not None else "Exact"
        value = self.regex.pattern if self.regex is not None else self.value
        return {"header": self.name, "type": kind, "value": value, "invert": self.invert}


class Methods:
    """Any of the entries (ORed, as Envoy Gateway says); an inverted entry selects
    every other method."""

    __slots__ = ("entries",)

    def __init__(self, entries: list[tuple[str, bool]]) -> None:
        self.entries = tuple(entries)

    def __call__(self, ctx: RequestContext) -> bool:
        method = ctx.method
        for value, invert in self.entries:
            if (method == value) is not invert:
                return True
        return False

    def describe(self) -> dict:
        return {"methods": [{"value": v, "invert": i} for v, i in self.entries]}


class Path:
    __slots__ = ("invert", "kind", "regex", "value")

    def __init__(self, kind: str, value: str, invert: bool) -> None:
        self.kind = kind
        self.invert = invert
        if kind == "PathPrefix" and len(value) > 1:
            value = value.rstrip("/") or "/"
        self.value = value
        self.regex = re.compile(value) if kind == "RegularExpression" else None

    def __call__(self, ctx: RequestContext) -> bool:
        path = ctx.path
        if self.regex is not None:
            hit = self.regex.fullmatch(path) is not None
        elif self.kind == "Exact":
            hit = path == self.value
        else:  # PathPrefix, element-wise as in HTTPRoute matches
            v = self.value
            hit = v == "/" or path == v or (path.startswith(v) and path[len(v)] == "/")
        return hit is not self.invert

    def describe(self) -> dict:
        return {"path": self.value, "type": self.kind, "invert": self.invert}


class SourceIn:
    """The client address in ``cidr`` (type Exact: one bucket for the whole range)."""

    __slots__ = ("network",)

    def __init__(self, cidr: str) -> None:
        self.network = ipaddress.ip_network(cidr, strict=False)

    def __call__(self, ctx: RequestContext) -> bool:
        return _address_in(ctx.client_ip, self.network)

    def describe(self) -> dict:
        return {"sourceCIDR": str(self.network), "type": "Exact"}


class ConsumerIs:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, ctx: RequestContext) -> bool:
        return ctx.consumer == self.name

    def describe(self) -> dict:
        return {"consumer": self.name, "type": "Exact"}


def _address_in(address: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.version != network.version:
        mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:a.b.c.d from a dual-stack socket
        if mapped is None:
            return False
        ip = mapped
    return ip in network


# --- distinct selectors: a bucket per value --------------------------------------------


class DistinctHeader:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name.lower()

    def __call__(self, ctx: RequestContext) -> str | None:
        return ctx.headers.get_joined(self.name)

    def describe(self) -> dict:
        return {"header": self.name, "type": "Distinct"}


class DistinctSource:
    __slots__ = ("network",)

    def __init__(self, cidr: str) -> None:
        self.network = ipaddress.ip_network(cidr, strict=False)

    def __call__(self, ctx: RequestContext) -> str | None:
        address = ctx.client_ip
        return address if _address_in(address, self.network) else None

    def describe(self) -> dict:
        return {"sourceCIDR": str(self.network), "type": "Distinct"}


class DistinctConsumer:
    __slots__ = ()

    def __call__(self, ctx: RequestContext) -> str | None:
        return ctx.consumer

    def describe(self) -> dict:
        return {"consumer": None, "type": "Distinct"}


# --- the rule ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    """One rule of a policy's ``rateLimit.local`` or ``rateLimit.global``."""

    index: int  # position in the policy's rule list
    requests: int
    unit: str  # Second | Minute | Hour | Day | Month | Year
    window: int  # seconds in ``unit``
    cost: int = 1
    shared: bool = False  # one set of counters for every route the policy applies to
    matchers: tuple = ()  # callables ctx -> bool, all must hold
    distinct: tuple = ()  # callables ctx -> str | None, each names a bucket

    def descriptor(self, ctx: RequestContext) -> str | None:
        for matches in self.matchers:
            if not matches(ctx):
                return None
        distinct = self.distinct
        if not distinct:
            return ""
        if len(distinct) == 1:
            return distinct[0](ctx)
        values = []
        for select in distinct:
            value = select(ctx)
            if value is None:
                return None
            values.append(value)
        return SEPARATOR.join(values)

    @property
    def limit_header(self) -> str:
        """``X-RateLimit-Limit`` as Envoy writes it (draft-03 quota policy)."""
        return f"{self.requests}, {self.requests};w={self.window}"

    def fingerprint(self) -> tuple:
        """What makes two rules count the same way (for keeping counters on reload)."""
        return (
            self.index,
            self.requests,
            self.window,
            self.cost,
            self.shared,
            tuple(repr(m.describe()) for m in self.matchers),
            tuple(repr(d.describe()) for d in self.distinct),
        )

    def describe(self) -> dict:
        return {
            "limit": {"requests": self.requests, "unit": self.unit},
            "cost": self.cost,
            "shared": self.shared,
            "selectors": [m.describe() for m in self.matchers] + [d.describe() for d in self.distinct],
        }


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    """The ``rateLimit`` of one BackendTrafficPolicy."""

    key: str  # "namespace/name" of the policy
    local: tuple[RateLimitRule, ...] = ()
    global_: tuple[RateLimitRule, ...] = ()
