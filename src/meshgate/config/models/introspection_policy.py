"""``meshgate.dev/v1alpha1`` IntrospectionPolicy: OAuth2 token introspection (RFC 7662)
as an authentication method for the routes or Gateways it targets.

Opaque bearer tokens are sent to the authorization server's introspection endpoint;
an active answer authenticates the request (its fields become the request's claims),
and is cached until the token expires, within ``cacheMaxSeconds``. It runs where Envoy
Gateway would run an authentication filter: after basic auth, before JWT.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from meshgate.config.models.meta import (
    Duration,
    FieldError,
    HeaderName,
    ResourceBase,
    Strict,
)
from meshgate.config.models.policy_common import Section, TargetedSpec, positive
from meshgate.config.models.refs import SecretObjectReference


class HeaderExtractor(Strict):
    name: HeaderName = Field(description="Header that carries the token.")
    valuePrefix: str | None = Field(
        default=None,
        description="Text before the token in the value (`Bearer ` with its space); "
        "matched case-insensitively. Unset: the whole value is the token.",
    )


class TokenExtractor(Section):
    """Where the token is looked for; the first location that has one is used."""

    headers: list[HeaderExtractor] = Field(default_factory=list, description="Request headers.")
    cookies: list[str] = Field(default_factory=list, description="Cookie names.")
    params: list[str] = Field(default_factory=list, description="Query parameter names.")

    @model_validator(mode="after")
    def _some(self) -> TokenExtractor:
        if not (self.headers or self.cookies or self.params):
            raise FieldError((), "at least one of headers, cookies or params must be set")
        return self


class ClaimToHeader(Strict):
    header: HeaderName = Field(description="Request header set (replaced) with the claim's value.")
    claim: str = Field(
        min_length=1,
        description="Field of the introspection answer; a dotted path (`ext.tenant`) reaches "
        "into objects. Strings, numbers and booleans only.",
    )


class IntrospectionPolicySpec(TargetedSpec):
    """Targets, the introspection endpoint and what an active token must carry."""

    endpoint: str = Field(
        description="URL of the introspection endpoint (RFC 7662 section 2): `https://...`, "
        "verified with the system trust store. `http://` is accepted, with a warning at "
        "load time unless the host is loopback (tokens and client secret travel in clear).",
    )
    clientCredentialsRef: SecretObjectReference | None = Field(
        default=None,
        description="Secret with keys `client_id` and `client_secret`, sent as HTTP Basic "
        "authentication (RFC 6749 section 2.3.1). Unset: the call is not authenticated.",
    )
    requiredScopes: list[str] = Field(
        default_factory=list,
        description="Scopes the token must all have (in the answer's space-separated "
        "`scope`); missing one: 403 `insufficient_scope`.",
    )
    extractFrom: TokenExtractor | None = Field(
        default=None,
        description="Where the token is. Unset: the `Authorization` header, `Bearer` scheme.",
    )
    claimToHeaders: list[ClaimToHeader] = Field(
        default_factory=list,
        description="Fields of the answer copied into request headers for the upstream. "
        "A header listed here is always removed from the client's request first.",
    )
    timeout: Duration = Field(default="5s", description="Deadline of each introspection call.")
    unavailableStatus: Literal[401, 503] = Field(
        default=503,
        description="Status when the endpoint cannot answer (unreachable, timeout, not 200, "
        "not JSON): 503 says 'try later', 401 treats the token as unverified.",
    )
    cacheMaxSeconds: int = Field(
        default=300,
        ge=0,
        le=86400,
        description="Longest an active answer is reused; never past the token's `exp`. "
        "0: every request is introspected.",
    )
    cacheMaxEntries: int = Field(
        default=10000,
        ge=1,
        le=10_000_000,
        description="Tokens kept in the cache (per gateway process); least recently used go first.",
    )
    inactiveCacheSeconds: int = Field(
        default=0,
        ge=0,
        le=60,
        description="How long an inactive answer is reused. 0 (default): never, so a token "
        "issued a moment ago is not refused for a while; raise it to shield the "
        "authorization server from floods of bad tokens.",
    )

    @model_validator(mode="after")
    def _rules(self) -> IntrospectionPolicySpec:
        url = urlsplit(self.endpoint)
        if url.scheme not in ("https", "http") or not url.hostname:
            raise FieldError(("endpoint",), "must be an https:// (or http://) URL with a host")
        if url.fragment or url.username or url.password:
            raise FieldError(("endpoint",), "must not carry a fragment or user information")
        try:
            url.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise FieldError(("endpoint",), "has an invalid port") from None
        ref = self.clientCredentialsRef
        if ref is not None and (ref.group != "" or ref.kind != "Secret"):
            raise FieldError(("clientCredentialsRef",), "must refer to a Secret (group \"\", kind Secret)")
        for i, scope in enumerate(self.requiredScopes):
            if not scope or any(c.isspace() for c in scope):
                raise FieldError(("requiredScopes", i), "a scope is one non-empty word")
        positive(self.timeout, "timeout")
        return self


class IntrospectionPolicy(ResourceBase):
    """Bearer tokens checked with an OAuth2 introspection endpoint (RFC 7662)."""

    apiVersion: Literal["meshgate.dev/v1alpha1"] = Field(description="Always `meshgate.dev/v1alpha1`.")
    kind: Literal["IntrospectionPolicy"] = Field(description="Always `IntrospectionPolicy`.")
    spec: IntrospectionPolicySpec = Field(description="Targets and introspection settings.")
