"""Gateway API object references shared by several kinds (apis/v1/object_reference_types.go
and shared_types.go): parent, backend, secret and local references."""

from __future__ import annotations

from pydantic import Field, model_validator

from meshgate.config.models.meta import (
    GATEWAY_GROUP,
    FieldError,
    Group,
    Kind,
    Namespace,
    ObjectName,
    PortNumber,
    SectionName,
    Strict,
)


class LocalObjectReference(Strict):
    group: Group = Field(description="API group of the referent (`\"\"` for core).")
    kind: Kind = Field(description="Kind of the referent.")
    name: ObjectName = Field(description="Name of the referent, in the same namespace.")


class SecretObjectReference(Strict):
    group: Group = Field(default="", description="API group; `\"\"` (core) for a Secret.")
    kind: Kind = Field(default="Secret", description="Kind of the referent.")
    name: ObjectName = Field(description="Name of the referent.")
    namespace: Namespace | None = Field(
        default=None,
        description="Namespace of the referent; defaults to the referrer's. "
        "Cross-namespace references need a ReferenceGrant.",
    )


class BackendObjectReference(Strict):
    group: Group = Field(default="", description="API group; `\"\"` (core) for a Service.")
    kind: Kind = Field(
        default="Service",
        description="Kind of the backend: `Service`, or `Backend` (gateway.envoyproxy.io).",
    )
    name: ObjectName = Field(description="Name of the backend.")
    namespace: Namespace | None = Field(
        default=None,
        description="Namespace of the backend; defaults to the route's. "
        "Cross-namespace references need a ReferenceGrant.",
    )
    port: PortNumber | None = Field(
        default=None, description="Destination port; required when the referent is a Service."
    )

    @model_validator(mode="after")
    def _service_needs_port(self):
        if self.group == "" and self.kind == "Service" and self.port is None:
            raise FieldError(("port",), "required when referring to a Service")
        return self


class ParentReference(Strict):
    group: Group = Field(
        default=GATEWAY_GROUP,
        description="API group of the parent: gateway.networking.k8s.io, or `\"\"` for a Service (GAMMA).",
    )
    kind: Kind = Field(default="Gateway", description="Kind of the parent: `Gateway` or `Service`.")
    namespace: Namespace | None = Field(
        default=None, description="Namespace of the parent; defaults to the route's."
    )
    name: ObjectName = Field(description="Name of the parent.")
    sectionName: SectionName | None = Field(
        default=None,
        description="Listener name (Gateway) or port name (Service) to attach to; all if unset.",
    )
    port: PortNumber | None = Field(
        default=None, description="Attach only to listeners on this port; all if unset."
    )
