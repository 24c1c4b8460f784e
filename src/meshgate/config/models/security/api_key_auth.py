"""SecurityPolicy ``apiKeyAuth`` section (gateway.envoyproxy.io/v1alpha1): API keys from
Secrets, with Envoy Gateway's fields and rules (api_key_auth_types.go)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from meshgate.config.models.consumer import IdentityHeaderName
from meshgate.config.models.meta import FieldError, HeaderName, Strict
from meshgate.config.models.policy_common import Section
from meshgate.config.models.refs import SecretObjectReference

_Name = Annotated[str, Field(min_length=1)]


def check_secret_ref(ref: SecretObjectReference, where: tuple) -> None:
    """A credential reference names a core Secret (Envoy Gateway allows nothing else)."""
    if ref.group != "":
        raise FieldError((*where, "group"), 'must be "" (core): credentials live in Secrets')
    if ref.kind != "Secret":
        raise FieldError((*where, "kind"), "must be Secret")


class ExtractFrom(Strict):
    """Where a request carries its key; exactly one of headers, params or cookies."""

    headers: list[HeaderName] | None = Field(
        default=None,
        min_length=1,
        description="Header names, tried in order. A value starting with `Bearer ` counts without it.",
    )
    params: list[_Name] | None = Field(
        default=None, min_length=1, description="Query parameter names, tried in order (percent-decoded)."
    )
    cookies: list[_Name] | None = Field(
        default=None, min_length=1, description="Cookie names, tried in order."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ExtractFrom:
        if sum(x is not None for x in (self.headers, self.params, self.cookies)) != 1:
            raise FieldError((), "exactly one of headers, params, or cookies must be specified")
        return self


class APIKeyAuth(Section):
    """API keys: each credential Secret maps client ids to keys (`data: {client-id: key}`)."""

    credentialRefs: list[SecretObjectReference] = Field(
        min_length=1,
        description="Opaque Secrets whose data maps each client id to its API key. A client id "
        "found in several Secrets keeps the first one's key; one key for two client ids is an error.",
    )
    extractFrom: list[ExtractFrom] = Field(
        min_length=1,
        description="Where to look for the key, in order; the first place that has a non-empty key is used.",
    )
    forwardClientIDHeader: IdentityHeaderName | None = Field(
        default=None,
        description="A request header set to the authenticated client id upstream; a copy the "
        "client sent is always removed. Unset: the client id is not forwarded.",
    )
    sanitize: bool | None = Field(
        default=None,
        description="Remove the key from the request forwarded upstream (every configured header, "
        "query parameter and cookie). Default false.",
    )

    @model_validator(mode="after")
    def _refs(self) -> APIKeyAuth:
        for i, ref in enumerate(self.credentialRefs):
            check_secret_ref(ref, ("credentialRefs", i))
        return self
