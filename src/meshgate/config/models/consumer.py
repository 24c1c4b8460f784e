"""``meshgate.dev/v1alpha1`` Consumer: a named caller of your APIs, with labels, and the
credentials that identify it — API-key client ids, basic-auth users and JWT identities —
and the Plan it takes (``spec.plan``: rate limits and quotas, ``models/plan.py``).

A Consumer holds no secret: it claims credentials that SecurityPolicies already verify
(the keys stay in the apiKeyAuth Secrets, the passwords in the htpasswd Secret, the
tokens with their issuer). When a policy in the Consumer's namespace authenticates a
request with one of them, the request's consumer is the Consumer's name (else the bare
client id or user name). ``filters/security/consumers.py`` indexes them per compile.

Also here: ``IdentityHeaderName``, the type of every header that carries who is calling
upstream (``consumerHeader``, ``forwardClientIDHeader``, ``forwardUsernameHeader``).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from meshgate.config.models.meta import (
    DNS_SUBDOMAIN_RE,
    FieldError,
    HeaderName,
    ResourceBase,
    Strict,
)

# Kubernetes Secret data keys (what an apiKeyAuth client id is).
CLIENT_ID_RE = re.compile(r"^[-._a-zA-Z0-9]+$")

# Headers a gateway must never fill with an identity: framing, hop-by-hop and routing
# fields. A client id written into Content-Length or Transfer-Encoding would let a
# credential holder desynchronise the upstream connection.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)


def _not_reserved(value: str) -> str:
    if value.lower() in RESERVED_HEADERS:
        raise ValueError(f"{value!r} is a framing or hop-by-hop header; choose another name")
    return value


IdentityHeaderName = Annotated[HeaderName, AfterValidator(_not_reserved)]
"""A request header meshgate sets to who is calling (the client's copy is removed)."""


def _check_client_id(value: str) -> str:
    if not CLIENT_ID_RE.match(value) or len(value) > 253:
        raise ValueError(
            f"{value!r} is not a client id (a Secret key: letters, digits, '-', '_', '.')"
        )
    return value


ClientID = Annotated[str, AfterValidator(_check_client_id)]


def _check_plan_name(value: str) -> str:
    if not DNS_SUBDOMAIN_RE.match(value) or len(value) > 253:
        raise ValueError(f"{value!r} is not a resource name")
    return value


def _check_username(value: str) -> str:
    if not value or ":" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("a user name is not empty and has no ':' and no control characters")
    return value


class ConsumerAPIKey(Strict):
    clientID: ClientID = Field(
        description="A client id (a key of an apiKeyAuth credential Secret) used by "
        "SecurityPolicies in this namespace; requests with its API key belong to this Consumer."
    )


class ConsumerBasicAuthUser(Strict):
    username: Annotated[str, AfterValidator(_check_username)] = Field(
        description="A user of a basicAuth htpasswd Secret used by SecurityPolicies in this namespace."
    )


class ConsumerClaim(Strict):
    name: str = Field(min_length=1, description="Claim name, e.g. `client_id` or `azp`.")
    value: str = Field(
        description="The claim's value, compared as a string; a list claim matches when it contains it."
    )


class ConsumerJWT(Strict):
    issuer: str = Field(min_length=1, description="The token's `iss`, exactly as the provider writes it.")
    subject: str | None = Field(default=None, description="The token's `sub`. Set this or `claim`.")
    claim: ConsumerClaim | None = Field(
        default=None, description="Another claim that names this consumer. Set this or `subject`."
    )

    @model_validator(mode="after")
    def _one_of(self) -> ConsumerJWT:
        if (self.subject is None) == (self.claim is None):
            raise FieldError((), "exactly one of subject or claim must be set")
        return self


class ConsumerPlanRef(Strict):
    name: Annotated[str, AfterValidator(_check_plan_name)] = Field(
        description="The name of a Plan in this Consumer's namespace."
    )


class ConsumerSpec(Strict):
    apiKeys: list[ConsumerAPIKey] = Field(
        default_factory=list, description="API-key client ids this Consumer owns."
    )
    basicAuth: list[ConsumerBasicAuthUser] = Field(
        default_factory=list, description="Basic-auth users this Consumer owns."
    )
    jwt: list[ConsumerJWT] = Field(
        default_factory=list, description="JWT identities (issuer + subject, or issuer + claim)."
    )
    plan: ConsumerPlanRef | None = Field(
        default=None,
        description="The Plan (rate limits and quotas) this Consumer takes; none: no limits "
        "of its own, usage is still counted.",
    )


class Consumer(ResourceBase):
    """A named API consumer and the credentials that identify it (meshgate extension)."""

    apiVersion: Literal["meshgate.dev/v1alpha1"] = Field(description="Always `meshgate.dev/v1alpha1`.")
    kind: Literal["Consumer"] = Field(description="Always `Consumer`.")
    spec: ConsumerSpec = Field(
        default_factory=ConsumerSpec, description="The credentials that identify this consumer."
    )
