"""HTTPRoutes: rules and matches compiled once, attached to listeners, and ordered into
per-hostname rule tables by Gateway API precedence.

Precedence (HTTPRouteRule docs, Gateway API v1), continuing on ties:

1. path match type: Exact, then RegularExpression, then PathPrefix. The spec leaves
   RegularExpression implementation-specific; Envoy Gateway (since PR #2579, "Exact >
   RegularExpression > PathPrefix"), Contour and NGINX put it between the two so a
   PathPrefix catch-all never shadows a regex;
2. the number of characters in the path value (longest first; for a regex, its
   pattern's length, as Envoy Gateway does; PathPrefix values are counted after the
   trailing "/" is stripped);
3. a method match over none;
4. more header matches; 5. more query param matches;
6. across routes, the oldest ``creationTimestamp``; a route without one sorts after
   every route with one (it is the one being created now) and ties with the others;
7. ``{namespace}/{name}`` alphabetically;
8. within a route, rule order, then match order.

Hostnames (Envoy virtual-host semantics, which Envoy Gateway follows): a route's rules go
only into the tables of its effective hostnames (after listener intersection). A request
is matched against the single most specific table for its Host — exact, else the longest
wildcard, else the any-host table — and never falls through to a less specific table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from meshgate.config.compile.backends import BackendResolver
from meshgate.config.compile.durations import (
    DurationError,
    parse_duration,
    parse_timeout,
)
from meshgate.config.compile.filters import FilterBuilder
from meshgate.config.compile.inputs import ErrorSink, Inputs
from meshgate.config.compile.listeners import (
    ANY_HOST,
    GATEWAY_GROUP,
    ServedListener,
    allows_kind,
    allows_namespace,
    effective_hostnames,
)
from meshgate.config.compile.security import CompiledSecurity, StagedPolicies
from meshgate.config.compile.traffic import CompiledTraffic, TrafficPolicies
from meshgate.config.snapshot import (
    PATH_EXACT,
    PATH_PREFIX,
    PATH_REGEX,
    CompiledMatch,
    CompiledRule,
    HeaderMatcher,
    ListenerRoutes,
    QueryMatcher,
    RetryPolicy,
    RuleTable,
    WeightedBackend,
)

if TYPE_CHECKING:
    from meshgate.config.loader import LoadedResource

# Envoy Gateway's default when retry.attempts is unset (docs: "NumRetries ... Defaults
# to 2"); Envoy's own base backoff interval.
DEFAULT_RETRY_ATTEMPTS = 2
DEFAULT_RETRY_BACKOFF = 0.025

_PATH_RANK = {PATH_EXACT: 0, PATH_REGEX: 1, PATH_PREFIX: 2}
_PATH_KIND = {"Exact": PATH_EXACT, "PathPrefix": PATH_PREFIX, "RegularExpression": PATH_REGEX}


# --- compiling one route ----------------------------------------------------------------


@dataclass(slots=True)
class CompiledRoute:
    """One HTTPRoute after its rules were compiled (before attachment)."""

    res: LoadedResource
    key: str  # "namespace/name"
    hostnames: list[str]
    # (rule, its matches) in spec order
    rules: list[tuple[CompiledRule, tuple[CompiledMatch, ...]]]
    clusters: set[str] = field(default_factory=set)  # every cluster the route sends to
    # Clusters the route's filters send to (mirrors), whichever policy applies.
    filter_clusters: set[str] = field(default_factory=set)
    # (rule index, policy key) -> the rule and its matches with that policy applied;
    # shared by every listener on which the same policy is the effective one.
    variants: dict[tuple[int, str], tuple[CompiledRule, tuple[CompiledMatch, ...]]] = field(
        default_factory=dict
    )
    unresolved: list[tuple[str, str]] = field(default_factory=list)  # (reason, message)
    ts_key: tuple[int, float] = (1, 0.0)

    def resolved_refs_condition(self) -> dict[str, str]:
        if not self.unresolved:
            return _condition("ResolvedRefs", True, "ResolvedRefs", "")
        reason, message = self.unresolved[0]
        return _condition("ResolvedRefs", False, reason, message)


def _condition(kind: str, ok: bool, reason: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}


def compile_route(res: LoadedResource, resolver: BackendResolver, errors: ErrorSink) -> CompiledRoute:
    spec = res.obj.spec
    builder = FilterBuilder(res, resolver, errors)
    route = CompiledRoute(
        res=res,
        key=f"{res.namespace}/{res.name}",
        hostnames=[h.lower() for h in spec.hostnames or ()],
        rules=[],
        ts_key=res.age_key,
    )
    for i, rule in enumerate(spec.rules or ()):
        path = ("spec", "rules", i)
        compiled = _compile_rule(route, rule, i, path, resolver, builder, errors)
        matches = rule.matches or [None]  # no matches: the default PathPrefix "/"
        compiled_matches = tuple(_compile_match(m, compiled) for m in matches)
        route.rules.append((compiled, compiled_matches))
    route.clusters |= builder.clusters
    route.filter_clusters |= builder.clusters
    route.unresolved.extend(builder.unresolved)
    return route


def _compile_rule(
    route: CompiledRoute,
    rule: Any,
    index: int,
    path: tuple[str | int, ...],
    resolver: BackendResolver,
    builder: FilterBuilder,
    errors: ErrorSink,
) -> CompiledRule:
    res = route.res
    filters = builder.build(rule.filters, (*path, "filters"))
    backends: list[WeightedBackend] = []
    refs = rule.backendRefs or []
    for j, ref in enumerate(refs):
        resolution = resolver.resolve(ref, res.namespace)
        if resolution.cluster is None:
            route.unresolved.append((resolution.reason, resolution.message))
        # Built even for weight 0 so an unsupported filter is reported either way.
        ref_filters = builder.build(ref.filters, (*path, "backendRefs", j, "filters"))
        weight = 1 if ref.weight is None else ref.weight
        if weight == 0:
            continue  # never picked; still resolved above for ResolvedRefs
        if resolution.cluster is not None:
            route.clusters.add(resolution.cluster)
        backends.append(
            WeightedBackend(
                weight=weight,
                cluster=resolution.cluster,
                filters=ref_filters,
                error=resolution.message,
            )
        )
    timeout_request, timeout_backend = _timeouts(res, rule.timeouts, (*path, "timeouts"), errors)
    return CompiledRule(
        route=route.key,
        rule_index=index,
        name=getattr(rule, "name", None),
        filters=filters,
        backends=tuple(backends),
        total_weight=sum(b.weight for b in backends),
        no_backends=not refs,
        timeout_request=timeout_request,
        timeout_backend=timeout_backend,
        retry=_retry(res, getattr(rule, "retry", None), (*path, "retry"), errors),
    )


def _timeouts(
    res: LoadedResource, timeouts: Any, path: tuple[str | int, ...], errors: ErrorSink
) -> tuple[float | None, float | None]:
    if timeouts is None:
        return None, None
    values: dict[str, float | None] = {}
    for name in ("request", "backendRequest"):
        try:
            values[name] = parse_timeout(getattr(timeouts, name, None))
        except DurationError as exc:
            errors.add(res, (*path, name), str(exc))
            values[name] = None
    request, backend = values["request"], values["backendRequest"]
    if request is not None and backend is not None and backend > request:
        errors.add(
            res,
            (*path, "backendRequest"),
            f"backendRequest ({timeouts.backendRequest}) must not be longer than "
            f"request ({timeouts.request})",
        )
    return request, backend


def _retry(
    res: LoadedResource, retry: Any, path: tuple[str | int, ...], errors: ErrorSink
) -> RetryPolicy | None:
    if retry is None:
        return None
    # The model bounds codes to 400-599 (HTTPRouteRetryStatusCode), checked at load.
    codes = frozenset(retry.codes or ())
    backoff = DEFAULT_RETRY_BACKOFF
    if retry.backoff is not None:
        try:
            backoff = parse_duration(retry.backoff)
        except DurationError as exc:
            errors.add(res, (*path, "backoff"), str(exc))
    attempts = DEFAULT_RETRY_ATTEMPTS if retry.attempts is None else retry.attempts
    return RetryPolicy(attempts=attempts, codes=codes, backoff=backoff)


def _compile_match(match: Any, rule: CompiledRule) -> CompiledMatch:
    path_kind, path_value, path_regex = PATH_PREFIX, "/", None
    method = None
    headers: list[HeaderMatcher] = []
    query: list[QueryMatcher] = []
    if match is not None:
        if match.path is not None:
            path_kind = _PATH_KIND[match.path.type or "PathPrefix"]
            path_value = match.path.value if match.path.value is not None else "/"
        if path_kind == PATH_PREFIX and len(path_value) > 1 and path_value.endswith("/"):
            path_value = path_value[:-1]  # "/foo/" is the same prefix as "/foo"
        elif path_kind == PATH_REGEX:
            path_regex = re.compile(path_value)
        if match.method:
            method = match.method.upper()
        # The spec: of several entries naming the same header (case-insensitively) or
        # query param (exactly), only the first is considered.
        seen: set[str] = set()
        for h in match.headers or ():
            name = h.name.lower()
            if name in seen:
                continue
            seen.add(name)
            if (h.type or "Exact") == "RegularExpression":
                headers.append(HeaderMatcher(name=name, regex=re.compile(h.value)))
            else:
                headers.append(HeaderMatcher(name=name, value=h.value))
        seen = set()
        for q in match.queryParams or ():
            if q.name in seen:
                continue
            seen.add(q.name)
            if (q.type or "Exact") == "RegularExpression":
                query.append(QueryMatcher(name=q.name, regex=re.compile(q.value)))
            else:
                query.append(QueryMatcher(name=q.name, value=q.value))
    return CompiledMatch(
        path_kind=path_kind,
        path=path_value,
        path_regex=path_regex,
        method=method,
        headers=tuple(headers),
        query=tuple(query),
        rule=rule,
    )


def describe_match(m: CompiledMatch) -> dict[str, Any]:
    kind = {PATH_EXACT: "Exact", PATH_PREFIX: "PathPrefix", PATH_REGEX: "RegularExpression"}
    return {
        "path": {"type": kind[m.path_kind], "value": m.path},
        "method": m.method,
        "headers": [
            {"name": h.name, "type": "RegularExpression" if h.regex else "Exact",
             "value": h.regex.pattern if h.regex else h.value}
            for h in m.headers
        ],
        "queryParams": [
            {"name": q.name, "type": "RegularExpression" if q.regex else "Exact",
             "value": q.regex.pattern if q.regex else q.value}
            for q in m.query
        ],
        **m.rule.describe(),
    }


# --- attachment -------------------------------------------------------------------------


@dataclass(slots=True)
class Attachment:
    route: CompiledRoute
    listener: ServedListener
    hostnames: list[str]
    # The route's rules as served on this listener (with its BackendTrafficPolicy).
    rules: list[tuple[CompiledRule, tuple[CompiledMatch, ...]]] = field(default_factory=list)

    def clusters(self) -> set[str]:
        """Every cluster this attachment sends to."""
        used = set(self.route.filter_clusters)
        for rule, _ in self.rules:
            used.update(b.cluster for b in rule.backends if b.cluster is not None)
        return used


def apply_policies(
    att: Attachment,
    traffic: TrafficPolicies,
    security: StagedPolicies,
    shaping: StagedPolicies,
    resolver: BackendResolver,
) -> None:
    """Fill ``att.rules``: each rule of the route with the BackendTrafficPolicy, the
    security policies and the shaping policies that are effective for it on the
    attachment's listener."""
    route = att.route
    att.rules = []
    ns, _, name = route.key.partition("/")
    gateway, listener = att.listener.gateway, att.listener.name
    for index, (rule, matches) in enumerate(route.rules):
        policy = traffic.for_rule(ns, name, rule.name, gateway, listener)
        guard = security.for_rule(ns, name, rule.name, gateway, listener)
        shape = shaping.for_rule(ns, name, rule.name, gateway, listener)
        if policy is None and guard is None and shape is None:
            att.rules.append((rule, matches))
            continue
        key = (index, *(p.key if p else None for p in (policy, guard, shape)))
        variant = route.variants.get(key)
        if variant is None:
            # Filter order, Envoy Gateway's: faults, then the SecurityPolicy's filters
            # (authentication sets ctx.consumer), then rate limits (which may count per
            # consumer), then validation, cache and transformation (meshgate.dev), then
            # the rule's own filters. Each step puts its filters in front of what it
            # is given, so they are applied innermost first.
            variant = rule, matches
            if shape is not None:
                variant = _with_stages(*variant, shape, "shaping")
            if policy is not None and policy.rate_limit is not None:
                variant = _with_rate_limit(*variant, policy)
            if guard is not None:
                variant = _with_stages(*variant, guard, "security")
            if policy is not None:
                variant = _with_policy(route, index, *variant, policy, resolver)
            route.variants[key] = variant
        att.rules.append(variant)


def _with_stages(
    rule: CompiledRule, matches: tuple[CompiledMatch, ...], staged: CompiledSecurity, field: str
) -> tuple[CompiledRule, tuple[CompiledMatch, ...]]:
    """``rule`` behind the policies' filters (before the rule's own); ``field`` of the
    rule records which policies they are."""
    new_rule = replace(rule, filters=staged.filters + rule.filters, **{field: staged.key})
    return new_rule, tuple(replace(m, rule=new_rule) for m in matches)


def _with_rate_limit(
    rule: CompiledRule, matches: tuple[CompiledMatch, ...], policy: CompiledTraffic
) -> tuple[CompiledRule, tuple[CompiledMatch, ...]]:
    """``rule`` behind the policy's rate-limit filters (before the rule's own)."""
    from meshgate.filters.ratelimit import rate_limit_filters

    limits = rate_limit_filters(policy.rate_limit, rule.route, rule.rule_index)  # type: ignore[arg-type]
    new_rule = replace(rule, filters=limits + rule.filters)
    return new_rule, tuple(replace(m, rule=new_rule) for m in matches)


def _with_policy(
    route: CompiledRoute,
    index: int,
    rule: CompiledRule,
    matches: tuple[CompiledMatch, ...],
    policy: CompiledTraffic,
    resolver: BackendResolver,
) -> tuple[CompiledRule, tuple[CompiledMatch, ...]]:
    """``rule`` with ``policy``: its own clusters, retry, request timeout and faults.
    What the HTTPRoute rule sets itself (retry, timeouts.request) wins."""
    spec = route.res.obj.spec.rules[index]
    backends = tuple(
        replace(b, cluster=resolver.with_policy(b.cluster, policy.key, policy.cluster))
        if b.cluster is not None
        else b
        for b in rule.backends
    )
    retry = rule.retry
    if getattr(spec, "retry", None) is None and policy.retry is not None:
        retry = policy.retry
        if retry.per_try_timeout is None and rule.timeout_backend is not None:
            retry = replace(retry, per_try_timeout=rule.timeout_backend)
    timeout_request = rule.timeout_request
    route_sets_request = spec.timeouts is not None and spec.timeouts.request is not None
    if not route_sets_request and policy.sets_request_timeout:
        timeout_request = policy.request_timeout
    filters = rule.filters
    if policy.fault is not None:
        from meshgate.filters.resilience.fault import fault_filters

        filters = fault_filters(policy.fault) + filters
    new_rule = replace(
        rule,
        backends=backends,
        retry=retry,
        timeout_request=timeout_request,
        filters=filters,
        policy=policy.key,
    )
    return new_rule, tuple(replace(m, rule=new_rule) for m in matches)


def attach_route(
    route: CompiledRoute,
    listeners_by_gateway: dict[str, list[ServedListener]],
    defined_gateways: set[str],
    inputs: Inputs,
) -> tuple[list[dict[str, Any]], list[Attachment]]:
    """Parent statuses (one per parentRef, like ``status.parents``) and attachments."""
    res = route.res
    statuses: list[dict[str, Any]] = []
    attachments: dict[str, Attachment] = {}
    for ref in res.obj.spec.parentRefs or ():
        group = GATEWAY_GROUP if ref.group is None else ref.group
        kind = ref.kind or "Gateway"
        namespace = ref.namespace or res.namespace
        gw = f"{namespace}/{ref.name}"
        status: dict[str, Any] = {
            "parentRef": {
                "group": group,
                "kind": kind,
                "namespace": namespace,
                "name": ref.name,
                "sectionName": ref.sectionName,
                "port": ref.port,
            },
            "listeners": [],
        }
        statuses.append(status)

        def reject(reason: str, message: str, status: dict[str, Any] = status) -> None:
            status["conditions"] = [_condition("Accepted", False, reason, message)]

        if group != GATEWAY_GROUP or kind != "Gateway":
            reject("NoMatchingParent", f"parent kind {kind} (group {group!r}) is not a Gateway")
            continue
        if gw not in defined_gateways:
            reject("NoMatchingParent", f"Gateway {gw} not found")
            continue
        if gw not in listeners_by_gateway:
            reject("NoMatchingParent", f"Gateway {gw} is not served by this process")
            continue
        candidates = [
            lst
            for lst in listeners_by_gateway[gw]
            if (ref.sectionName is None or lst.name == ref.sectionName)
            and (ref.port is None or lst.port == ref.port)
        ]
        if not candidates:
            wanted = []
            if ref.sectionName is not None:
                wanted.append(f"named {ref.sectionName}")
            if ref.port is not None:
                wanted.append(f"on port {ref.port}")
            reject("NoMatchingParent", f"Gateway {gw} has no listener {' '.join(wanted)}")
            continue
        allowed = [
            lst
            for lst in candidates
            if allows_kind(lst) and allows_namespace(lst, res.namespace, inputs)
        ]
        if not allowed:
            reject(
                "NotAllowedByListeners",
                f"no listener of Gateway {gw} allows HTTPRoutes from namespace {res.namespace}",
            )
            continue
        hits = [(lst, effective_hostnames(lst.hostname, route.hostnames)) for lst in allowed]
        hits = [(lst, hosts) for lst, hosts in hits if hosts]
        if not hits:
            reject(
                "NoMatchingListenerHostname",
                f"no hostname of the route intersects a listener hostname of Gateway {gw}",
            )
            continue
        status["conditions"] = [
            _condition("Accepted", True, "Accepted", ""),
            route.resolved_refs_condition(),
        ]
        for lst, hosts in hits:
            status["listeners"].append(lst.name)
            existing = attachments.get(lst.key)
            if existing is None:
                attachments[lst.key] = Attachment(route, lst, list(hosts))
            else:
                existing.hostnames.extend(h for h in hosts if h not in existing.hostnames)
    return statuses, list(attachments.values())


# --- rule tables ------------------------------------------------------------------------


def _precedence(route: CompiledRoute, rule_index: int, match_index: int, m: CompiledMatch):
    return (
        _PATH_RANK[m.path_kind],
        -len(m.path),
        0 if m.method is not None else 1,
        -len(m.headers),
        -len(m.query),
        route.ts_key,
        route.key,
        rule_index,
        match_index,
    )


def build_listener_routes(
    listener: ServedListener, attachments: list[Attachment]
) -> ListenerRoutes:
    """The rule tables of one listener, one per effective hostname."""
    by_host: dict[str, list[tuple[Any, CompiledMatch]]] = {}
    for att in attachments:
        for rule_index, (_, matches) in enumerate(att.rules or att.route.rules):
            for match_index, m in enumerate(matches):
                key = _precedence(att.route, rule_index, match_index, m)
                for host in att.hostnames:
                    by_host.setdefault(host, []).append((key, m))
    tables: dict[str, RuleTable] = {}
    for host, entries in by_host.items():
        entries.sort(key=lambda e: e[0])
        matches = tuple(m for _, m in entries)
        tables[host] = RuleTable(matches=matches, needs_query=any(m.query for m in matches))
    exact = {h: t for h, t in tables.items() if h != ANY_HOST and not h.startswith("*.")}
    wildcards = sorted(
        ((h[1:], t) for h, t in tables.items() if h.startswith("*.")),
        key=lambda item: (-len(item[0]), item[0]),
    )
    return ListenerRoutes(
        gateway=listener.gateway,
        listener=listener.name,
        port=listener.port,
        hostname=listener.hostname,
        exact_hosts=dict(sorted(exact.items())),
        wildcard_hosts=tuple(wildcards),
        any_host=tables.get(ANY_HOST),
    )


def describe_listener_routes(lr: ListenerRoutes) -> dict[str, Any]:
    hosts: dict[str, Any] = {}
    for host, table in lr.exact_hosts.items():
        hosts[host] = [describe_match(m) for m in table.matches]
    for suffix, table in lr.wildcard_hosts:
        hosts["*" + suffix] = [describe_match(m) for m in table.matches]
    if lr.any_host is not None:
        hosts["*"] = [describe_match(m) for m in lr.any_host.matches]
    return {
        "gateway": lr.gateway,
        "listener": lr.listener,
        "hostname": lr.hostname,
        "hosts": hosts,
    }
