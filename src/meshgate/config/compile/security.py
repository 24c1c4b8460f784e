"""SecurityPolicy: each policy compiled once into its filters, attached to its targets
(``attachment.PolicyIndex``: the most specific policy wins, whole), and put in front
of the rule's own filters.

The filters run in Envoy Gateway's order (its HTTP filter chain): CORS first, so a
preflight is answered without credentials; then external authorization, API keys,
basic auth, JWT; authorization last, since its rules read what authentication found
(consumer, claims). Each section's filter is built by ``filters/security/<section>.py``
from the validated model and the references it resolves through ``PolicyRefs``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meshgate.config.compile.attachment import PolicyIndex
from meshgate.config.compile.refs import PolicyRefs

if TYPE_CHECKING:
    from meshgate.config.compile.backends import BackendResolver
    from meshgate.config.compile.inputs import ErrorSink, Inputs
    from meshgate.config.loader import LoadedResource
    from meshgate.filters.base import Filter

KIND = "SecurityPolicy"

# (spec field, builder module), in filter order.
SECTIONS = (
    ("cors", "meshgate.filters.security.cors"),
    ("extAuth", "meshgate.filters.security.ext_auth"),
    ("apiKeyAuth", "meshgate.filters.security.api_key_auth"),
    ("basicAuth", "meshgate.filters.security.basic_auth"),
    ("jwt", "meshgate.filters.security.jwt"),
    ("authorization", "meshgate.filters.security.authorization"),
)


@dataclass(frozen=True, slots=True)
class CompiledSecurity:
    key: str  # "namespace/name" of the policy
    filters: tuple[Filter, ...]


def build_filters(res: LoadedResource, refs: PolicyRefs) -> tuple[Filter, ...]:
    spec = res.obj.spec
    filters: list[Filter] = []
    for field, module in SECTIONS:
        section = getattr(spec, field, None)
        if section is None:
            continue
        builder = importlib.import_module(module).build
        filters.extend(builder(section, refs.under(field)))
    return tuple(filters)


class SecurityPolicies(PolicyIndex):
    """Every SecurityPolicy of a compile, built and attached."""

    kind = KIND

    def __init__(
        self, inputs: Inputs, resolver: BackendResolver, errors: ErrorSink, consumers: Any = None
    ) -> None:
        self.resolver = resolver
        self.errors = errors
        self.consumers = consumers
        super().__init__(inputs)

    def compile(self, key: str, res: LoadedResource) -> CompiledSecurity:
        refs = PolicyRefs(res, self.inputs, self.resolver, self.errors, consumers=self.consumers)
        return CompiledSecurity(key, build_filters(res, refs))
