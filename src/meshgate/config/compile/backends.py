"""backendRef resolution: Service (through its port, targetPort and EndpointSlices) or
Envoy Gateway ``Backend`` (static ip / fqdn endpoints) -> a named ``Cluster``.

An unresolvable ref is not a config error (the Gateway API reports it as the route's
``ResolvedRefs=False`` condition): it resolves to ``cluster=None`` and the engine answers
500 for the share of traffic it would have taken. Check order follows Envoy Gateway:
kind, then ReferenceGrant, then existence — so a ref without a grant never reveals
whether the target exists.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from meshgate.config.compile.inputs import Inputs
from meshgate.config.snapshot import Cluster, Endpoint
from meshgate.config.traffic import ClusterPolicy

GATEWAY_GROUP = "gateway.networking.k8s.io"
ENVOY_GATEWAY_GROUP = "gateway.envoyproxy.io"

# ResolvedRefs reasons (Gateway API RouteConditionReason).
BACKEND_NOT_FOUND = "BackendNotFound"
INVALID_KIND = "InvalidKind"
REF_NOT_PERMITTED = "RefNotPermitted"


@dataclass(frozen=True, slots=True)
class Resolution:
    cluster: str | None
    reason: str = ""  # a ResolvedRefs reason when cluster is None
    message: str = ""


class BackendResolver:
    """Resolves refs to cluster names and keeps every cluster it built (shared by name)."""

    def __init__(self, inputs: Inputs) -> None:
        self.inputs = inputs
        self.clusters: dict[str, Cluster] = {}

    def resolve(
        self,
        ref: Any,
        from_namespace: str,
        from_kind: str = "HTTPRoute",
        from_group: str = GATEWAY_GROUP,
    ) -> Resolution:
        group = ref.group or ""
        kind = ref.kind or "Service"
        namespace = ref.namespace or from_namespace
        name = ref.name
        what = f"{kind} {namespace}/{name}"
        if (group, kind) not in (("", "Service"), (ENVOY_GATEWAY_GROUP, "Backend")):
            shown = f"{group}/{kind}" if group else kind
            return Resolution(
                None,
                INVALID_KIND,
                f"backendRef kind {shown} is not supported (Service, or Backend in group "
                f"{ENVOY_GATEWAY_GROUP})",
            )
        if namespace != from_namespace and not self.grant_allows(
            from_namespace, from_kind, namespace, group, kind, name, from_group
        ):
            return Resolution(
                None,
                REF_NOT_PERMITTED,
                f"{what} is in another namespace and no ReferenceGrant in {namespace} "
                f"allows references from {from_kind}s in {from_namespace}",
            )
        if kind == "Service":
            return self._service(namespace, name, ref.port)
        return self._backend(namespace, name, ref.port)

    # --- ReferenceGrant ---------------------------------------------------------------

    def grant_allows(
        self,
        from_ns: str,
        from_kind: str,
        to_ns: str,
        to_group: str,
        to_kind: str,
        to_name: str,
        from_group: str = GATEWAY_GROUP,
    ) -> bool:
        for res in self.inputs.reference_grants(to_ns):
            spec = res.obj.spec
            from_ok = any(
                (f.group or "") == from_group and f.kind == from_kind and f.namespace == from_ns
                for f in spec.from_
            )
            if not from_ok:
                continue
            for to in spec.to:
                if (to.group or "") == to_group and to.kind == to_kind and (
                    not to.name or to.name == to_name
                ):
                    return True
        return False

    # --- Service ----------------------------------------------------------------------

    def _service(self, namespace: str, name: str, port: int | None) -> Resolution:
        res = self.inputs.get("Service", namespace, name)
        if res is None:
            return Resolution(None, BACKEND_NOT_FOUND, f"Service {namespace}/{name} not found")
        if port is None:  # the CRD requires it; kept for refs built in code
            return Resolution(
                None, BACKEND_NOT_FOUND, f"backendRef to Service {namespace}/{name} needs a port"
            )
        service_port = next((p for p in res.obj.spec.ports if p.port == port), None)
        if service_port is None:
            ports = ", ".join(str(p.port) for p in res.obj.spec.ports) or "none"
            return Resolution(
                None,
                BACKEND_NOT_FOUND,
                f"Service {namespace}/{name} has no port {port} (ports: {ports})",
            )
        cluster_name = f"service/{namespace}/{name}:{port}"
        if cluster_name not in self.clusters:
            self.clusters[cluster_name] = self._service_cluster(
                cluster_name, namespace, name, service_port
            )
        return Resolution(cluster_name)

    def _service_cluster(
        self, cluster_name: str, namespace: str, name: str, service_port: Any
    ) -> Cluster:
        target = service_port.targetPort if service_port.targetPort is not None else service_port.port
        numeric_target = target if isinstance(target, int) else None
        port_name = service_port.name or None
        endpoints: list[Endpoint] = []
        seen: set[tuple[str, int]] = set()
        for slice_res in self.inputs.endpoint_slices(namespace, name):
            slice_obj = slice_res.obj
            if slice_obj.ports:
                # Standard Kubernetes: the slice port whose name is the Service port's name
                # (both unnamed counts as equal) carries the number to dial.
                slice_port = next(
                    (p for p in slice_obj.ports if (p.name or None) == port_name), None
                )
                if slice_port is None:
                    continue
                number = slice_port.port if slice_port.port is not None else numeric_target
            else:
                number = numeric_target
            if number is None:
                continue  # a named targetPort with no slice port to give its number
            for ep in slice_obj.endpoints:
                if ep.conditions.ready is False:
                    continue
                for address in ep.addresses:
                    key = (address, number)
                    if key not in seen:
                        seen.add(key)
                        endpoints.append(Endpoint(host=address, port=number))
        return Cluster(
            name=cluster_name,
            endpoints=tuple(endpoints),
            source=f"Service {namespace}/{name} port {service_port.port} -> targetPort {target}",
        )

    # --- Backend (gateway.envoyproxy.io) ----------------------------------------------

    def _backend(self, namespace: str, name: str, port: int | None) -> Resolution:
        res = self.inputs.get("Backend", namespace, name)
        if res is None:
            return Resolution(None, BACKEND_NOT_FOUND, f"Backend {namespace}/{name} not found")
        cluster_name = f"backend/{namespace}/{name}"
        if cluster_name not in self.clusters:
            endpoints: list[Endpoint] = []
            for ep in res.obj.spec.endpoints:
                ip = getattr(ep, "ip", None)
                fqdn = getattr(ep, "fqdn", None)
                if ip is not None:
                    host, ep_port = ip.address, ip.port
                elif fqdn is not None:
                    host, ep_port = fqdn.hostname, fqdn.port
                else:
                    continue  # unix sockets: rejected by the model, skipped here
                # The endpoint's own port wins; the ref's port only fills a gap.
                number = ep_port if ep_port is not None else port
                if number is None:
                    continue
                endpoints.append(Endpoint(host=host, port=number))
            self.clusters[cluster_name] = Cluster(
                name=cluster_name,
                endpoints=tuple(dict.fromkeys(endpoints)),
                source=f"Backend {namespace}/{name}",
                # fqdn endpoints (never mixed with ip ones) are re-resolved by the registry.
                dns=any(getattr(ep, "fqdn", None) is not None for ep in res.obj.spec.endpoints),
            )
        return Resolution(cluster_name)

    # --- BackendTrafficPolicy ---------------------------------------------------------

    def with_policy(self, cluster_name: str, policy_key: str, policy: ClusterPolicy) -> str:
        """The name of ``cluster_name``'s twin under a BackendTrafficPolicy: same
        endpoints, the policy's balancing, limits and health checks. Each policy gets
        its own twin, so its breakers and health state are its own (as in Envoy
        Gateway, where each route rule's backend is a cluster)."""
        name = f"{cluster_name}~{policy_key}"
        if name not in self.clusters:
            plain = self.clusters[cluster_name]
            self.clusters[name] = replace(
                plain,
                name=name,
                source=f"{plain.source}, BackendTrafficPolicy {policy_key}",
                policy=policy,
            )
        return name
