"""``gateway.envoyproxy.io/v1alpha1`` SecurityPolicy: who may call the routes (or
Gateways) it targets — CORS, external authorization, API keys, basic auth, JWT and
authorization rules — with Envoy Gateway's field names and semantics.

Envoy Gateway's api/v1alpha1 Go types are the reference (securitypolicy_types.go and
the per-feature files). Each section's model lives in ``models/security/``; fields
Envoy Gateway has and meshgate does not serve yet are declared so that setting one says
so by name.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from meshgate.config.models.consumer import IdentityHeaderName
from meshgate.config.models.meta import ResourceBase
from meshgate.config.models.policy_common import TargetedSpec, not_supported
from meshgate.config.models.security.api_key_auth import APIKeyAuth
from meshgate.config.models.security.authorization import Authorization
from meshgate.config.models.security.basic_auth import BasicAuth
from meshgate.config.models.security.cors import CORS
from meshgate.config.models.security.ext_auth import ExtAuth
from meshgate.config.models.security.jwt import JWT


class SecurityPolicySpec(TargetedSpec):
    cors: CORS | None = Field(
        default=None, description="Cross-origin resource sharing; preflights answered at the gateway."
    )
    extAuth: ExtAuth | None = Field(
        default=None, description="An external HTTP authorization service decides each request."
    )
    apiKeyAuth: APIKeyAuth | None = Field(default=None, description="API keys from Secrets.")
    basicAuth: BasicAuth | None = Field(default=None, description="Users from an htpasswd Secret.")
    jwt: JWT | None = Field(default=None, description="JSON Web Token authentication.")
    authorization: Authorization | None = Field(
        default=None, description="Allow / deny rules on client address, JWT claims, headers and consumer."
    )
    consumerHeader: IdentityHeaderName | None = Field(
        default=None,
        description="meshgate extension (not in Envoy Gateway): a request header set upstream to the "
        "authenticated consumer (its Consumer name, else the API-key client id or basic-auth user). "
        "A copy the client sent is always removed, also when no one was authenticated.",
    )
    oidc: Any = not_supported()
    targetSelectors: Any = not_supported()


class SecurityPolicy(ResourceBase):
    """Authentication and authorization for the routes or Gateways it targets."""

    apiVersion: Literal["gateway.envoyproxy.io/v1alpha1"] = Field(
        description="Always `gateway.envoyproxy.io/v1alpha1`."
    )
    kind: Literal["SecurityPolicy"] = Field(description="Always `SecurityPolicy`.")
    spec: SecurityPolicySpec = Field(description="Targets and security settings.")
