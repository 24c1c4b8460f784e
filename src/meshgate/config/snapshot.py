"""The compiled, immutable configuration the data plane reads.

``compile_snapshot()`` (config/compile) turns validated resources into one ``Snapshot``.
Nothing here touches pydantic models: matchers are precompiled, rules are pre-sorted
by Gateway API precedence, and backends are resolved to cluster names. A reload builds
a new Snapshot and the engine swaps one reference; requests in flight keep the one they
started with.

Lookup path for a request: ``Snapshot.ports[port]`` (a ``PortRouter``) ->
``PortRouter.select(host)`` (the most specific matching listener, a ``ListenerRoutes``)
-> ``ListenerRoutes.hosts_for(host)`` (the most specific matching route hostname, a
``RuleTable``) -> ``RuleTable.find(...)`` (the first ``CompiledMatch`` in precedence
order that matches).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshgate.config.traffic import DEFAULT_CLUSTER_POLICY, ClusterPolicy

if TYPE_CHECKING:
    from meshgate.filters.base import Filter
    from meshgate.http.headers import Headers

def phase_hooks(filters: tuple, phase: str) -> tuple:
    """The ``phase`` hooks of ``filters`` (e.g. "on_request"), for the filters that
    override it, in filter order: (bound method, is_async) pairs."""
    import inspect

    from meshgate.filters.base import overrides

    return tuple(
        (getattr(f, phase), inspect.iscoroutinefunction(getattr(f, phase)))
        for f in filters
        if overrides(f, phase)
    )


def hooks_of(filters: tuple) -> tuple[tuple, tuple]:
    """(request hooks, response hooks) of ``filters``."""
    return phase_hooks(filters, "on_request"), phase_hooks(filters, "on_response")


def body_hooks_of(filters: tuple) -> tuple[tuple, tuple, int]:
    """(request body hooks, response body hooks, the smallest ``body_limit`` of their
    filters) of ``filters``."""
    req = phase_hooks(filters, "on_request_body")
    resp = phase_hooks(filters, "on_response_body")
    limits = [h.__self__.body_limit for h, _ in req + resp]
    return req, resp, min(limits) if limits else 0


PATH_EXACT = 0
PATH_PREFIX = 1
PATH_REGEX = 2


@dataclass(frozen=True, slots=True)
class HeaderMatcher:
    name: str  # lowercase
    value: str | None = None  # Exact
    regex: re.Pattern[str] | None = None  # RegularExpression (full match)

    def matches(self, headers: Headers) -> bool:
        # Gateway API: a header that appears more than once is matched on its values
        # joined with "," (RFC 7230 3.2.2 combination), as Envoy does.
        got = headers.get_all(self.name)
        if not got:
            return False
        value = got[0] if len(got) == 1 else ",".join(got)
        if self.regex is not None:
            return self.regex.fullmatch(value) is not None
        return value == self.value


@dataclass(frozen=True, slots=True)
class QueryMatcher:
    name: str  # exact, case-sensitive
    value: str | None = None
    regex: re.Pattern[str] | None = None

    def matches(self, query: dict[str, list[str]]) -> bool:
        # Only the first value of a repeated parameter is considered (the spec lets
        # implementations choose; Envoy uses the first).
        values = query.get(self.name)
        if not values:
            return False
        if self.regex is not None:
            return self.regex.fullmatch(values[0]) is not None
        return values[0] == self.value


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """HTTPRoute ``retry`` or BackendTrafficPolicy ``retry``, compiled."""

    attempts: int  # total retries after the first try
    codes: frozenset[int]  # response statuses that are retried
    backoff: float  # seconds: base interval between tries (doubling, jittered)
    max_backoff: float = 0.0  # seconds: cap of the interval; 0 = 10 x backoff
    on_connect_failure: bool = True  # retry when connecting fails (UF)
    on_reset: bool = True  # retry on reset, no response, per-try timeout (UC, UT)
    per_try_timeout: float | None = None  # seconds; None: timeouts.backendRequest


@dataclass(frozen=True, slots=True)
class WeightedBackend:
    """One backendRef of a rule after resolution."""

    weight: int
    # Cluster name in Snapshot.clusters, or None when the ref is invalid (missing,
    # unknown kind, cross-namespace without a ReferenceGrant): its share gets 500.
    cluster: str | None
    filters: tuple[Filter, ...] = ()
    # Why the ref did not resolve, for logs and /config_dump.
    error: str = ""
    request_hooks: tuple = field(init=False, repr=False, compare=False)
    response_hooks: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        req, resp = hooks_of(self.filters)
        object.__setattr__(self, "request_hooks", req)
        object.__setattr__(self, "response_hooks", resp)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    route: str  # "namespace/name" of the HTTPRoute
    rule_index: int  # index of the rule in spec.rules
    name: str | None  # rules[].name (named rules), if any
    filters: tuple[Filter, ...]  # rule filters, in spec order
    backends: tuple[WeightedBackend, ...]  # weight 0 entries removed
    total_weight: int  # sum of weights; 0 with backendRefs given -> 500
    # True when the rule has no backendRefs at all (a redirect-only rule, say). With
    # no backendRefs and no filter answering locally, the spec says 500.
    no_backends: bool = False
    timeout_request: float | None = None  # seconds; timeouts.request
    timeout_backend: float | None = None  # seconds; timeouts.backendRequest
    retry: RetryPolicy | None = None
    security: str | None = None  # "ns/name" of the SecurityPolicy in front of the rule
    shaping: str | None = None  # "ns/name" of the Validation/Cache/TransformPolicy, "+"-joined
    # "namespace/name" of the BackendTrafficPolicy applied to the rule, if any.
    policy: str | None = None
    # Derived once here so the engine never inspects filters per request.
    request_hooks: tuple = field(init=False, repr=False, compare=False)
    response_hooks: tuple = field(init=False, repr=False, compare=False)
    request_body_hooks: tuple = field(init=False, repr=False, compare=False)
    response_body_hooks: tuple = field(init=False, repr=False, compare=False)
    body_limit: int = field(init=False, repr=False, compare=False)

    # True when the rule needs the request coroutine (timeouts, retries, async
    # filters, body hooks); otherwise the engine runs the exchange in socket callbacks.
    needs_task: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        req, resp = hooks_of(self.filters)
        object.__setattr__(self, "request_hooks", req)
        object.__setattr__(self, "response_hooks", resp)
        req_body, resp_body, limit = body_hooks_of(self.filters)
        object.__setattr__(self, "request_body_hooks", req_body)
        object.__setattr__(self, "response_body_hooks", resp_body)
        object.__setattr__(self, "body_limit", limit)
        hooks = req + resp + tuple(h for b in self.backends for h in b.request_hooks + b.response_hooks)
        object.__setattr__(
            self,
            "needs_task",
            self.timeout_request is not None
            or self.timeout_backend is not None
            or self.retry is not None
            or bool(req_body or resp_body)
            or any(is_async for _, is_async in hooks),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "rule": self.rule_index,
            "name": self.name,
            "filters": [f.describe() for f in self.filters],
            "backends": [
                {
                    "weight": b.weight,
                    "cluster": b.cluster,
                    "error": b.error or None,
                    "filters": [f.describe() for f in b.filters],
                }
                for b in self.backends
            ],
            "timeouts": {"request": self.timeout_request, "backendRequest": self.timeout_backend},
            "retry": None
            if self.retry is None
            else {
                "attempts": self.retry.attempts,
                "codes": sorted(self.retry.codes),
                "backoff": self.retry.backoff,
            },
            "policy": self.policy,
            "security": self.security,
            "shaping": self.shaping,
        }


@dataclass(frozen=True, slots=True)
class CompiledMatch:
    """One entry of rules[].matches[] (OR across entries, AND within one)."""

    path_kind: int  # PATH_EXACT | PATH_PREFIX | PATH_REGEX
    path: str  # the value; for PATH_PREFIX without trailing "/" (except "/")
    path_regex: re.Pattern[str] | None
    method: str | None
    headers: tuple[HeaderMatcher, ...]
    query: tuple[QueryMatcher, ...]
    rule: CompiledRule

    def matches(
        self, method: str, path: str, headers: Headers, query: dict[str, list[str]] | None
    ) -> bool:
        kind = self.path_kind
        if kind == PATH_PREFIX:
            p = self.path
            if p != "/":
                # Segment-wise: "/foo" matches "/foo" and "/foo/bar", not "/foobar".
                if not path.startswith(p):
                    return False
                if len(path) > len(p) and path[len(p)] != "/":
                    return False
        elif kind == PATH_EXACT:
            if path != self.path:
                return False
        elif self.path_regex.fullmatch(path) is None:  # type: ignore[union-attr]
            return False
        if self.method is not None and method != self.method:
            return False
        for h in self.headers:
            if not h.matches(headers):
                return False
        if self.query:
            if query is None:
                return False
            for q in self.query:
                if not q.matches(query):
                    return False
        return True


@dataclass(frozen=True, slots=True)
class RuleTable:
    """Every match that applies under one route hostname, in precedence order."""

    matches: tuple[CompiledMatch, ...]
    needs_query: bool  # some match inspects query params: parse the query once

    def find(
        self, method: str, path: str, headers: Headers, query: dict[str, list[str]] | None
    ) -> CompiledMatch | None:
        for m in self.matches:
            if m.matches(method, path, headers, query):
                return m
        return None


def _most_specific(
    host: str,
    exact: dict[str, Any],
    wildcards: tuple[tuple[str, Any], ...],
    default: Any,
) -> Any:
    hit = exact.get(host)
    if hit is not None:
        return hit
    for suffix, value in wildcards:  # longest suffix first
        # "*.example.com" matches "a.example.com" and "a.b.example.com", never
        # "example.com" itself (Gateway API hostname semantics).
        if host.endswith(suffix) and len(host) > len(suffix):
            return value
    return default


@dataclass(frozen=True, slots=True)
class ListenerRoutes:
    """The routes of one listener, by route hostname (after listener intersection)."""

    gateway: str  # "namespace/name"
    listener: str  # listener name
    port: int
    hostname: str | None  # the listener's hostname, None for any
    exact_hosts: dict[str, RuleTable]
    # ("." + suffix for "*.suffix", table), longest suffix first
    wildcard_hosts: tuple[tuple[str, RuleTable], ...]
    any_host: RuleTable | None  # routes without hostnames (and listener without one)

    def hosts_for(self, host: str) -> RuleTable | None:
        return _most_specific(host, self.exact_hosts, self.wildcard_hosts, self.any_host)


@dataclass(frozen=True, slots=True)
class PortRouter:
    """Every listener bound on one port; the Host header picks the listener."""

    port: int
    exact_listeners: dict[str, ListenerRoutes]
    wildcard_listeners: tuple[tuple[str, ListenerRoutes], ...]  # longest first
    default_listener: ListenerRoutes | None  # the listener with no hostname
    # HTTPS: the SNI table the socket's TLS context consults (tls.sni.PortTLS); None: HTTP.
    tls: Any = None
    # Limits of the port's connections (its listeners' ClientTrafficPolicy applied);
    # None: Snapshot.limits. On HTTPS, the SNI-selected listener's own limits win.
    limits: Limits | None = None

    def select(self, host: str) -> ListenerRoutes | None:
        return _most_specific(
            host, self.exact_listeners, self.wildcard_listeners, self.default_listener
        )


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str  # IP address or DNS name
    port: int


@dataclass(frozen=True, slots=True)
class Cluster:
    """A set of endpoints one backendRef resolves to."""

    name: str  # e.g. "service/default/infra-backend-v1:8080"
    endpoints: tuple[Endpoint, ...]
    # What the cluster came from, for /clusters and /config_dump.
    source: str = ""
    # Load balancing, circuit breaking, health checking: BackendTrafficPolicy.
    policy: ClusterPolicy = DEFAULT_CLUSTER_POLICY
    # Endpoints are DNS names (Backend fqdn) that the registry re-resolves.
    dns: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    """Downstream protocol limits and timeouts (seconds). Defaults chosen like Envoy's."""

    max_request_line: int = 8 * 1024  # 414 over this
    max_header_bytes: int = 60 * 1024  # 431 over this
    max_header_count: int = 100  # 431 over this
    max_body_bytes: int = 0  # 413 over this; 0 = unlimited
    header_timeout: float = 10.0  # slowloris: whole head must arrive in this -> 408
    idle_timeout: float = 60.0  # keep-alive connection with no request
    upstream_connect_timeout: float = 5.0
    upstream_idle_timeout: float = 60.0  # pooled connection unused for this is closed
    drain_timeout: float = 20.0  # graceful shutdown deadline
    # Request header names with "_": "RejectRequest" (400), "DropHeader" or "Allow"
    # (ClientTrafficPolicy headers.withUnderscoresAction; Envoy Gateway's default).
    underscore_headers: str = "RejectRequest"
    # Per listener (ClientTrafficPolicy):
    request_timeout: float = 0.0  # whole request must arrive in this -> 408; 0 = no limit
    buffer_limit: int = 256 * 1024  # request body buffered before reading pauses
    xff_trusted_hops: int = 0  # client address: this many from the right of X-Forwarded-For


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: str  # content hash of the inputs, shown in /config_dump
    ports: dict[int, PortRouter]
    clusters: dict[str, Cluster]
    limits: Limits = field(default_factory=Limits)
    # JSON-able view of the inputs and the compiled tables, for /config_dump.
    dump: dict[str, Any] = field(default_factory=dict)
    # Background services the snapshot's filters need (JWKS refreshers, ...), each
    # with ``async start()`` and ``stop()``; see filters/base.py.
    services: tuple = ()
    # (port, host) -> (listener, table): the two most-specific-host lookups memoized,
    # bounded so that clients inventing Host values cannot grow it.
    route_cache: dict = field(default_factory=dict, compare=False, repr=False)

    def tables_for(self, port: int, host: str) -> tuple[ListenerRoutes | None, RuleTable | None]:
        key = (port, host)
        hit = self.route_cache.get(key)
        if hit is not None:
            return hit
        router = self.ports.get(port)
        listener = router.select(host) if router is not None else None
        table = listener.hosts_for(host) if listener is not None else None
        if len(self.route_cache) < 4096:
            self.route_cache[key] = (listener, table)
        return listener, table
