"""Pydantic models of the config resources meshgate serves, one module per API group.

``MODELS`` maps (API group, kind) to the model class; the loader dispatches on it.
``NOT_SUPPORTED_YET`` lists kinds from DESIGN.md that are skipped with a warning for now.
"""

from __future__ import annotations

from meshgate.config.models.cache_policy import CachePolicy
from meshgate.config.models.client_traffic_policy import ClientTrafficPolicy
from meshgate.config.models.consumer import Consumer
from meshgate.config.models.core import ConfigMap, Namespace, Secret, Service
from meshgate.config.models.discovery import EndpointSlice
from meshgate.config.models.envoy import Backend
from meshgate.config.models.gateway import Gateway
from meshgate.config.models.httproute import HTTPRoute
from meshgate.config.models.introspection_policy import IntrospectionPolicy
from meshgate.config.models.meta import (
    FieldError,
    Metadata,
    ResourceBase,
    parse_duration,
)
from meshgate.config.models.plan import Plan
from meshgate.config.models.referencegrant import ReferenceGrant
from meshgate.config.models.security_policy import SecurityPolicy
from meshgate.config.models.traffic_policy import BackendTrafficPolicy
from meshgate.config.models.transform_policy import TransformPolicy
from meshgate.config.models.validation_policy import ValidationPolicy

Resource = (
    Namespace
    | Service
    | Secret
    | ConfigMap
    | EndpointSlice
    | Gateway
    | HTTPRoute
    | ReferenceGrant
    | Backend
    | BackendTrafficPolicy | SecurityPolicy | IntrospectionPolicy
    | ClientTrafficPolicy
    | Consumer
    | Plan
    | ValidationPolicy
    | CachePolicy
    | TransformPolicy
)

MODELS: dict[tuple[str, str], type[ResourceBase]] = {
    ("", "Namespace"): Namespace,
    ("", "Service"): Service,
    ("", "Secret"): Secret,
    ("", "ConfigMap"): ConfigMap,
    ("discovery.k8s.io", "EndpointSlice"): EndpointSlice,
    ("gateway.networking.k8s.io", "Gateway"): Gateway,
    ("gateway.networking.k8s.io", "HTTPRoute"): HTTPRoute,
    ("gateway.networking.k8s.io", "ReferenceGrant"): ReferenceGrant,
    ("gateway.envoyproxy.io", "Backend"): Backend,
    ("gateway.envoyproxy.io", "BackendTrafficPolicy"): BackendTrafficPolicy,
    ("gateway.envoyproxy.io", "SecurityPolicy"): SecurityPolicy,
    ("gateway.envoyproxy.io", "ClientTrafficPolicy"): ClientTrafficPolicy,
    ("meshgate.dev", "IntrospectionPolicy"): IntrospectionPolicy,
    ("meshgate.dev", "ValidationPolicy"): ValidationPolicy,
    ("meshgate.dev", "CachePolicy"): CachePolicy,
    ("meshgate.dev", "TransformPolicy"): TransformPolicy,
    ("meshgate.dev", "Consumer"): Consumer,
    ("meshgate.dev", "Plan"): Plan,
}

NOT_SUPPORTED_YET: frozenset[tuple[str, str]] = frozenset(
    {
        ("gateway.networking.k8s.io", "GRPCRoute"),
        ("gateway.networking.k8s.io", "TCPRoute"),
        ("gateway.networking.k8s.io", "TLSRoute"),
        ("gateway.networking.k8s.io", "BackendTLSPolicy"),
    }
)


def supported_versions(model: type[ResourceBase]) -> tuple[str, ...]:
    """The apiVersion values a model accepts (its Literal annotation)."""
    return tuple(model.model_fields["apiVersion"].annotation.__args__)  # type: ignore[union-attr]


__all__ = [
    "MODELS",
    "NOT_SUPPORTED_YET",
    "Backend",
    "BackendTrafficPolicy",
    "ClientTrafficPolicy",
    "ConfigMap",
    "Consumer",
    "EndpointSlice",
    "FieldError",
    "Gateway",
    "HTTPRoute",
    "IntrospectionPolicy",
    "Metadata",
    "Namespace",
    "ReferenceGrant",
    "Resource",
    "ResourceBase",
    "Secret",
    "SecurityPolicy",
    "Service",
    "parse_duration",
    "supported_versions",
]
