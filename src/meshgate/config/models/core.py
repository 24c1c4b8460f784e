"""Core Kubernetes kinds (``v1``): Namespace, Service, Secret, ConfigMap.

Only what meshgate reads is modelled, plus the fields users paste from ``kubectl get -o
yaml`` that are harmless (they are accepted and documented as not used).
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal

from pydantic import Field, field_validator, model_validator

from meshgate.config.models.meta import (
    FieldError,
    IntOrString,
    Metadata,
    ResourceBase,
    Strict,
)


class NamespaceSpec(Strict):
    finalizers: list[str] = Field(
        default_factory=list, description="Accepted for kubectl compatibility; not used."
    )


class Namespace(ResourceBase):
    """A namespace; its labels are what Gateway `allowedRoutes` selectors match."""

    apiVersion: Literal["v1"] = Field(description="Always `v1`.")
    kind: Literal["Namespace"] = Field(description="Always `Namespace`.")
    metadata: Metadata = Field(description="Name and labels; `namespace` is not used.")
    spec: NamespaceSpec = Field(
        default_factory=NamespaceSpec, description="Optional; nothing in it is used."
    )


class ServicePort(Strict):
    name: str | None = Field(
        default=None, description="Port name; required when the Service has several ports."
    )
    protocol: Literal["TCP", "UDP", "SCTP"] = Field(
        default="TCP", description="L4 protocol; meshgate proxies TCP ports."
    )
    port: int = Field(ge=1, le=65535, description="Port the Service exposes.")
    targetPort: IntOrString | None = Field(
        default=None,
        description="Port number or name on the endpoints; defaults to `port`.",
    )
    appProtocol: str | None = Field(
        default=None,
        description="Application protocol, e.g. `kubernetes.io/h2c`, `kubernetes.io/ws`.",
    )
    nodePort: int | None = Field(
        default=None, description="Accepted for kubectl compatibility; not used."
    )

    @field_validator("targetPort")
    @classmethod
    def _target_port_range(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and not 1 <= value <= 65535:
            raise ValueError("targetPort must be between 1 and 65535")
        return value


class ServiceSpec(Strict):
    ports: list[ServicePort] = Field(default_factory=list, description="Exposed ports.")
    selector: dict[str, str] = Field(
        default_factory=dict,
        description="Pod labels; meshgate resolves endpoints through EndpointSlices instead.",
    )
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = Field(
        default="ClusterIP", description="Service type; all are routed the same way."
    )
    clusterIP: str | None = Field(
        default=None, description="Accepted for kubectl compatibility; not used."
    )
    clusterIPs: list[str] = Field(
        default_factory=list, description="Accepted for kubectl compatibility; not used."
    )
    externalName: str | None = Field(
        default=None, description="DNS name for `type: ExternalName`."
    )

    @model_validator(mode="after")
    def _ports_named_when_several(self) -> ServiceSpec:
        if len(self.ports) > 1:
            for i, port in enumerate(self.ports):
                if not port.name:
                    raise FieldError(
                        ("ports", i, "name"), "required when a Service has more than one port"
                    )
        seen: dict[object, int] = {}
        for i, port in enumerate(self.ports):
            if port.name and port.name in seen:
                raise FieldError(("ports", i, "name"), f"duplicate port name {port.name!r}")
            if port.name:
                seen[port.name] = i
        return self


class Service(ResourceBase):
    """A Service: what HTTPRoute backendRefs (kind Service) point at."""

    apiVersion: Literal["v1"] = Field(description="Always `v1`.")
    kind: Literal["Service"] = Field(description="Always `Service`.")
    spec: ServiceSpec = Field(default_factory=ServiceSpec, description="Ports and selector.")


class Secret(ResourceBase):
    """A Secret; `kubernetes.io/tls` Secrets carry listener certificates."""

    apiVersion: Literal["v1"] = Field(description="Always `v1`.")
    kind: Literal["Secret"] = Field(description="Always `Secret`.")
    type: str = Field(
        default="Opaque", description="Secret type, e.g. `kubernetes.io/tls` or `Opaque`."
    )
    data: dict[str, str] = Field(
        default_factory=dict, description="Values, base64-encoded."
    )
    stringData: dict[str, str] = Field(
        default_factory=dict, description="Values as plain text; override `data` keys."
    )
    immutable: bool | None = Field(
        default=None, description="Accepted for kubectl compatibility; not used."
    )

    @model_validator(mode="after")
    def _data_is_base64(self) -> Secret:
        for key, value in self.data.items():
            try:
                base64.b64decode("".join(value.split()), validate=True)
            except (binascii.Error, ValueError):
                raise FieldError(("data", key), "value is not valid base64") from None
        if self.type == "kubernetes.io/tls":
            for key in ("tls.crt", "tls.key"):
                if key not in self.data and key not in self.stringData:
                    raise FieldError(
                        ("data",), f"a kubernetes.io/tls Secret needs {key!r}"
                    )
        return self

    def value(self, key: str) -> bytes | None:
        """The decoded value of ``key`` (stringData wins, as in Kubernetes)."""
        if key in self.stringData:
            return self.stringData[key].encode()
        if key in self.data:
            return base64.b64decode("".join(self.data[key].split()))
        return None


class ConfigMap(ResourceBase):
    """A ConfigMap; meshgate reads CA bundles (`ca.crt`) from it, e.g. for client
    certificate validation in a ClientTrafficPolicy."""

    apiVersion: Literal["v1"] = Field(description="Always `v1`.")
    kind: Literal["ConfigMap"] = Field(description="Always `ConfigMap`.")
    data: dict[str, str] = Field(default_factory=dict, description="Values as plain text.")
    binaryData: dict[str, str] = Field(
        default_factory=dict, description="Values, base64-encoded; not read by meshgate yet."
    )
    immutable: bool | None = Field(
        default=None, description="Accepted for kubectl compatibility; not used."
    )
