"""SecurityPolicy ``authorization`` section (gateway.envoyproxy.io/v1alpha1, Envoy
Gateway's authorization_types.go): ordered Allow / Deny rules on who is calling.

The first rule whose operation and principal both match decides; when none does,
``defaultAction`` does (Deny when unset). Within a principal every field that is given
must match; inside one field a list is "any of" (clientCIDRs, header values, claim
values, consumers), except that every header, every claim and every scope listed must
match. ``consumers`` is meshgate's extension: the Consumer (or API-key client id, or
basic-auth user) that authentication put on the request.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from meshgate.config.models.httproute import HTTPMethod
from meshgate.config.models.meta import FieldError, HeaderName, Strict
from meshgate.config.models.policy_common import Section, not_supported

AuthorizationAction = Literal["Allow", "Deny"]


def _check_cidr(value: str) -> str:
    # Envoy Gateway's CIDR pattern wants a prefix length; host bits may be set
    # (Go's net.ParseCIDR keeps the network), as with ipaddress strict=False.
    try:
        if "/" not in value:
            raise ValueError
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a CIDR (examples: 192.168.1.0/24, 2001:db8::/64)"
        ) from None
    return value


CIDR = Annotated[str, AfterValidator(_check_cidr)]
Name253 = Annotated[str, Field(min_length=1, max_length=253)]


class Operation(Section):
    """What the request does."""

    methods: list[HTTPMethod] = Field(
        min_length=1, max_length=16, description="HTTP methods; the rule matches any of them."
    )
    path: Any = not_supported()


class JWTClaim(Strict):
    name: Name253 = Field(
        description="Claim name; a nested claim is a dotted path (`organization.department`)."
    )
    valueType: Literal["String", "StringArray"] = Field(
        default="String",
        description="`String`: the claim is a string equal to one of the values. "
        "`StringArray`: the claim is a list holding one of the values.",
    )
    values: list[str] = Field(
        min_length=1, max_length=16, description="Accepted values; any one of them matches."
    )


class JWTPrincipal(Strict):
    """Claims of the verified token (``jwt`` or IntrospectionPolicy); all listed must match."""

    provider: Name253 = Field(
        description="The JWT provider that verified the token; must be one of this "
        "SecurityPolicy's jwt providers when it lists them."
    )
    claims: list[JWTClaim] | None = Field(
        default=None, min_length=1, max_length=16, description="Claims; every one must match."
    )
    scopes: list[Name253] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description="Scopes the token must all carry, read from the `scope` claim "
        "(space-separated string or list), else from `scp`.",
    )

    @model_validator(mode="after")
    def _claims_or_scopes(self) -> JWTPrincipal:
        if not self.claims and not self.scopes:
            raise FieldError((), "at least one of claims or scopes must be specified")
        return self


class AuthorizationHeaderMatch(Strict):
    name: HeaderName = Field(description="Header name, case-insensitive.")
    values: list[str] = Field(
        min_length=1,
        max_length=256,
        description="Exact values; any one matches (repeated fields are joined with `,` first, as Envoy does).",
    )


class Principal(Section):
    """Who is calling. Every field given must match."""

    clientCIDRs: list[CIDR] | None = Field(
        default=None,
        min_length=1,
        description="Client address ranges (IPv4 or IPv6); any one matches. The client "
        "address is the one ClientTrafficPolicy's client IP detection settles on.",
    )
    jwt: JWTPrincipal | None = Field(
        default=None, description="Claims and scopes of the verified token; no token, no match."
    )
    headers: list[AuthorizationHeaderMatch] | None = Field(
        default=None, min_length=1, max_length=256, description="Request headers; every one must match."
    )
    consumers: list[Name253] | None = Field(
        default=None,
        min_length=1,
        description="meshgate extension: the authenticated consumer (Consumer name, API-key "
        "client id or basic-auth user); any one matches. No consumer, no match.",
    )
    clientIPGeoLocations: Any = not_supported()

    @model_validator(mode="after")
    def _not_empty(self) -> Principal:
        if not (self.clientCIDRs or self.jwt or self.headers or self.consumers):
            raise FieldError((), "at least one of clientCIDRs, jwt, headers or consumers must be specified")
        return self


class AuthorizationRule(Section):
    name: Name253 | None = Field(
        default=None, description="A name for logs and /config_dump (`rule-<index>` if unset)."
    )
    action: AuthorizationAction = Field(description="`Allow` or `Deny` when the rule matches.")
    operation: Operation | None = Field(
        default=None, description="The request's method; any operation when unset."
    )
    principal: Principal | None = Field(
        default=None, description="The caller; any caller when unset."
    )


class Authorization(Section):
    """Ordered allow / deny rules, evaluated after authentication."""

    rules: list[AuthorizationRule] = Field(
        default_factory=list, description="Evaluated in order; the first matching rule decides."
    )
    defaultAction: AuthorizationAction | None = Field(
        default=None, description="What happens when no rule matches: Deny when unset."
    )
