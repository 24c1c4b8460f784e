"""SecurityPolicy `jwt` section (gateway.envoyproxy.io/v1alpha1): JSON Web Token
authentication with Envoy Gateway's field names and semantics (api/v1alpha1/jwt_types.go).

The filter is ``filters/security/jwt.py``; JWKS documents are parsed there, at compile,
since a JWKS may come from a ConfigMap. Here: shapes, limits and Envoy Gateway's CEL
rules, each failure reported at the field that caused it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from meshgate.config.models.meta import (
    Duration,
    FieldError,
    HeaderName,
    Strict,
    parse_duration,
)
from meshgate.config.models.policy_common import Section, not_supported
from meshgate.config.models.refs import LocalObjectReference

# Request headers a claim may not be copied into: the token's own carrier and the
# fields that frame or route the request.
FORBIDDEN_CLAIM_HEADERS = frozenset(
    {
        "host",
        "authorization",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "cookie",
        "expect",
    }
)

Text253 = Annotated[str, Field(min_length=1, max_length=253)]


class RemoteJWKS(Section):
    uri: Text253 = Field(
        description="HTTPS (or, for a local key server, HTTP) URI of the JSON Web Key Set. "
        "meshgate fetches it itself, in the background, before the config takes traffic; the "
        "server certificate is checked against the system trust store. Redirects are not followed."
    )
    cacheDuration: Duration = Field(
        default="300s",
        description="How long fetched keys are used before they are fetched again (Envoy Gateway's "
        "default, 5 minutes). meshgate refetches at 80% of it, keeps the last good keys while the "
        "endpoint is down, and refetches at most once per 10 s when a token names an unknown `kid`.",
    )
    backendRef: Any = Field(
        default=None,
        description="Deprecated in Envoy Gateway: rejected (\"BackendRefs must be used, backendRef is not "
        "supported.\").",
        json_schema_extra={"unsupported": True},
    )
    backendRefs: Any = not_supported()
    backendSettings: Any = not_supported()

    @model_validator(mode="after")
    def _check(self) -> RemoteJWKS:
        parts = urlsplit(self.uri)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise FieldError(("uri",), f"{self.uri!r} is not an http(s) URI with a host")
        if parts.username is not None or parts.password is not None:
            raise FieldError(("uri",), "credentials in the JWKS URI are not supported")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise FieldError(("uri",), str(exc)) from None
        if parse_duration(self.cacheDuration) < 1:
            raise FieldError(("cacheDuration",), "must be at least 1s")
        return self


class LocalJWKS(Strict):
    type: Literal["Inline", "ValueRef"] = Field(
        default="Inline", description="Where the key set is: `Inline` (in `inline`) or `ValueRef` (a ConfigMap)."
    )
    inline: str | None = Field(default=None, description="The JSON Web Key Set, as a JSON document.")
    valueRef: LocalObjectReference | None = Field(
        default=None,
        description="A ConfigMap in the policy's namespace holding the key set: its key `jwks`, "
        "or its first value when there is no such key.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> LocalJWKS:
        # Envoy Gateway's CEL: exactly one of inline or valueRef, matching type.
        ok = (self.type == "Inline" and self.inline is not None and self.valueRef is None) or (
            self.type == "ValueRef" and self.inline is None and self.valueRef is not None
        )
        if not ok:
            raise FieldError((), "Exactly one of inline or valueRef must be set with correct type.")
        if self.valueRef is not None and (self.valueRef.group, self.valueRef.kind) != ("", "ConfigMap"):
            raise FieldError(("valueRef",), "valueRef must name a ConfigMap (group \"\", kind ConfigMap)")
        return self


class ClaimToHeader(Strict):
    header: HeaderName = Field(
        description="Request header the claim is copied into. Any copy the client sent is removed "
        "first, on every request, so it cannot be forged."
    )
    claim: Annotated[str, Field(min_length=1)] = Field(
        description="The claim: a name (`sub`) or a dotted path into nested objects (`org.team`). "
        "Strings, numbers and booleans are copied; a list of them is joined with commas; "
        "objects are skipped."
    )


class JWTHeaderExtractor(Strict):
    name: HeaderName = Field(description="Request header holding the token.")
    valuePrefix: str | None = Field(
        default=None,
        description="Text before the token in the header value, e.g. `\"Bearer \"` (compared "
        "ignoring case); a value without it carries no token.",
    )


class JWTExtractor(Strict):
    headers: list[JWTHeaderExtractor] = Field(
        default_factory=list, description="Request headers to take the token from."
    )
    cookies: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="Cookie names to take the token from."
    )
    params: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="Query parameters to take the token from."
    )


class JWTProvider(Strict):
    name: Text253 = Field(description="Name of the provider, unique in the policy.")
    issuer: Annotated[str, Field(max_length=253)] | None = Field(
        default=None,
        description="Required `iss` of the token (a URL or an e-mail address). Unset: not checked.",
    )
    audiences: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="Allowed audiences: the token's `aud` must contain one of them (403 otherwise, "
        "as in Envoy). Empty: not checked.",
    )
    remoteJWKS: RemoteJWKS | None = Field(
        default=None, description="Fetch the keys from an HTTP(S) endpoint. One of remoteJWKS or localJWKS."
    )
    localJWKS: LocalJWKS | None = Field(
        default=None, description="Keys given in the config, inline or in a ConfigMap. One of remoteJWKS or localJWKS."
    )
    claimToHeaders: list[ClaimToHeader] = Field(
        default_factory=list, description="Claims copied into request headers sent upstream."
    )
    recomputeRoute: bool | None = Field(
        default=None,
        description="Route again after claimToHeaders: not supported by meshgate yet (`true` is an error).",
    )
    extractFrom: JWTExtractor | None = Field(
        default=None,
        description="Where the token is. Unset (or empty): `Authorization: Bearer <token>` or the "
        "`access_token` query parameter, as in Envoy.",
    )

    @model_validator(mode="after")
    def _check(self) -> JWTProvider:
        if self.recomputeRoute and not self.claimToHeaders:
            raise FieldError((), "claimToHeaders must be specified if recomputeRoute is enabled.")
        if self.recomputeRoute:
            raise FieldError(("recomputeRoute",), "recomputeRoute is not supported by meshgate yet")
        if self.remoteJWKS is None and self.localJWKS is None:
            raise FieldError((), "either remoteJWKS or localJWKS must be specified.")
        if self.remoteJWKS is not None and self.localJWKS is not None:
            raise FieldError((), "remoteJWKS and localJWKS cannot both be specified.")
        carriers = {h.name.lower() for h in self.extractFrom.headers} if self.extractFrom else set()
        seen: set[str] = set()
        for i, c in enumerate(self.claimToHeaders):
            name = c.header.lower()
            if name in FORBIDDEN_CLAIM_HEADERS or name in carriers:
                raise FieldError(("claimToHeaders", i, "header"), f"a claim cannot be copied into {c.header}")
            if name in seen:
                raise FieldError(("claimToHeaders", i, "header"), f"{c.header} is set by another claim")
            seen.add(name)
        return self


class JWT(Strict):
    """JSON Web Token authentication: a request must carry a token that one of the
    providers verifies (Envoy's `requires_any`)."""

    optional: bool | None = Field(
        default=None,
        description="A request without a token is let through (unauthenticated). A request with "
        "an invalid token is still refused. Default false.",
    )
    providers: list[JWTProvider] = Field(
        min_length=1,
        max_length=4,
        description="Token issuers and their keys. A token is accepted when any provider verifies it.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> JWT:
        seen: set[str] = set()
        for i, p in enumerate(self.providers):
            if p.name in seen:
                raise FieldError(("providers", i, "name"), f"provider name {p.name!r} is used twice")
            seen.add(p.name)
        return self
