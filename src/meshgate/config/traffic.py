"""Compiled BackendTrafficPolicy settings: what a cluster and a rule do when backends
fail or load must be spread.

``config/compile/traffic.py`` fills these from the ``gateway.envoyproxy.io/v1alpha1``
BackendTrafficPolicy that applies to a route (route-level wins over gateway-level);
every field has Envoy's (or Linkerd's, for the retry budget) default, so a cluster
with no policy gets exactly what Envoy Gateway would give it. Immutable, no pydantic:
the data plane reads these.
"""

from __future__ import annotations

from dataclasses import dataclass

# Load-balancer kinds (BackendTrafficPolicy.loadBalancer.type).
ROUND_ROBIN = "RoundRobin"
LEAST_REQUEST = "LeastRequest"
RANDOM = "Random"
CONSISTENT_HASH = "ConsistentHash"

# What a consistent hash keys on (loadBalancer.consistentHash.type).
HASH_SOURCE_IP = "SourceIP"
HASH_HEADER = "Header"
HASH_COOKIE = "Cookie"


@dataclass(frozen=True, slots=True)
class LoadBalancing:
    kind: str = LEAST_REQUEST  # Envoy Gateway's default
    hash_on: str | None = None  # HASH_*; only with CONSISTENT_HASH
    hash_header: str | None = None  # lowercase header name, for HASH_HEADER
    cookie_name: str | None = None  # for HASH_COOKIE
    cookie_ttl: float | None = None  # seconds; set: meshgate issues the cookie when absent
    cookie_attributes: tuple[tuple[str, str], ...] = ()
    table_size: int = 65537  # Maglev lookup table size (a prime)
    slow_start_window: float = 0.0  # seconds; 0 = off
    panic_threshold: float = 50.0  # percent of healthy hosts under which all are used


@dataclass(frozen=True, slots=True)
class CircuitBreaking:
    """Envoy's per-cluster resource limits, with Envoy's defaults."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_parallel_requests: int = 1024
    max_parallel_retries: int = 3


@dataclass(frozen=True, slots=True)
class ActiveHealthCheck:
    kind: str = "HTTP"  # "HTTP" | "TCP"
    interval: float = 3.0
    timeout: float = 1.0
    healthy_threshold: int = 1
    unhealthy_threshold: int = 3
    # HTTP
    path: str = "/"
    method: str = "GET"
    host: str | None = None  # Host header; None = the endpoint's address
    expected_statuses: frozenset[int] = frozenset({200})
    expected_body: bytes | None = None  # the response body must contain this
    # TCP: bytes to send, bytes the reply must contain (None: connecting is enough)
    send: bytes | None = None
    receive: bytes | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Passive health checking (Envoy outlier detection), Envoy Gateway's defaults."""

    consecutive_5xx: int = 5
    consecutive_gateway_errors: int = 0  # 0 = off
    consecutive_local_origin_failures: int = 5
    split_external_local_origin_errors: bool = False
    interval: float = 3.0
    base_ejection_time: float = 30.0
    max_ejection_percent: float = 10.0
    max_ejection_time: float = 300.0


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """Linkerd's retry budget: retries may add ``ratio`` of the requests of the last
    ``ttl`` seconds, plus ``min_per_second`` so low traffic can still retry."""

    ratio: float = 0.2
    min_per_second: float = 10.0
    ttl: float = 10.0


@dataclass(frozen=True, slots=True)
class ClusterPolicy:
    lb: LoadBalancing = LoadBalancing()
    breaker: CircuitBreaking = CircuitBreaking()
    health: ActiveHealthCheck | None = None
    outlier: OutlierDetection | None = None
    budget: RetryBudget = RetryBudget()
    connect_timeout: float | None = None  # None: the gateway's --connect-timeout
    idle_timeout: float | None = None  # None: Limits.upstream_idle_timeout
    max_connection_duration: float | None = None  # None: no limit
    dns_refresh: float = 30.0  # seconds between re-resolutions of fqdn endpoints


DEFAULT_CLUSTER_POLICY = ClusterPolicy()


@dataclass(frozen=True, slots=True)
class Fault:
    """BackendTrafficPolicy.faultInjection, for chaos tests of the services behind."""

    delay: float | None = None  # seconds
    delay_percent: float = 100.0
    abort_status: int | None = None
    abort_percent: float = 100.0
