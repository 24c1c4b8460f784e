"""``discovery.k8s.io/v1`` EndpointSlice: static endpoints of a Service.

A slice belongs to the Service named by its ``kubernetes.io/service-name`` label in the
same namespace (standard Kubernetes semantics). Like Kubernetes, the slice has no
``spec``: ``addressType``, ``endpoints`` and ``ports`` are top-level.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, model_validator

from meshgate.config.models.meta import FieldError, ResourceBase, Strict

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class EndpointConditions(Strict):
    ready: bool | None = Field(
        default=None, description="Ready to receive traffic; unset means ready."
    )
    serving: bool | None = Field(
        default=None, description="Serving (may be true while terminating); unset means ready."
    )
    terminating: bool | None = Field(
        default=None, description="Terminating; unset means not terminating."
    )


class ObjectReference(Strict):
    apiVersion: str | None = Field(default=None, description="Accepted; not used.")
    kind: str | None = Field(default=None, description="Accepted; not used.")
    namespace: str | None = Field(default=None, description="Accepted; not used.")
    name: str | None = Field(default=None, description="Accepted; not used.")
    uid: str | None = Field(default=None, description="Accepted; not used.")
    resourceVersion: str | None = Field(default=None, description="Accepted; not used.")
    fieldPath: str | None = Field(default=None, description="Accepted; not used.")


class Endpoint(Strict):
    addresses: list[str] = Field(
        min_length=1, max_length=100, description="Addresses of this endpoint (the first is used)."
    )
    conditions: EndpointConditions = Field(
        default_factory=EndpointConditions, description="Readiness of the endpoint."
    )
    hostname: str | None = Field(default=None, description="Accepted; not used.")
    nodeName: str | None = Field(default=None, description="Accepted; not used.")
    zone: str | None = Field(default=None, description="Zone, for zone-aware balancing.")
    targetRef: ObjectReference | None = Field(
        default=None, description="Accepted for kubectl compatibility; not used."
    )

    @property
    def is_ready(self) -> bool:
        # Kubernetes: a nil `ready` is interpreted as ready.
        return self.conditions.ready is not False


class EndpointPort(Strict):
    name: str | None = Field(
        default=None, description="Name of the Service port (targetPort name) this maps."
    )
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Port number on the endpoints."
    )
    protocol: Literal["TCP", "UDP", "SCTP"] = Field(default="TCP", description="L4 protocol.")
    appProtocol: str | None = Field(default=None, description="Application protocol.")


class EndpointSlice(ResourceBase):
    """Static endpoints for the Service in label `kubernetes.io/service-name`."""

    apiVersion: Literal["discovery.k8s.io/v1"] = Field(description="Always `discovery.k8s.io/v1`.")
    kind: Literal["EndpointSlice"] = Field(description="Always `EndpointSlice`.")
    addressType: Literal["IPv4", "IPv6", "FQDN"] = Field(
        description="Type of every address in `endpoints`."
    )
    endpoints: list[Endpoint] = Field(
        default_factory=list, max_length=1000, description="The endpoints."
    )
    ports: list[EndpointPort] = Field(
        default_factory=list, max_length=100, description="Ports every endpoint serves."
    )

    @model_validator(mode="after")
    def _addresses_match_type(self) -> EndpointSlice:
        if self.addressType == "FQDN":
            return self
        version = 4 if self.addressType == "IPv4" else 6
        for i, endpoint in enumerate(self.endpoints):
            for j, address in enumerate(endpoint.addresses):
                try:
                    ok = ipaddress.ip_address(address).version == version
                except ValueError:
                    ok = False
                if not ok:
                    raise FieldError(
                        ("endpoints", i, "addresses", j),
                        f"{address!r} is not an {self.addressType} address",
                    )
        return self

    @property
    def service_name(self) -> str | None:
        return self.metadata.labels.get(SERVICE_NAME_LABEL)
