"""``meshgate.dev/v1alpha1`` IntrospectionPolicy: OAuth2 token introspection (RFC 7662)
as an authentication method for the routes or Gateways it targets. Placeholder: being
built."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from meshgate.config.models.meta import ResourceBase
from meshgate.config.models.policy_common import TargetedSpec


class IntrospectionPolicySpec(TargetedSpec):
    """Targets, and (being built) the introspection endpoint and its settings."""


class IntrospectionPolicy(ResourceBase):
    """Bearer tokens checked with an OAuth2 introspection endpoint (RFC 7662)."""

    apiVersion: Literal["meshgate.dev/v1alpha1"] = Field(description="Always `meshgate.dev/v1alpha1`.")
    kind: Literal["IntrospectionPolicy"] = Field(description="Always `IntrospectionPolicy`.")
    spec: IntrospectionPolicySpec = Field(description="Targets and introspection settings.")
