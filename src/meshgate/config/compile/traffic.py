"""BackendTrafficPolicy: each policy compiled once into a ``CompiledTraffic``, attached to
its targets, and looked up per route rule.

Attachment (``attachment.PolicyIndex``) follows Envoy Gateway: the most specific
policy wins, whole.

The mapping to the data plane's dataclasses (``config/traffic.py``, ``RetryPolicy``,
``ratelimit.rules``) uses Envoy's semantics: a retry trigger name means what ``x-envoy-retry-on`` says it
means in Envoy's router (``RetryStateImpl::wouldRetryFromReset`` and friends).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshgate.config.compile.attachment import PolicyIndex
from meshgate.config.compile.durations import parse_duration, parse_timeout
from meshgate.config.errors import ConfigError, ConfigInvalid
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
from meshgate.ratelimit import rules as rl

KIND = "BackendTrafficPolicy"

# Envoy Gateway's translator (internal/xds/translator/route.go) when retryOn is unset.
DEFAULT_TRIGGERS = ("connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes")
DEFAULT_RETRIABLE_CODES = (503,)
DEFAULT_NUM_RETRIES = 2
DEFAULT_BACKOFF = 0.025  # Envoy's base interval; the cap defaults to 10x


@dataclass(frozen=True, slots=True)
class CompiledTraffic:
    """One BackendTrafficPolicy, ready for the data plane."""

    key: str  # "namespace/name" of the policy
    cluster: ClusterPolicy
    retry: RetryPolicy | None = None
    fault: Fault | None = None
    request_timeout: float | None = None  # seconds; None: unset or "0s" (disabled)
    sets_request_timeout: bool = False  # timeout.http.requestTimeout was given
    rate_limit: rl.RateLimitPolicy | None = None


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
        rate_limit=rate_limit(key, spec.rateLimit) if spec.rateLimit is not None else None,
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


def rate_limit(key: str, spec: Any) -> rl.RateLimitPolicy:
    """``rateLimit``: ``type`` (deprecated in Envoy Gateway) only says which section is
    meant; set sections are served, both at once if both are set."""
    local = spec.local.rules if spec.local is not None else ()
    global_ = spec.global_.rules if spec.global_ is not None else ()
    return rl.RateLimitPolicy(
        key=key,
        local=tuple(rate_limit_rule(i, r) for i, r in enumerate(local)),
        global_=tuple(rate_limit_rule(i, r) for i, r in enumerate(global_)),
    )


def rate_limit_rule(index: int, rule: Any) -> rl.RateLimitRule:
    matchers: list = []
    distinct: list = []
    for cond in rule.clientSelectors:
        for h in cond.headers:
            if h.type == "Distinct":
                distinct.append(rl.DistinctHeader(h.name))
            elif h.type == "RegularExpression":
                matchers.append(rl.HeaderValue(h.name, None, h.value, h.invert))
            else:
                matchers.append(rl.HeaderValue(h.name, h.value, None, h.invert))
        if cond.methods:
            matchers.append(rl.Methods([(m.value, m.invert) for m in cond.methods]))
        if cond.path is not None:
            matchers.append(rl.Path(cond.path.type, cond.path.value, cond.path.invert))
        if cond.sourceCIDR is not None:
            if cond.sourceCIDR.type == "Distinct":
                distinct.append(rl.DistinctSource(cond.sourceCIDR.value))
            else:
                matchers.append(rl.SourceIn(cond.sourceCIDR.value))
        if cond.consumer is not None:
            if cond.consumer.type == "Distinct":
                distinct.append(rl.DistinctConsumer())
            else:
                matchers.append(rl.ConsumerIs(cond.consumer.value))
    cost = 1
    if rule.cost is not None and rule.cost.request is not None:
        cost = rule.cost.request.number
    return rl.RateLimitRule(
        index=index,
        requests=rule.limit.requests,
        unit=rule.limit.unit,
        window=rl.UNIT_SECONDS[rule.limit.unit],
        cost=cost,
        shared=bool(rule.shared),
        matchers=tuple(matchers),
        distinct=tuple(distinct),
    )


# --- attachment ------------------------------------------------------------------------


class TrafficPolicies(PolicyIndex):
    """Every BackendTrafficPolicy of a compile, compiled and attached."""

    kind = KIND

    def compile(self, key: str, res: Any) -> CompiledTraffic:
        compiled = compile_traffic(key, res.obj.spec)
        if compiled.rate_limit is not None and compiled.rate_limit.global_:
            _check_redis(res)
        return compiled


def _check_redis(res: Any) -> None:
    """A serving gateway needs a Redis for global rate limits (``meshgate validate``
    does not)."""
    from meshgate.config.compile.inputs import kind_name
    from meshgate.ratelimit.redis_counters import SETTINGS

    if SETTINGS.serving and SETTINGS.url is None:
        raise ConfigInvalid([
            ConfigError(
                str(res.file),
                res.document,
                kind_name(res),
                "spec.rateLimit.global",
                "global rate limits count in Redis: start the gateway with --redis-url "
                "redis://HOST:PORT/DB (or set MESHGATE_REDIS_URL)",
            )
        ])
