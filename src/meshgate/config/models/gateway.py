"""``gateway.networking.k8s.io`` Gateway: listeners (port, protocol, hostname, TLS) and
which routes may attach to them (apis/v1/gateway_types.go)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from meshgate.config.models.meta import (
    GATEWAY_GROUP,
    FieldError,
    Group,
    Hostname,
    Kind,
    LabelSelector,
    ObjectName,
    PortNumber,
    ResourceBase,
    SectionName,
    Strict,
)
from meshgate.config.models.refs import LocalObjectReference, SecretObjectReference

ListenerProtocol = Literal["HTTP", "HTTPS", "TLS", "TCP", "UDP"]


class RouteNamespaces(Strict):
    from_: Literal["All", "Same", "Selector"] = Field(
        default="Same",
        alias="from",
        description="Namespaces whose routes may attach: All, Same (the Gateway's), "
        "or Selector (namespaces whose labels match `selector`).",
    )
    selector: LabelSelector | None = Field(
        default=None, description="Namespace label selector; required with `from: Selector`."
    )

    @model_validator(mode="after")
    def _selector_with_from_selector(self) -> RouteNamespaces:
        if self.from_ == "Selector" and self.selector is None:
            raise FieldError(("selector",), "required when from is Selector")
        return self


class RouteGroupKind(Strict):
    group: Group = Field(default=GATEWAY_GROUP, description="API group of the route kind.")
    kind: Kind = Field(description="Route kind, e.g. HTTPRoute.")


class AllowedRoutes(Strict):
    namespaces: RouteNamespaces = Field(
        default_factory=RouteNamespaces,
        description="Which namespaces' routes may attach; defaults to the Gateway's own.",
    )
    kinds: list[RouteGroupKind] = Field(
        default_factory=list,
        max_length=8,
        description="Route kinds allowed; by default those matching the listener protocol.",
    )


class GatewayTLSConfig(Strict):
    mode: Literal["Terminate", "Passthrough"] = Field(
        default="Terminate", description="Terminate TLS here, or pass it through (TLS listeners)."
    )
    certificateRefs: list[SecretObjectReference] = Field(
        default_factory=list,
        max_length=64,
        description="kubernetes.io/tls Secrets with the certificate and key; the first one "
        "is served by default.",
    )
    options: dict[str, str] = Field(
        default_factory=dict, max_length=16, description="Implementation-specific TLS options."
    )


class Listener(Strict):
    name: SectionName = Field(description="Listener name, unique within the Gateway.")
    hostname: Hostname | None = Field(
        default=None,
        description="Host (and SNI) to match; `*.example.com` is a suffix match; all if unset.",
    )
    port: PortNumber = Field(description="Port to listen on.")
    protocol: ListenerProtocol = Field(description="HTTP, HTTPS, TLS, TCP or UDP.")
    tls: GatewayTLSConfig | None = Field(
        default=None, description="TLS configuration; required for HTTPS and TLS."
    )
    allowedRoutes: AllowedRoutes = Field(
        default_factory=AllowedRoutes,
        description="Routes that may attach; defaults to routes in the same namespace.",
    )

    @model_validator(mode="after")
    def _tls_fits_protocol(self) -> Listener:
        if self.protocol in ("HTTP", "TCP", "UDP") and self.tls is not None:
            raise FieldError(("tls",), f"must not be set for protocol {self.protocol}")
        if self.protocol == "HTTPS":
            if self.tls is None:
                raise FieldError(("tls",), "required for protocol HTTPS")
            if self.tls.mode != "Terminate":
                raise FieldError(("tls", "mode"), "must be Terminate for protocol HTTPS")
        if self.protocol == "TLS" and self.tls is None:
            raise FieldError(("tls",), "required for protocol TLS")
        if self.protocol in ("TCP", "UDP") and self.hostname is not None:
            raise FieldError(("hostname",), f"must not be set for protocol {self.protocol}")
        return self


class GatewaySpecAddress(Strict):
    type: str = Field(
        default="IPAddress", description="Address type: IPAddress, Hostname or a domain-prefixed type."
    )
    value: str = Field(min_length=1, max_length=253, description="The address.")


class GatewayInfrastructure(Strict):
    labels: dict[str, str] = Field(
        default_factory=dict, description="Labels for resources created for this Gateway."
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations for resources created for this Gateway."
    )
    parametersRef: LocalObjectReference | None = Field(
        default=None, description="Implementation-specific parameters."
    )


class GatewaySpec(Strict):
    gatewayClassName: ObjectName = Field(description="GatewayClass this Gateway belongs to.")
    listeners: list[Listener] = Field(
        min_length=1, max_length=64, description="Listeners: where the Gateway accepts traffic."
    )
    addresses: list[GatewaySpecAddress] = Field(
        default_factory=list, max_length=16, description="Requested addresses."
    )
    infrastructure: GatewayInfrastructure | None = Field(
        default=None, description="Infrastructure attributes (labels, annotations, parameters)."
    )

    @model_validator(mode="after")
    def _listeners_distinct(self) -> GatewaySpec:
        names: dict[str, int] = {}
        combos: dict[tuple[int, str, str | None], int] = {}
        for i, listener in enumerate(self.listeners):
            if listener.name in names:
                raise FieldError(
                    ("listeners", i, "name"),
                    f"listener name {listener.name!r} is already used by listeners[{names[listener.name]}]",
                )
            names[listener.name] = i
            combo = (listener.port, listener.protocol, listener.hostname)
            if combo in combos:
                raise FieldError(
                    ("listeners", i),
                    f"same port, protocol and hostname as listeners[{combos[combo]}]",
                )
            combos[combo] = i
        return self


class Gateway(ResourceBase):
    """A Gateway: a set of listeners that routes attach to."""

    apiVersion: Literal["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"] = (
        Field(description="gateway.networking.k8s.io/v1 (v1beta1 accepted).")
    )
    kind: Literal["Gateway"] = Field(description="Always `Gateway`.")
    spec: GatewaySpec = Field(description="Class, listeners and addresses.")
