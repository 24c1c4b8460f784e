"""BackendTrafficPolicy: each policy compiled once into a ``CompiledTraffic``, attached to
its targets, and looked up per route rule.

Attachment follows Envoy Gateway: a policy applies to targets in its own namespace only.
For a rule, the most specific policy wins, whole (no merging): HTTPRoute with
sectionName == the rule's name, then the HTTPRoute, then the Gateway with sectionName ==
the listener's name, then the Gateway. When several policies target the same thing, the
oldest (``metadata.creationTimestamp``; none = newest) wins, then ``namespace/name``
alphabetically; the others are Conflicted for that target.

The mapping to the data plane's dataclasses (``config/traffic.py``, ``RetryPolicy``)
uses Envoy's semantics: a retry trigger name means what ``x-envoy-retry-on`` says it
means in Envoy's router (``RetryStateImpl::wouldRetryFromReset`` and friends).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, Any

from meshgate.config.compile.durations import parse_duration, parse_timeout
from meshgate.config.compile.inputs import Inputs
from meshgate.config.models.traffic_policy import parse_go_duration
from meshgate.config.snapshot import RetryPolicy
from meshgate.config.traffic import (
    LEAST_REQUEST,
    ActiveHealthCheck,
    CircuitBreaking,
    ClusterPolicy,
    Fault,
    LoadBalancing,
    OutlierDetection,
    RetryBudget,
)

if TYPE_CHECKING:
    from meshgate.config.loader import LoadedResource

KIND = "BackendTrafficPolicy"

# Envoy Gateway's translator (internal/xds/translator/route.go) when retryOn is unset.
DEFAULT_TRIGGERS = ("connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes")
DEFAULT_RETRIABLE_CODES = (503,)
DEFAULT_NUM_RETRIES = 2
DEFAULT_BACKOFF = 0.025  # Envoy's base interval; the cap defaults to 10x

# Policy condition reasons (Gateway API PolicyConditionReason).
ACCEPTED = "Accepted"
CONFLICTED = "Conflicted"
TARGET_NOT_FOUND = "TargetNotFound"

# Target precedence, most specific first.
ROUTE_RULE, ROUTE, LISTENER, GATEWAY = range(4)


@dataclass(frozen=True, slots=True)
class CompiledTraffic:
    """One BackendTrafficPolicy, ready for the data plane."""

    key: str  # "namespace/name" of the policy
    cluster: ClusterPolicy
    retry: RetryPolicy | None = None
    fault: Fault | None = None
    request_timeout: float | None = None  # seconds; None: unset or "0s" (disabled)
    sets_request_timeout: bool = False  # timeout.http.requestTimeout was given


# --- one policy -> CompiledTraffic -----------------------------------------------------


def compile_traffic(key: str, spec: Any) -> CompiledTraffic:
    """The data plane's view of one (validated) BackendTrafficPolicy spec."""
    http_timeout = spec.timeout.http if spec.timeout is not None else None
    request_timeout = http_timeout.requestTimeout if http_timeout is not None else None
    return CompiledTraffic(
        key=key,
        cluster=cluster_policy(spec),
        retry=retry_policy(spec.retry) if spec.retry is not None else None,
        fault=fault(spec.faultInjection) if spec.faultInjection is not None else None,
        request_timeout=parse_timeout(request_timeout),
        sets_request_timeout=request_timeout is not None,
    )


def cluster_policy(spec: Any) -> ClusterPolicy:
    health = spec.healthCheck
    tcp = spec.timeout.tcp if spec.timeout is not None else None
    http = spec.timeout.http if spec.timeout is not None else None
    budget = spec.retry.budget if spec.retry is not None else None
    return ClusterPolicy(
        lb=load_balancing(spec.loadBalancer, health.panicThreshold if health is not None else None),
        breaker=circuit_breaking(spec.circuitBreaker),
        health=active_health_check(health.active) if health is not None and health.active else None,
        outlier=outlier_detection(health.passive) if health is not None and health.passive else None,
        budget=RetryBudget(ratio=budget.ratio, min_per_second=float(budget.minRetriesPerSecond))
        if budget is not None
        else RetryBudget(),
        connect_timeout=parse_timeout(tcp.connectTimeout) if tcp is not None else None,
        idle_timeout=parse_timeout(http.connectionIdleTimeout) if http is not None else None,
        max_connection_duration=parse_timeout(http.maxConnectionDuration) if http is not None else None,
    )


def load_balancing(lb: Any, panic_threshold: int | None) -> LoadBalancing:
    panic = 50.0 if panic_threshold is None else float(panic_threshold)
    if lb is None:
        return LoadBalancing(kind=LEAST_REQUEST, panic_threshold=panic)
    slow_start = parse_duration(lb.slowStart.window) if lb.slowStart is not None else 0.0
    ch = lb.consistentHash
    if ch is None:
        return LoadBalancing(kind=lb.type, slow_start_window=slow_start, panic_threshold=panic)
    cookie = ch.cookie
    return LoadBalancing(
        kind=lb.type,
        hash_on=ch.type,
        hash_header=ch.header.name.lower() if ch.header is not None else None,
        cookie_name=cookie.name if cookie is not None else None,
        cookie_ttl=parse_duration(cookie.ttl) if cookie is not None and cookie.ttl else None,
        cookie_attributes=tuple(sorted(cookie.attributes.items())) if cookie is not None else (),
        table_size=ch.tableSize,
        slow_start_window=slow_start,
        panic_threshold=panic,
    )


def circuit_breaking(cb: Any) -> CircuitBreaking:
    if cb is None:
        return CircuitBreaking()  # Envoy's thresholds, as Envoy Gateway leaves them
    # Set: the model's defaults (1024 each, and Envoy's 3 parallel retries) fill the gaps.
    return CircuitBreaking(
        max_connections=cb.maxConnections,
        max_pending_requests=cb.maxPendingRequests,
        max_parallel_requests=cb.maxParallelRequests,
        max_parallel_retries=cb.maxParallelRetries,
    )


def active_health_check(active: Any) -> ActiveHealthCheck:
    common = {
        "kind": active.type,
        "interval": parse_go_duration(active.interval),
        "timeout": parse_go_duration(active.timeout),
        "healthy_threshold": active.healthyThreshold,
        "unhealthy_threshold": active.unhealthyThreshold,
    }
    if active.type == "HTTP":
        http = active.http
        return ActiveHealthCheck(
            **common,
            path=http.path,
            method=http.method or "GET",
            host=http.hostname,
            expected_statuses=frozenset(http.expectedStatuses or (200,)),
            expected_body=http.expectedResponse.payload() if http.expectedResponse else None,
        )
    tcp = active.tcp
    return ActiveHealthCheck(
        **common,
        send=tcp.send.payload() if tcp.send is not None else None,
        receive=tcp.receive.payload() if tcp.receive is not None else None,
    )


def outlier_detection(passive: Any) -> OutlierDetection:
    return OutlierDetection(
        consecutive_5xx=passive.consecutive5XxErrors,
        consecutive_gateway_errors=passive.consecutiveGatewayErrors,
        consecutive_local_origin_failures=passive.consecutiveLocalOriginFailures,
        split_external_local_origin_errors=passive.splitExternalLocalOriginErrors,
        interval=parse_go_duration(passive.interval),
        base_ejection_time=parse_go_duration(passive.baseEjectionTime),
        max_ejection_percent=float(passive.maxEjectionPercent),
    )


def retry_policy(retry: Any) -> RetryPolicy:
    """Envoy Gateway's retry, in Envoy's trigger semantics. Unset retryOn: EG's default
    triggers with status 503. A retryOn replaces the triggers only when it lists some,
    and always replaces the status codes (EG's translator does the same)."""
    triggers: tuple[str, ...] = DEFAULT_TRIGGERS
    listed: tuple[int, ...] = DEFAULT_RETRIABLE_CODES
    if retry.retryOn is not None:
        if retry.retryOn.triggers:
            triggers = tuple(retry.retryOn.triggers)
        listed = tuple(retry.retryOn.httpStatusCodes)
    codes: set[int] = set()
    on_connect_failure = on_reset = False
    for trigger in triggers:
        if trigger == "5xx":
            codes.update(range(500, 600))
            on_connect_failure = on_reset = True
        elif trigger == "gateway-error":
            codes.update((502, 503, 504))
            on_connect_failure = on_reset = True
        elif trigger == "reset":
            # Envoy retries every reset under "reset", connection failures included.
            on_connect_failure = on_reset = True
        elif trigger == "connect-failure":
            on_connect_failure = True
        elif trigger == "retriable-4xx":
            codes.add(409)
        elif trigger == "retriable-status-codes":
            codes.update(listed)
        # refused-stream (an HTTP/2 reset code) and the gRPC status triggers never
        # happen on the HTTP/1.1 connections meshgate opens: accepted, no effect.
    per_try = None  # the rule's timeouts.backendRequest, filled in per rule
    backoff, max_backoff = DEFAULT_BACKOFF, 0.0
    per_retry = retry.perRetry
    if per_retry is not None:
        if per_retry.timeout is not None:
            per_try = parse_duration(per_retry.timeout)
        if per_retry.backOff is not None:
            if per_retry.backOff.baseInterval is not None:
                backoff = parse_duration(per_retry.backOff.baseInterval)
            if per_retry.backOff.maxInterval is not None:
                max_backoff = parse_duration(per_retry.backOff.maxInterval)
    return RetryPolicy(
        attempts=retry.numRetries,
        codes=frozenset(codes),
        backoff=backoff,
        max_backoff=max_backoff,
        on_connect_failure=on_connect_failure,
        on_reset=on_reset,
        per_try_timeout=per_try,
    )


def fault(spec: Any) -> Fault:
    delay, abort = spec.delay, spec.abort
    return Fault(
        delay=parse_duration(delay.fixedDelay) if delay is not None else None,
        delay_percent=float(delay.percentage) if delay is not None else 100.0,
        abort_status=abort.httpStatus if abort is not None else None,
        abort_percent=float(abort.percentage) if abort is not None else 100.0,
    )


# --- attachment ------------------------------------------------------------------------


def _age(res: LoadedResource) -> tuple[int, float]:
    ts = getattr(res.obj.metadata, "creationTimestamp", None)
    if ts is None:
        return (1, 0.0)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (0, ts.timestamp())


def _condition(reason: str, message: str = "") -> dict[str, str]:
    return {
        "type": "Accepted",
        "status": "True" if reason == ACCEPTED else "False",
        "reason": reason,
        "message": message,
    }


@dataclass(slots=True)
class _Holder:
    policy: CompiledTraffic
    overrides: set[str] = field(default_factory=set)  # routes where a more specific one won


class TrafficPolicies:
    """Every BackendTrafficPolicy of a compile, attached to its targets.

    ``for_rule`` answers which policy applies to a rule served on a listener; ``dump``
    is the status of each policy (per target, like ``status.ancestors``) for
    /config_dump.
    """

    def __init__(self, inputs: Inputs) -> None:
        self._slots: dict[tuple[int, str, str, str | None], _Holder] = {}
        self._status: dict[str, dict[str, Any]] = {}
        policies = sorted(inputs.of_kind(KIND), key=lambda r: (_age(r), r.namespace, r.name))
        for res in policies:
            self._attach(res, inputs)

    def _attach(self, res: LoadedResource, inputs: Inputs) -> None:
        key = f"{res.namespace}/{res.name}"
        compiled = compile_traffic(key, res.obj.spec)
        holder = _Holder(compiled)
        targets: list[dict[str, Any]] = []
        self._status[key] = {
            "source": {"file": str(res.file), "document": res.document},
            "targets": targets,
        }
        for ref in res.obj.spec.targets():
            entry: dict[str, Any] = {
                "targetRef": {
                    "group": ref.group,
                    "kind": ref.kind,
                    "namespace": res.namespace,
                    "name": ref.name,
                    "sectionName": ref.sectionName,
                }
            }
            targets.append(entry)
            missing = _missing_target(inputs, res.namespace, ref)
            if missing:
                entry["conditions"] = [_condition(TARGET_NOT_FOUND, missing)]
                continue
            if ref.kind == "HTTPRoute":
                level = ROUTE if ref.sectionName is None else ROUTE_RULE
            else:
                level = GATEWAY if ref.sectionName is None else LISTENER
            slot = (level, res.namespace, ref.name, ref.sectionName)
            winner = self._slots.get(slot)
            if winner is not None:
                entry["conditions"] = [
                    _condition(
                        CONFLICTED,
                        f"{KIND} {winner.policy.key} already targets this {ref.kind}"
                        + (f" section {ref.sectionName}" if ref.sectionName else "")
                        + " (older, or as old and first by namespace/name)",
                    )
                ]
                continue
            self._slots[slot] = holder
            entry["conditions"] = [_condition(ACCEPTED)]
            entry["_holder"] = holder

    def for_rule(
        self, route_ns: str, route: str, rule_name: str | None, gateway: str, listener: str
    ) -> CompiledTraffic | None:
        """The policy for a rule of ``route_ns/route`` served on ``gateway``'s
        ``listener`` ("ns/name" and listener name), or None."""
        gw_ns, _, gw_name = gateway.partition("/")
        candidates = []
        if rule_name is not None:
            candidates.append(self._slots.get((ROUTE_RULE, route_ns, route, rule_name)))
        candidates.append(self._slots.get((ROUTE, route_ns, route, None)))
        candidates.append(self._slots.get((LISTENER, gw_ns, gw_name, listener)))
        candidates.append(self._slots.get((GATEWAY, gw_ns, gw_name, None)))
        found = [h for h in candidates if h is not None]
        if not found:
            return None
        for shadowed in found[1:]:
            if shadowed is not found[0]:
                shadowed.overrides.add(f"{route_ns}/{route}")
        return found[0].policy

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, status in self._status.items():
            targets = []
            for entry in status["targets"]:
                entry = dict(entry)
                holder = entry.pop("_holder", None)
                if holder is not None and holder.overrides:
                    routes = ", ".join(sorted(holder.overrides))
                    entry["conditions"] = entry["conditions"] + [
                        {
                            "type": "Overridden",
                            "status": "True",
                            "reason": "Overridden",
                            "message": f"a more specific {KIND} applies to: {routes}",
                        }
                    ]
                targets.append(entry)
            out[key] = {"source": status["source"], "targets": targets}
        return dict(sorted(out.items()))


def _missing_target(inputs: Inputs, namespace: str, ref: Any) -> str:
    """Why the target does not exist ("" when it does). Only the policy's namespace is
    searched: Envoy Gateway ignores targets elsewhere."""
    res = inputs.get(ref.kind, namespace, ref.name)
    if res is None:
        return f"{ref.kind} {namespace}/{ref.name} not found"
    if ref.sectionName is None:
        return ""
    if ref.kind == "Gateway":
        names = [lst.name for lst in res.obj.spec.listeners or ()]
        what = "listener"
    else:
        names = [rule.name for rule in res.obj.spec.rules or () if rule.name]
        what = "rule"
    if ref.sectionName not in names:
        return f"{ref.kind} {namespace}/{ref.name} has no {what} named {ref.sectionName}"
    return ""
