"""What a policy's compile may look up, in one place: Secrets, ConfigMaps, backends and
Consumers, with Envoy Gateway's rules (same namespace, or another one when a
ReferenceGrant there allows it) and errors that name the policy's file, document and
field path.

A builder (``filters/security/*.build``) gets a ``PolicyRefs`` bound to one policy and
one part of its spec (``at``). A missing reference is a config error: the whole config
is rejected and the last good one keeps serving, so a typo in a Secret name can never
leave a route unauthenticated.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from meshgate.config.compile.backends import ENVOY_GATEWAY_GROUP

if TYPE_CHECKING:
    from meshgate.config.compile.backends import BackendResolver
    from meshgate.config.compile.inputs import ErrorSink, Inputs, Path
    from meshgate.config.loader import LoadedResource
    from meshgate.config.snapshot import Endpoint

class PolicyRefs:
    def __init__(
        self,
        res: LoadedResource,
        inputs: Inputs,
        resolver: BackendResolver,
        errors: ErrorSink,
        at: Path = ("spec",),
        group: str = ENVOY_GATEWAY_GROUP,
        consumers: Any = None,
    ) -> None:
        self.res = res
        self.inputs = inputs
        self.resolver = resolver
        self.errors = errors
        self.at = at
        self.group = group  # the policy kind's API group, for ReferenceGrants
        self.namespace = res.namespace
        self.key = f"{res.namespace}/{res.name}"
        # The Consumers of the policy's namespace (filters/security/consumers.py).
        self.consumers = consumers

    def under(self, *path: str | int) -> PolicyRefs:
        """The same lookups, with errors reported under ``at + path``."""
        return PolicyRefs(
            self.res, self.inputs, self.resolver, self.errors, self.at + path, self.group, self.consumers
        )

    def error(self, path: Path, message: str) -> None:
        """Record a config error at ``at + path`` (the config is then rejected)."""
        self.errors.add(self.res, self.at + tuple(path), message)

    def _allowed(self, kind: str, group: str, namespace: str, name: str, path: Path) -> bool:
        if namespace == self.namespace:
            return True
        if self.resolver.grant_allows(
            self.namespace, self.res.kind, namespace, group, kind, name, from_group=self.group
        ):
            return True
        self.error(
            path,
            f"{kind} {namespace}/{name} is in another namespace and no ReferenceGrant there "
            f"allows references from {self.res.kind}s in {self.namespace}",
        )
        return False

    def secret(self, name: str, path: Path, namespace: str | None = None) -> dict[str, bytes] | None:
        """The Secret's values, decoded (``data`` base64, ``stringData`` overriding), or
        None after recording why it cannot be used."""
        namespace = namespace or self.namespace
        if not self._allowed("Secret", "", namespace, name, path):
            return None
        found = self.inputs.get("Secret", namespace, name)
        if found is None:
            self.error(path, f"Secret {namespace}/{name} not found")
            return None
        obj = found.obj
        values = {k: base64.b64decode("".join(v.split())) for k, v in obj.data.items()}
        values.update({k: v.encode() for k, v in obj.stringData.items()})
        return values

    def configmap(self, name: str, path: Path, namespace: str | None = None) -> dict[str, str] | None:
        namespace = namespace or self.namespace
        if not self._allowed("ConfigMap", "", namespace, name, path):
            return None
        found = self.inputs.get("ConfigMap", namespace, name)
        if found is None:
            self.error(path, f"ConfigMap {namespace}/{name} not found")
            return None
        return dict(found.obj.data)

    def backend_endpoints(self, ref: Any, path: Path) -> list[Endpoint] | None:
        """The endpoints of a backendRef (Service with port, or Envoy Gateway Backend),
        or None after recording why it does not resolve."""
        resolution = self.resolver.resolve(ref, self.namespace, self.res.kind, self.group)
        if resolution.cluster is None:
            self.error(path, resolution.message)
            return None
        endpoints = list(self.resolver.clusters[resolution.cluster].endpoints)
        if not endpoints:
            self.error(path, f"{resolution.cluster} has no ready endpoints")
            return None
        return endpoints
