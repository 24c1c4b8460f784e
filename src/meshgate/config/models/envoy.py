"""``gateway.envoyproxy.io/v1alpha1`` Backend: static ip / fqdn endpoints that an
HTTPRoute backendRef (group gateway.envoyproxy.io, kind Backend) can point at.

Envoy Gateway's api/v1alpha1/backend_types.go is the reference. Unix sockets, the
DynamicResolver type and backend TLS are not supported yet and are rejected.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from meshgate.config.models.meta import (
    PRECISE_HOSTNAME_RE,
    FieldError,
    ResourceBase,
    Strict,
)

AppProtocol = Literal["gateway.envoyproxy.io/h2c", "gateway.envoyproxy.io/ws", "gateway.envoyproxy.io/wss"]


class IPEndpoint(Strict):
    address: str = Field(description="IPv4 or IPv6 address.")
    port: int = Field(ge=0, le=65535, description="Port.")

    @field_validator("address")
    @classmethod
    def _is_ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None
        return value


class FQDNEndpoint(Strict):
    hostname: str = Field(min_length=1, max_length=253, description="DNS name, resolved by meshgate.")
    port: int = Field(ge=0, le=65535, description="Port.")

    @field_validator("hostname")
    @classmethod
    def _is_hostname(cls, value: str) -> str:
        if not PRECISE_HOSTNAME_RE.match(value):
            raise ValueError(f"{value!r} is not a valid hostname")
        return value


class BackendEndpoint(Strict):
    ip: IPEndpoint | None = Field(default=None, description="An IP endpoint.")
    fqdn: FQDNEndpoint | None = Field(default=None, description="A DNS-name endpoint.")
    unix: dict[str, Any] | None = Field(
        default=None, description="Unix domain sockets are not supported yet: rejected."
    )
    zone: str | None = Field(default=None, description="Zone of the endpoint.")

    @field_validator("unix")
    @classmethod
    def _no_unix(cls, value: dict[str, Any] | None) -> None:
        if value is not None:
            raise ValueError("unix socket endpoints are not supported by meshgate yet; use ip or fqdn")

    @model_validator(mode="after")
    def _exactly_one(self) -> BackendEndpoint:
        if self.ip is not None and self.fqdn is not None:
            raise FieldError(("fqdn",), "only one of ip or fqdn may be specified")
        if self.ip is None and self.fqdn is None:
            raise FieldError((), "one of ip or fqdn must be specified")
        return self


class BackendSpec(Strict):
    type: Literal["Endpoints"] = Field(
        default="Endpoints", description="Only Endpoints is supported (DynamicResolver is not)."
    )
    endpoints: list[BackendEndpoint] = Field(
        min_length=1, max_length=64, description="Endpoints of the backend."
    )
    appProtocols: list[AppProtocol] = Field(
        default_factory=list, description="Protocols to speak to the endpoints (h2c, ws, wss)."
    )
    fallback: bool | None = Field(
        default=None, description="Use this backend only when the primary backends are unhealthy."
    )

    @model_validator(mode="after")
    def _fqdn_not_mixed(self) -> BackendSpec:
        kinds = {e.fqdn is not None for e in self.endpoints}
        if len(kinds) > 1:
            raise FieldError(("endpoints",), "fqdn endpoints cannot be mixed with ip endpoints")
        return self


class Backend(ResourceBase):
    """Static endpoints, referenced from a backendRef with group gateway.envoyproxy.io."""

    apiVersion: Literal["gateway.envoyproxy.io/v1alpha1"] = Field(
        description="Always `gateway.envoyproxy.io/v1alpha1`."
    )
    kind: Literal["Backend"] = Field(description="Always `Backend`.")
    spec: BackendSpec = Field(description="Endpoints and protocols.")
