"""Compile validated config resources into the immutable ``Snapshot``.

``compile_snapshot(resources, gateways=...)`` is the one entry point. Steps, each in its
own module: served Gateways and listeners (``listeners``), HTTPRoute rules, attachment
and precedence-ordered tables (``routes``), backendRefs to clusters (``backends``),
filters (``filters``), policy attachment (``attachment``), BackendTrafficPolicy
mapping (``traffic``), SecurityPolicy filters (``security``, through ``refs``),
HTTPS certificates and ClientTrafficPolicy per listener (``tls``).
Everything that makes a config unservable is collected and raised together as
``ConfigInvalid``; what the Gateway API reports as a status condition (a parent that
does not exist or does not allow the route, a backend that does not resolve, a policy
whose target is missing or taken) is recorded in ``Snapshot.dump["routes"]`` and
``Snapshot.dump["policies"]`` instead.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from meshgate.config.compile.backends import BackendResolver
from meshgate.config.compile.durations import (
    DurationError,
    parse_duration,
    parse_timeout,
)
from meshgate.config.compile.inputs import ErrorSink, Inputs
from meshgate.config.compile.listeners import (
    build_port_routers,
    collect_listeners,
    gateway_key,
    select_gateways,
)
from meshgate.config.compile.routes import (
    Attachment,
    apply_policies,
    attach_route,
    build_listener_routes,
    compile_route,
    describe_listener_routes,
)
from meshgate.config.compile.security import policy_stages
from meshgate.config.compile.tls import ClientPolicies, compile_listener_clients
from meshgate.config.compile.traffic import TrafficPolicies
from meshgate.config.errors import ConfigInvalid
from meshgate.config.snapshot import Limits, Snapshot

if TYPE_CHECKING:
    from collections.abc import Iterable

    from meshgate.config.loader import LoadedResource

__all__ = [
    "DurationError",
    "compile_snapshot",
    "parse_duration",
    "parse_timeout",
    "snapshot_version",
]


def compile_snapshot(
    resources: Iterable[LoadedResource],
    *,
    gateways: set[str] | None = None,
    limits: Limits | None = None,
) -> Snapshot:
    """Build the Snapshot that serves the Gateways in ``gateways`` ("ns/name"; None = all),
    with ``limits`` (the command line's) as every listener's defaults.

    Raises ``ConfigInvalid`` with every error when the config cannot be served.
    """
    resources = list(resources)
    errors = ErrorSink()
    inputs = Inputs(resources, errors)

    served = select_gateways(inputs, gateways, errors)
    listeners = collect_listeners(served, errors)
    listeners_by_gateway: dict[str, list] = {gateway_key(g): [] for g in served}
    for lst in listeners:
        listeners_by_gateway[lst.gateway].append(lst)
    defined = {gateway_key(g) for g in inputs.of_kind("Gateway")}

    resolver = BackendResolver(inputs)
    routes = [compile_route(res, resolver, errors) for res in inputs.of_kind("HTTPRoute")]
    traffic = TrafficPolicies(inputs)
    security, shaping = policy_stages(inputs, resolver, errors)
    base_limits = limits if limits is not None else Limits()
    client_policies = ClientPolicies(inputs, resolver, errors)
    clients = compile_listener_clients(listeners, client_policies, inputs, resolver, errors, base_limits)
    for lst in listeners:
        lst.extra = clients.describe.get(lst.key, {})

    route_dump: dict[str, Any] = {}
    by_listener: dict[str, list[Attachment]] = {lst.key: [] for lst in listeners}
    used_clusters: set[str] = set()
    for route in routes:
        statuses, attachments = attach_route(route, listeners_by_gateway, defined, inputs)
        for att in attachments:
            apply_policies(att, traffic, security, shaping, resolver)
            by_listener[att.listener.key].append(att)
            att.listener.attached_routes.add(route.key)
            used_clusters |= att.clusters()
        route_dump[route.key] = {
            "source": {"file": str(route.res.file), "document": route.res.document},
            "hostnames": route.hostnames,
            "parents": statuses,
        }

    if errors:
        raise ConfigInvalid(errors.errors)

    compiled = [build_listener_routes(lst, by_listener[lst.key]) for lst in listeners]
    ports = build_port_routers(compiled, clients.port_tls, clients.port_limits)
    clusters = {name: resolver.clusters[name] for name in sorted(used_clusters)}
    version = snapshot_version(resources, gateways)

    dump = {
        "version": version,
        "gateways": [
            {
                "name": gateway_key(g),
                "source": {"file": str(g.file), "document": g.document},
                "listeners": [
                    lst.describe() for lst in listeners if lst.gateway == gateway_key(g)
                ],
            }
            for g in served
        ],
        "routes": route_dump,
        "policies": {
            "BackendTrafficPolicy": traffic.dump(),
            "ClientTrafficPolicy": client_policies.dump(),
            **security.dump(),
        },
        "ports": {
            str(port): [describe_listener_routes(lr) for lr in compiled if lr.port == port]
            for port in ports
        },
        "clusters": {
            name: {
                "source": c.source,
                "endpoints": [f"{e.host}:{e.port}" for e in c.endpoints],
                "dns": c.dns,
            }
            for name, c in clusters.items()
        },
    }
    return Snapshot(
        version=version,
        ports=ports,
        clusters=clusters,
        limits=base_limits,
        dump=dump,
        services=_services(att for atts in by_listener.values() for att in atts),
    )


def _services(attachments: Iterable[Attachment]) -> tuple:
    """The background services of every filter served, each once (see filters/base)."""
    found: dict[int, Any] = {}
    for att in attachments:
        for rule, _ in att.rules:
            filters = list(rule.filters)
            for backend in rule.backends:
                filters.extend(backend.filters)
            for f in filters:
                for service in f.services():
                    found.setdefault(id(service), service)
    return tuple(found.values())


def snapshot_version(resources: Iterable[LoadedResource], gateways: set[str] | None) -> str:
    """A short content hash of the inputs: the same config gives the same version,
    wherever its files live and in whatever order they were read."""
    docs = []
    for res in resources:
        obj = res.obj
        body = obj.model_dump(mode="json", by_alias=True) if hasattr(obj, "model_dump") else obj
        docs.append([res.kind, res.namespace, res.name, body])
    docs.sort(key=lambda d: (d[0], d[1], d[2]))
    canonical = json.dumps(
        {"resources": docs, "gateways": sorted(gateways) if gateways is not None else None},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
