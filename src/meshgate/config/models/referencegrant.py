"""``gateway.networking.k8s.io`` ReferenceGrant: lets resources in other namespaces refer
to resources in this one (apis/v1beta1/referencegrant_types.go)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from meshgate.config.models.meta import (
    Group,
    Kind,
    Namespace,
    ObjectName,
    ResourceBase,
    Strict,
)


class ReferenceGrantFrom(Strict):
    group: Group = Field(description="API group of the referring kind (gateway.networking.k8s.io for routes).")
    kind: Kind = Field(description="Referring kind, e.g. HTTPRoute or Gateway.")
    namespace: Namespace = Field(description="Namespace of the referring resources.")


class ReferenceGrantTo(Strict):
    group: Group = Field(description="API group of the referent (`\"\"` for Service and Secret).")
    kind: Kind = Field(description="Referent kind, e.g. Service or Secret.")
    name: ObjectName | None = Field(
        default=None, description="Referent name; all of that kind in this namespace if unset."
    )


class ReferenceGrantSpec(Strict):
    from_: list[ReferenceGrantFrom] = Field(
        alias="from", min_length=1, max_length=16, description="Who may refer."
    )
    to: list[ReferenceGrantTo] = Field(
        min_length=1, max_length=16, description="What they may refer to, in this namespace."
    )


class ReferenceGrant(ResourceBase):
    """Allows the references in `from` to the resources in `to` (this namespace)."""

    apiVersion: Literal[
        "gateway.networking.k8s.io/v1",
        "gateway.networking.k8s.io/v1beta1",
        "gateway.networking.k8s.io/v1alpha2",
    ] = Field(description="gateway.networking.k8s.io/v1beta1 (v1 and v1alpha2 accepted).")
    kind: Literal["ReferenceGrant"] = Field(description="Always `ReferenceGrant`.")
    spec: ReferenceGrantSpec = Field(description="Who may refer to what.")
