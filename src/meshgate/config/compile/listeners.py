"""Gateways and their listeners: which are served, which conflict, which routes they
allow, and how a listener hostname intersects route hostnames.

Spec references (Gateway API v1): ``Listener.hostname``, ``AllowedRoutes``,
``HTTPRouteSpec.hostnames``. A served listener that cannot be served (a protocol we do
not terminate yet, two listeners competing for the same port and host) is a config
error: the whole config is rejected rather than silently dropping traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshgate.config.compile.inputs import ErrorSink, Inputs
from meshgate.config.snapshot import ListenerRoutes, PortRouter

if TYPE_CHECKING:
    from meshgate.config.loader import LoadedResource

GATEWAY_GROUP = "gateway.networking.k8s.io"
SUPPORTED_PROTOCOLS = frozenset({"HTTP", "HTTPS"})

# An effective hostname of "" stands for "any host" (the any_host table).
ANY_HOST = ""


@dataclass(slots=True)
class ServedListener:
    """One listener of a served Gateway, while the compile is running."""

    gateway: str  # "namespace/name"
    gateway_namespace: str
    index: int  # position in spec.listeners
    name: str
    port: int
    protocol: str
    hostname: str | None  # lowercase; None = any host
    model: Any  # the Listener model
    resource: LoadedResource
    attached_routes: set[str] = field(default_factory=set)
    extra: dict[str, Any] = field(default_factory=dict)  # TLS and client policy, for the dump

    @property
    def key(self) -> str:
        return f"{self.gateway}/{self.name}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "port": self.port,
            "protocol": self.protocol,
            "hostname": self.hostname,
            "attachedRoutes": len(self.attached_routes),
            **self.extra,
        }


def gateway_key(res: LoadedResource) -> str:
    return f"{res.namespace}/{res.name}"


def select_gateways(
    inputs: Inputs, wanted: set[str] | None, errors: ErrorSink
) -> list[LoadedResource]:
    """The Gateways this process serves: all of them, or those named in ``wanted``."""
    gateways = inputs.of_kind("Gateway")
    if wanted is None:
        return gateways
    known = {gateway_key(g) for g in gateways}
    for missing in sorted(wanted - known):
        errors.add_unbound(
            "--gateway", f"Gateway/{missing}", "selected to be served but no such Gateway is defined"
        )
    return [g for g in gateways if gateway_key(g) in wanted]


def collect_listeners(gateways: list[LoadedResource], errors: ErrorSink) -> list[ServedListener]:
    """Every listener of the served Gateways; unsupported protocols and conflicts are errors.

    Conflicts (Gateway API "Conflicted" listeners, which we refuse rather than serve
    half-way): on one port, every listener must speak the same protocol, and no two may
    share a hostname (no hostname counts as one value) — the Host header could not tell
    them apart.
    """
    listeners: list[ServedListener] = []
    for res in gateways:
        for i, model in enumerate(res.obj.spec.listeners):
            hostname = model.hostname.lower() if model.hostname else None
            listener = ServedListener(
                gateway=gateway_key(res),
                gateway_namespace=res.namespace,
                index=i,
                name=model.name,
                port=model.port,
                protocol=model.protocol,
                hostname=hostname,
                model=model,
                resource=res,
            )
            if model.protocol not in SUPPORTED_PROTOCOLS:
                errors.add(
                    res,
                    ("spec", "listeners", i, "protocol"),
                    f"protocol {model.protocol} is not supported yet (supported: HTTP, HTTPS"
                    + ("; TLS passthrough needs TLSRoute, which meshgate does not serve yet)"
                       if model.protocol == "TLS" else ")"),
                )
                continue
            listeners.append(listener)

    by_port: dict[int, list[ServedListener]] = {}
    for listener in listeners:
        by_port.setdefault(listener.port, []).append(listener)
    for port, group in by_port.items():
        first_protocol = group[0]
        seen_hosts: dict[str | None, ServedListener] = {}
        for listener in group:
            path = ("spec", "listeners", listener.index)
            if listener.protocol != first_protocol.protocol:
                errors.add(
                    listener.resource,
                    (*path, "protocol"),
                    f"port {port} is already used with protocol {first_protocol.protocol} by "
                    f"listener {first_protocol.key}",
                )
                continue
            other = seen_hosts.get(listener.hostname)
            if other is not None:
                host = listener.hostname or "(no hostname)"
                errors.add(
                    listener.resource,
                    path,
                    f"conflicts with listener {other.key}: same port {port} and hostname "
                    f"{host}; give each listener a distinct hostname or serve only one of "
                    f"the Gateways",
                )
                continue
            seen_hosts[listener.hostname] = listener
    return listeners


# --- allowedRoutes --------------------------------------------------------------------


def allows_kind(listener: ServedListener, kind: str = "HTTPRoute") -> bool:
    kinds = listener.model.allowedRoutes.kinds
    if not kinds:
        return True  # default: the kinds that fit the protocol; HTTP takes HTTPRoute
    return any(k.kind == kind and (k.group or GATEWAY_GROUP) == GATEWAY_GROUP for k in kinds)


def allows_namespace(listener: ServedListener, route_namespace: str, inputs: Inputs) -> bool:
    namespaces = listener.model.allowedRoutes.namespaces
    source = namespaces.from_
    if source == "All":
        return True
    if source == "Same":
        return route_namespace == listener.gateway_namespace
    # Selector: the labels of the route's Namespace resource.
    return selector_matches(namespaces.selector, inputs.namespace_labels(route_namespace))


def selector_matches(selector: Any, labels: dict[str, str]) -> bool:
    """Kubernetes LabelSelector semantics: every matchLabels pair and every expression."""
    if selector is None:
        return False
    for key, value in selector.matchLabels.items():
        if labels.get(key) != value:
            return False
    for req in selector.matchExpressions:
        present = req.key in labels
        if req.operator == "In":
            if not present or labels[req.key] not in req.values:
                return False
        elif req.operator == "NotIn":
            if present and labels[req.key] in req.values:
                return False
        elif req.operator == "Exists":
            if not present:
                return False
        elif req.operator == "DoesNotExist":
            if present:
                return False
    return True


# --- hostnames ------------------------------------------------------------------------


def host_matches_wildcard(host: str, wildcard: str) -> bool:
    """``*.example.com`` matches one or more labels before ``.example.com``, never
    ``example.com`` itself."""
    suffix = wildcard[1:]  # ".example.com"
    return host.endswith(suffix) and len(host) > len(suffix)


def intersect_pair(listener_host: str, route_host: str) -> str | None:
    """The hostname both accept (the more specific of the two), or None."""
    l_wild = listener_host.startswith("*.")
    r_wild = route_host.startswith("*.")
    if not l_wild and not r_wild:
        return listener_host if listener_host == route_host else None
    if l_wild and not r_wild:
        return route_host if host_matches_wildcard(route_host, listener_host) else None
    if r_wild and not l_wild:
        return listener_host if host_matches_wildcard(listener_host, route_host) else None
    # Both wildcards: the one whose suffix ends with the other's is the intersection.
    if listener_host[1:].endswith(route_host[1:]):
        return listener_host
    if route_host[1:].endswith(listener_host[1:]):
        return route_host
    return None


def effective_hostnames(listener_host: str | None, route_hosts: list[str]) -> list[str]:
    """Hostnames a route serves on a listener; ``[]`` when none intersect (the route does
    not attach there), ``[ANY_HOST]`` when neither side names a host."""
    hosts = [h.lower() for h in route_hosts]
    if listener_host is None:
        return list(dict.fromkeys(hosts)) if hosts else [ANY_HOST]
    if not hosts:
        return [listener_host]
    out: list[str] = []
    for host in hosts:
        hit = intersect_pair(listener_host, host)
        if hit is not None and hit not in out:
            out.append(hit)
    return out


# --- port routers ---------------------------------------------------------------------


def build_port_routers(
    compiled: list[ListenerRoutes],
    port_tls: dict[int, Any] | None = None,
    port_limits: dict[int, Any] | None = None,
) -> dict[int, PortRouter]:
    """Group listeners by port; the Host header then picks the most specific one (and on
    HTTPS, SNI picks the certificate: ``port_tls``, see config/compile/tls.py)."""
    port_tls = port_tls or {}
    port_limits = port_limits or {}
    by_port: dict[int, list[ListenerRoutes]] = {}
    for lr in compiled:
        by_port.setdefault(lr.port, []).append(lr)
    routers: dict[int, PortRouter] = {}
    for port in sorted(by_port):
        exact: dict[str, ListenerRoutes] = {}
        wildcards: list[tuple[str, ListenerRoutes]] = []
        default: ListenerRoutes | None = None
        for lr in by_port[port]:
            if lr.hostname is None:
                default = lr
            elif lr.hostname.startswith("*."):
                wildcards.append((lr.hostname[1:], lr))
            else:
                exact[lr.hostname] = lr
        wildcards.sort(key=lambda item: (-len(item[0]), item[0]))
        routers[port] = PortRouter(
            port=port,
            exact_listeners=exact,
            wildcard_listeners=tuple(wildcards),
            default_listener=default,
            tls=port_tls.get(port),
            limits=port_limits.get(port),
        )
    return routers
