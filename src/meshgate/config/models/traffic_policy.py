"""``gateway.envoyproxy.io/v1alpha1`` BackendTrafficPolicy: retries, timeouts, circuit
breakers, health checks, load balancing, fault injection and rate limits for the
routes (or Gateways) it targets.

Envoy Gateway's api/v1alpha1 Go types are the reference (backendtrafficpolicy_types.go,
retry_types.go, healthcheck_types.go, loadbalancer_types.go, circuitbreaker_types.go,
fault_injection.go, timeout_types.go, ratelimit_types.go, policy_helpers.go): same field
names, enums, defaults and CEL rules, as validators here. Fields Envoy Gateway has and meshgate does
not serve yet are declared so that setting one says so by name. ``retry.budget`` is a
meshgate extension (Linkerd's retry budget), and so is the rate-limit selector
``consumer``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from meshgate.config.models.meta import (
    Duration,
    FieldError,
    HeaderName,
    ResourceBase,
    Strict,
    parse_duration,
)
from meshgate.config.models.policy_common import (
    NOT_SUPPORTED,
    GoDuration,
    HTTPStatus,
    Percentage,
    Section,
    TargetedSpec,
    UInt32,
    not_supported,
    parse_go_duration,
    positive,
)

# --- retry -----------------------------------------------------------------------------

TriggerEnum = Literal[
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
]


class RetryOn(Strict):
    triggers: list[TriggerEnum] = Field(
        default_factory=list,
        description="Conditions that trigger a retry (Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on "
        "names). gRPC status triggers and `refused-stream` have no effect on HTTP/1.1 backends.",
    )
    httpStatusCodes: list[HTTPStatus] = Field(
        default_factory=list,
        description="Statuses retried by the `retriable-status-codes` trigger.",
    )


class BackOffPolicy(Strict):
    baseInterval: Duration | None = Field(
        default=None, description="Base interval between retries (fully jittered, doubling); 25ms if unset."
    )
    maxInterval: Duration | None = Field(
        default=None, description="Cap of the interval; at least baseInterval. 10 x baseInterval if unset."
    )

    @model_validator(mode="after")
    def _max_not_below_base(self) -> BackOffPolicy:
        positive(self.baseInterval, "baseInterval")
        positive(self.maxInterval, "maxInterval")
        if self.maxInterval is not None:
            base = parse_duration(self.baseInterval) if self.baseInterval is not None else 0.025
            if parse_duration(self.maxInterval) < base:
                raise FieldError(("maxInterval",), "must be greater than or equal to baseInterval")
        return self


class PerRetryPolicy(Strict):
    timeout: Duration | None = Field(
        default=None, description="Timeout of each try; the route's timeouts.backendRequest if unset."
    )
    backOff: BackOffPolicy | None = Field(default=None, description="Backoff between tries.")

    @model_validator(mode="after")
    def _positive_timeout(self) -> PerRetryPolicy:
        positive(self.timeout, "timeout")
        return self


class RetryBudget(Strict):
    ratio: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="Retries may add at most this fraction of the requests of the last 10 seconds.",
    )
    minRetriesPerSecond: int = Field(
        default=10, ge=0, description="Retries allowed per second regardless of the ratio, for low traffic."
    )


class Retry(Section):
    numRetries: int = Field(default=2, ge=0, description="Number of retries after the first try.")
    retryOn: RetryOn | None = Field(
        default=None,
        description="When to retry. Unset: connect-failure, refused-stream, unavailable, cancelled and "
        "retriable-status-codes with status 503.",
    )
    perRetry: PerRetryPolicy | None = Field(default=None, description="Per-try timeout and backoff.")
    budget: RetryBudget | None = Field(
        default=None,
        description="meshgate extension (not in Envoy Gateway): Linkerd's retry budget, which caps retries "
        "to a share of the traffic so retries cannot multiply load on a failing backend. "
        "Defaults (ratio 0.2, 10 per second) apply when unset.",
    )
    numAttemptsPerPriority: Any = not_supported()


# --- circuit breaker -------------------------------------------------------------------


class CircuitBreaker(Section):
    maxConnections: UInt32 = Field(default=1024, description="Connections to the backend, at most.")
    maxPendingRequests: UInt32 = Field(
        default=1024, description="Requests waiting for a connection, at most; more get 503."
    )
    maxParallelRequests: UInt32 = Field(
        default=1024, description="Requests in flight to the backend, at most; more get 503."
    )
    maxParallelRetries: UInt32 = Field(
        default=3,
        description="Retries in flight to the backend, at most. Envoy's default 3 (Envoy "
        "Gateway's CRD default is 1024; meshgate keeps Envoy's, so a brownout cannot fan out).",
    )
    maxRequestsPerConnection: Any = not_supported()
    perEndpoint: Any = not_supported()


# --- health checks ---------------------------------------------------------------------


class ActiveHealthCheckPayload(Strict):
    type: Literal["Text", "Binary"] = Field(description="Text, or Binary (base64 in `binary`).")
    text: str | None = Field(default=None, description="The payload as text (type Text).")
    binary: str | None = Field(default=None, description="The payload, base64-encoded (type Binary).")

    @field_validator("binary")
    @classmethod
    def _is_base64(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                base64.b64decode("".join(value.split()), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("must be base64-encoded") from None
        return value

    @model_validator(mode="after")
    def _value_fits_type(self) -> ActiveHealthCheckPayload:
        if (self.type == "Text") != (self.text is not None):
            raise FieldError(("text",), "If payload type is Text, text field needs to be set.")
        if (self.type == "Binary") != (self.binary is not None):
            raise FieldError(("binary",), "If payload type is Binary, binary field needs to be set.")
        return self

    def payload(self) -> bytes:
        if self.text is not None:
            return self.text.encode()
        return base64.b64decode("".join((self.binary or "").split()))


class HTTPActiveHealthChecker(Strict):
    path: str = Field(min_length=1, max_length=1024, description="Path requested by the health check.")
    hostname: str | None = Field(
        default=None, description="Host header of the health check; the endpoint's address if unset."
    )
    method: str | None = Field(default=None, description="HTTP method; GET if unset.")
    expectedStatuses: list[HTTPStatus] = Field(
        default_factory=list, description="Statuses that count as healthy; 200 only if empty."
    )
    expectedResponse: ActiveHealthCheckPayload | None = Field(
        default=None, description="The response body must contain this payload."
    )

    @field_validator("method")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Z]+", value):
            raise ValueError(f"{value!r} is not an HTTP method (uppercase letters, e.g. GET, HEAD)")
        return value


class TCPActiveHealthChecker(Strict):
    send: ActiveHealthCheckPayload | None = Field(
        default=None, description="Payload sent after connecting; none if unset."
    )
    receive: ActiveHealthCheckPayload | None = Field(
        default=None, description="The reply must contain this payload; connecting is enough if unset."
    )


class ActiveHealthCheck(Strict):
    timeout: GoDuration = Field(default="1s", description="Time to wait for a health check response.")
    interval: GoDuration = Field(default="3s", description="Time between health checks.")
    unhealthyThreshold: int = Field(
        default=3, ge=1, le=4294967295, description="Failed checks in a row before a host is unhealthy."
    )
    healthyThreshold: int = Field(
        default=1, ge=1, le=4294967295, description="Passed checks in a row before a host is healthy again."
    )
    type: Literal["HTTP", "TCP", "GRPC"] = Field(
        description="HTTP or TCP. GRPC is not supported by meshgate yet."
    )
    http: HTTPActiveHealthChecker | None = Field(default=None, description="The HTTP check (type HTTP).")
    tcp: TCPActiveHealthChecker | None = Field(default=None, description="The TCP check (type TCP).")
    grpc: Any = Field(default=None, description=NOT_SUPPORTED)

    @model_validator(mode="after")
    def _union(self) -> ActiveHealthCheck:
        if self.type == "GRPC" or self.grpc is not None:
            where = ("type",) if self.type == "GRPC" else ("grpc",)
            raise FieldError(where, "GRPC health checks are not supported by meshgate yet; use HTTP or TCP")
        if (self.type == "HTTP") != (self.http is not None):
            raise FieldError(("http",), "If Health Checker type is HTTP, http field needs to be set.")
        if (self.type == "TCP") != (self.tcp is not None):
            raise FieldError(("tcp",), "If Health Checker type is TCP, tcp field needs to be set.")
        for name in ("timeout", "interval"):
            if parse_go_duration(getattr(self, name)) <= 0:
                raise FieldError((name,), "must be greater than 0")
        return self


class PassiveHealthCheck(Strict):
    splitExternalLocalOriginErrors: bool = Field(
        default=False,
        description="Count local-origin failures (connect errors, timeouts) apart from backend errors.",
    )
    interval: GoDuration = Field(default="3s", description="Time between ejection sweeps.")
    consecutiveLocalOriginFailures: UInt32 = Field(
        default=5,
        description="Local-origin failures in a row that eject a host (with splitExternalLocalOriginErrors).",
    )
    consecutiveGatewayErrors: UInt32 = Field(
        default=0, description="502, 503 or 504 responses in a row that eject a host; 0 disables."
    )
    consecutive5XxErrors: UInt32 = Field(default=5, description="5xx responses in a row that eject a host.")
    baseEjectionTime: GoDuration = Field(
        default="30s", description="Ejection time, multiplied by the number of times the host was ejected."
    )
    maxEjectionPercent: int = Field(
        default=10, ge=0, le=100, description="Hosts of a cluster that may be ejected at once, in percent."
    )


class HealthCheck(Strict):
    active: ActiveHealthCheck | None = Field(default=None, description="Active health checking.")
    passive: PassiveHealthCheck | None = Field(
        default=None, description="Passive health checking (outlier detection)."
    )
    panicThreshold: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Below this percentage of healthy hosts, all hosts are used; 50 if unset.",
    )


# --- load balancer ---------------------------------------------------------------------


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


class ConsistentHashHeader(Strict):
    name: HeaderName = Field(description="Name of the request header to hash.")


class ConsistentHashCookie(Strict):
    name: str = Field(min_length=1, description="Name of the cookie to hash.")
    ttl: Duration | None = Field(
        default=None,
        description="When set, a request without the cookie gets one with this Max-Age, "
        "pinning the client to the host chosen.",
    )
    attributes: dict[str, str] = Field(
        default_factory=dict, description="Attributes of the generated cookie (Path, SameSite, ...)."
    )


class ConsistentHash(Strict):
    type: Literal["SourceIP", "Header", "Cookie"] = Field(description="What to hash: SourceIP, Header or Cookie.")
    header: ConsistentHashHeader | None = Field(default=None, description="The header to hash (type Header).")
    cookie: ConsistentHashCookie | None = Field(default=None, description="The cookie to hash (type Cookie).")
    tableSize: int = Field(
        default=65537, ge=2, le=5000011, description="Size of the Maglev lookup table; a prime number."
    )

    @model_validator(mode="after")
    def _union(self) -> ConsistentHash:
        if (self.type == "Header") != (self.header is not None):
            raise FieldError(("header",), "If consistent hash type is header, the header field must be set.")
        if (self.type == "Cookie") != (self.cookie is not None):
            raise FieldError(("cookie",), "If consistent hash type is cookie, the cookie field must be set.")
        if not _is_prime(self.tableSize):
            raise FieldError(("tableSize",), f"{self.tableSize} is not a prime number")
        return self


class SlowStart(Strict):
    window: Duration = Field(description="Warm-up time of a new host, during which its share grows linearly.")


class LoadBalancer(Section):
    type: Literal["ConsistentHash", "LeastRequest", "Random", "RoundRobin"] = Field(
        description="Load-balancing algorithm."
    )
    consistentHash: ConsistentHash | None = Field(
        default=None, description="What to hash (type ConsistentHash)."
    )
    slowStart: SlowStart | None = Field(
        default=None, description="Slow start of new hosts (RoundRobin and LeastRequest only)."
    )
    zoneAware: Any = not_supported()
    endpointOverride: Any = not_supported()

    @model_validator(mode="after")
    def _union(self) -> LoadBalancer:
        if (self.type == "ConsistentHash") != (self.consistentHash is not None):
            raise FieldError(
                ("consistentHash",),
                "If LoadBalancer type is consistentHash, consistentHash field needs to be set.",
            )
        if self.type in ("Random", "ConsistentHash") and self.slowStart is not None:
            raise FieldError(
                ("slowStart",),
                "Currently SlowStart is only supported for RoundRobin and LeastRequest load balancers.",
            )
        return self


# --- fault injection -------------------------------------------------------------------


class FaultInjectionDelay(Strict):
    fixedDelay: Duration = Field(description="Delay added before the request is forwarded.")
    percentage: Percentage = Field(default=100, description="Share of requests delayed, in percent.")


class FaultInjectionAbort(Strict):
    httpStatus: int | None = Field(default=None, ge=200, le=600, description="Status to answer with.")
    grpcStatus: int | None = Field(default=None, ge=0, le=16, description=NOT_SUPPORTED)
    percentage: Percentage = Field(default=100, description="Share of requests aborted, in percent.")

    @model_validator(mode="after")
    def _one_status(self) -> FaultInjectionAbort:
        if self.httpStatus is not None and self.grpcStatus is not None:
            raise FieldError(("grpcStatus",), "httpStatus and grpcStatus cannot be simultaneously defined.")
        if self.grpcStatus is not None:
            raise FieldError(("grpcStatus",), "grpcStatus is not supported by meshgate yet; use httpStatus")
        if self.httpStatus is None:
            raise FieldError(("httpStatus",), "httpStatus and grpcStatus are set at least one.")
        return self


class FaultInjection(Strict):
    delay: FaultInjectionDelay | None = Field(default=None, description="Delay requests.")
    abort: FaultInjectionAbort | None = Field(default=None, description="Answer requests with an error.")

    @model_validator(mode="after")
    def _at_least_one(self) -> FaultInjection:
        if self.delay is None and self.abort is None:
            raise FieldError((), "Delay and abort faults are set at least one.")
        return self


# --- timeouts --------------------------------------------------------------------------


class TCPTimeout(Strict):
    connectTimeout: Duration | None = Field(
        default=None,
        description="Time to establish a connection (TCP and TLS); the gateway's --connect-timeout if unset.",
    )

    @model_validator(mode="after")
    def positive(self) -> TCPTimeout:
        positive(self.connectTimeout, "connectTimeout")
        return self


class HTTPTimeout(Section):
    connectionIdleTimeout: Duration | None = Field(
        default=None,
        description="A pooled connection idle this long is closed; the gateway's upstream idle timeout if unset.",
    )
    maxConnectionDuration: Duration | None = Field(
        default=None, description="A connection is closed after this long; `0s` or unset: no limit."
    )
    requestTimeout: Duration | None = Field(
        default=None,
        description="Deadline for the whole response, retries included; `0s` disables. "
        "An HTTPRoute rule's timeouts.request wins over it.",
    )
    maxStreamDuration: Any = not_supported()

    @model_validator(mode="after")
    def positive(self) -> HTTPTimeout:
        # meshgate has no "never" for the upstream idle timeout: 0s would close at once.
        positive(self.connectionIdleTimeout, "connectionIdleTimeout")
        return self


class Timeout(Strict):
    tcp: TCPTimeout | None = Field(default=None, description="TCP timeouts.")
    http: HTTPTimeout | None = Field(default=None, description="HTTP timeouts.")


# --- rate limit ------------------------------------------------------------------------

RateLimitUnit = Literal["Second", "Minute", "Hour", "Day", "Month", "Year"]
RateLimitHTTPMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]


class RateLimitValue(Strict):
    requests: int = Field(ge=0, le=4294967295, description="Requests allowed per unit.")
    unit: RateLimitUnit = Field(
        description="Second, Minute, Hour, Day, Month (30 days) or Year (365 days), as Envoy's "
        "ratelimit service counts them."
    )


class RateLimitHeaderMatch(Strict):
    type: Literal["Exact", "RegularExpression", "Distinct"] = Field(
        default="Exact",
        description="Exact or RegularExpression: the header must match `value` (one bucket for all "
        "matching requests). Distinct: one bucket per distinct value of the header. A request "
        "without the header is not selected (with `invert`, Exact and RegularExpression select it).",
    )
    name: HeaderName = Field(max_length=256, description="Header name, case-insensitive.")
    value: str | None = Field(
        default=None, max_length=1024, description="Value or regular expression; not with Distinct."
    )
    invert: bool = Field(default=False, description="Select the requests that do NOT match; not with Distinct.")

    @model_validator(mode="after")
    def _value_fits_type(self) -> RateLimitHeaderMatch:
        if self.type == "Distinct":
            if self.value is not None:
                raise FieldError(("value",), "value must not be set with type Distinct")
            if self.invert:
                raise FieldError(("invert",), "invert must not be set with type Distinct")
            return self
        if self.value is None:
            raise FieldError(("value",), f"value is required with type {self.type}")
        if self.type == "RegularExpression":
            try:
                re.compile(self.value)
            except re.error as exc:
                raise FieldError(("value",), f"invalid regular expression {self.value!r}: {exc}") from None
        return self


class RateLimitMethodMatch(Strict):
    value: RateLimitHTTPMethod = Field(description="HTTP method.")
    invert: bool = Field(default=False, description="Select requests with any other method.")


class RateLimitPathMatch(Strict):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = Field(
        default="PathPrefix", description="How `value` matches the request path."
    )
    value: str = Field(default="/", max_length=1024, description="Path, prefix or regular expression.")
    invert: bool = Field(default=False, description="Select requests whose path does not match.")

    @model_validator(mode="after")
    def _valid(self) -> RateLimitPathMatch:
        if self.type == "RegularExpression":
            try:
                re.compile(self.value)
            except re.error as exc:
                raise FieldError(("value",), f"invalid regular expression {self.value!r}: {exc}") from None
        elif not self.value.startswith("/"):
            raise FieldError(("value",), "must be an absolute path (start with /)")
        return self


class RateLimitSourceMatch(Strict):
    type: Literal["Exact", "Distinct"] = Field(
        default="Exact",
        description="Exact: every client address in the CIDR shares one bucket. Distinct: one "
        "bucket per client address in the CIDR.",
    )
    value: str = Field(
        min_length=1, max_length=256, description="IP CIDR of the client address, e.g. `10.0.0.0/8`, `::/0`."
    )

    @field_validator("value")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP CIDR (examples: 10.0.0.0/8, 192.168.1.7/32, ::/0)") from None
        return value


class RateLimitConsumerMatch(Strict):
    type: Literal["Exact", "Distinct"] = Field(
        default="Exact",
        description="Exact: requests of the consumer named `value`. Distinct: one bucket per consumer.",
    )
    value: str | None = Field(default=None, min_length=1, description="Consumer name (type Exact).")

    @model_validator(mode="after")
    def _value_fits_type(self) -> RateLimitConsumerMatch:
        if (self.type == "Exact") != (self.value is not None):
            raise FieldError(("value",), "value is required with type Exact and not allowed with Distinct")
        return self


class RateLimitSelectCondition(Strict):
    headers: list[RateLimitHeaderMatch] = Field(
        default_factory=list, max_length=16, description="Request headers, all of which must match."
    )
    methods: list[RateLimitMethodMatch] = Field(
        default_factory=list, description="Request methods, any of which may match; all if empty."
    )
    path: RateLimitPathMatch | None = Field(default=None, description="Request path.")
    sourceCIDR: RateLimitSourceMatch | None = Field(default=None, description="Client address range.")
    consumer: RateLimitConsumerMatch | None = Field(
        default=None,
        description="meshgate extension (not in Envoy Gateway): the consumer an authentication "
        "filter of the route's SecurityPolicy identified (API key, basic auth, JWT ...). A request "
        "without a consumer is not selected.",
    )

    @model_validator(mode="after")
    def _something(self) -> RateLimitSelectCondition:
        if not (self.headers or self.methods or self.path or self.sourceCIDR or self.consumer):
            raise FieldError((), "at least one of headers, methods, path, sourceCIDR or consumer must be specified")
        return self


class RateLimitCostSpecifier(Section):
    from_: Literal["Number", "Metadata"] = Field(
        alias="from", description="Number (a fixed cost). Metadata is not supported by meshgate yet."
    )
    number: int | None = Field(
        default=None, ge=0, le=2**53, description="Counter units a request takes; 0 only checks the limit."
    )
    metadata: Any = not_supported()

    @model_validator(mode="after")
    def _number(self) -> RateLimitCostSpecifier:
        if self.from_ == "Metadata":
            raise FieldError(("from",), "from: Metadata is not supported by meshgate yet; use Number")
        if self.number is None:
            raise FieldError(("number",), "number is required with from: Number")
        return self


class RateLimitCost(Section):
    request: RateLimitCostSpecifier | None = Field(
        default=None, description="Units a request takes from the counters; 1 if unset."
    )
    response: Any = not_supported()


class RateLimitRule(Section):
    clientSelectors: list[RateLimitSelectCondition] = Field(
        default_factory=list,
        max_length=8,
        description="Conditions, all of which must hold for the rule to count the request; every "
        "request of the route if empty.",
    )
    limit: RateLimitValue = Field(description="The limit; over it, requests get 429.")
    cost: RateLimitCost | None = Field(default=None, description="Cost of a request; 1 if unset.")
    shared: bool | None = Field(
        default=None,
        description="true: one set of counters for every route the policy applies to. Unset or false: "
        "each route rule has its own.",
    )
    shadowMode: Any = not_supported()


class GlobalRateLimit(Strict):
    rules: list[RateLimitRule] = Field(
        max_length=128,
        description="Rules, each counted in Redis and shared by every gateway process; a request is "
        "limited when any rule that selects it is over its limit.",
    )


class LocalRateLimit(Strict):
    rules: list[RateLimitRule] = Field(
        default_factory=list,
        max_length=16,
        description="Rules, each a token bucket in the gateway process; a request is limited when any "
        "rule that selects it has no token left.",
    )


class RateLimitSpec(Section):
    type: Literal["Global", "Local"] | None = Field(
        default=None, description="Deprecated in Envoy Gateway (set global and/or local): which one is used."
    )
    global_: GlobalRateLimit | None = Field(
        default=None, alias="global", description="Limits shared by every gateway process, counted in Redis."
    )
    local: LocalRateLimit | None = Field(default=None, description="Limits per gateway process, in memory.")

    @model_validator(mode="after")
    def _union(self) -> RateLimitSpec:
        if self.type == "Global" and self.global_ is None:
            raise FieldError(("global",), "If RateLimit type is Global, global field needs to be set.")
        if self.type == "Local" and self.local is None:
            raise FieldError(("local",), "If RateLimit type is Local, local field needs to be set.")
        if self.global_ is None and self.local is None:
            raise FieldError((), "at least one of global or local must be set")
        return self


# --- spec ------------------------------------------------------------------------------


class BackendTrafficPolicySpec(TargetedSpec):
    loadBalancer: LoadBalancer | None = Field(
        default=None, description="Load balancing across the endpoints; LeastRequest if unset."
    )
    retry: Retry | None = Field(default=None, description="Retries; none if unset.")
    healthCheck: HealthCheck | None = Field(default=None, description="Active and passive health checks.")
    circuitBreaker: CircuitBreaker | None = Field(
        default=None, description="Connection and request limits; Envoy's defaults if unset."
    )
    timeout: Timeout | None = Field(default=None, description="Connection and request timeouts.")
    faultInjection: FaultInjection | None = Field(
        default=None, description="Delays and aborts injected for chaos testing."
    )
    rateLimit: RateLimitSpec | None = Field(
        default=None, description="Request rate limits, per gateway process (local) or shared in Redis (global)."
    )
    targetSelectors: Any = not_supported()
    mergeType: Any = not_supported()
    useClientProtocol: Any = not_supported()
    compression: Any = not_supported()
    responseOverride: Any = not_supported()
    httpUpgrade: Any = not_supported()
    requestBuffer: Any = not_supported()
    telemetry: Any = not_supported()
    proxyProtocol: Any = not_supported()
    tcpKeepalive: Any = not_supported()
    connection: Any = not_supported()
    dns: Any = not_supported()
    http2: Any = not_supported()


class BackendTrafficPolicy(ResourceBase):
    """How the gateway talks to the backends of the routes it targets: retries, timeouts,
    circuit breakers, health checks, load balancing, fault injection, rate limits."""

    apiVersion: Literal["gateway.envoyproxy.io/v1alpha1"] = Field(
        description="Always `gateway.envoyproxy.io/v1alpha1`."
    )
    kind: Literal["BackendTrafficPolicy"] = Field(description="Always `BackendTrafficPolicy`.")
    spec: BackendTrafficPolicySpec = Field(description="Targets and traffic settings.")
