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

# Filter stages in Envoy Gateway's order: (stage, builder module). A stage is a
# SecurityPolicy section, or meshgate's IntrospectionPolicy (``oauth2Introspection``);
# ``consumerHeader`` puts the authenticated consumer in a request header upstream.
STAGES = (
    ("cors", "meshgate.filters.security.cors"),
    ("extAuth", "meshgate.filters.security.ext_auth"),
    ("apiKeyAuth", "meshgate.filters.security.api_key_auth"),
    ("basicAuth", "meshgate.filters.security.basic_auth"),
    ("oauth2Introspection", "meshgate.filters.security.introspection"),
    ("jwt", "meshgate.filters.security.jwt"),
    ("consumerHeader", "meshgate.filters.security.consumer_header"),
    ("authorization", "meshgate.filters.security.authorization"),
)
_ORDER = {stage: i for i, (stage, _) in enumerate(STAGES)}
_BUILDERS = dict(STAGES)


@dataclass(frozen=True, slots=True)
class CompiledSecurity:
    key: str  # "namespace/name" of the policy (policies, joined with "+")
    stages: tuple[tuple[str, tuple[Filter, ...]], ...]  # (stage, filters), in STAGES order

    @property
    def filters(self) -> tuple[Filter, ...]:
        return tuple(f for _, fs in self.stages for f in fs)


def build_stage(stage: str, section: Any, refs: PolicyRefs) -> tuple[Filter, ...]:
    return tuple(importlib.import_module(_BUILDERS[stage]).build(section, refs))


class SecurityPolicies(PolicyIndex):
    """Every SecurityPolicy of a compile, built and attached."""

    kind = KIND

    def __init__(self, inputs: Inputs, resolver: BackendResolver, errors: ErrorSink, consumers: Any) -> None:
        self.resolver = resolver
        self.errors = errors
        self.consumers = consumers
        super().__init__(inputs)

    def refs(self, res: LoadedResource) -> PolicyRefs:
        return PolicyRefs(res, self.inputs, self.resolver, self.errors, consumers=self.consumers)

    def compile(self, key: str, res: LoadedResource) -> CompiledSecurity:
        spec = res.obj.spec
        refs = self.refs(res)
        stages = []
        for stage, _ in STAGES:
            section = getattr(spec, stage, None)
            if section is not None:
                stages.append((stage, build_stage(stage, section, refs.under(stage))))
        return CompiledSecurity(key, tuple(stages))


class IntrospectionPolicies(SecurityPolicies):
    """Every IntrospectionPolicy (meshgate.dev): one ``oauth2Introspection`` stage."""

    kind = "IntrospectionPolicy"

    def refs(self, res: LoadedResource) -> PolicyRefs:
        return PolicyRefs(
            res, self.inputs, self.resolver, self.errors, group="meshgate.dev", consumers=self.consumers
        )

    def compile(self, key: str, res: LoadedResource) -> CompiledSecurity:
        filters = build_stage("oauth2Introspection", res.obj.spec, self.refs(res))
        return CompiledSecurity(key, (("oauth2Introspection", filters),))


class SecurityGuards:
    """The security in front of each rule: its SecurityPolicy and its IntrospectionPolicy
    (each the most specific of its kind), their stages merged in STAGES order."""

    def __init__(self, inputs: Inputs, resolver: BackendResolver, errors: ErrorSink) -> None:
        from meshgate.filters.security.consumers import ConsumerIndex

        consumers = ConsumerIndex(inputs, errors)
        self.policies = SecurityPolicies(inputs, resolver, errors, consumers)
        self.introspection = IntrospectionPolicies(inputs, resolver, errors, consumers)
        self._merged: dict[tuple[str, str], CompiledSecurity] = {}

    def for_rule(
        self, route_ns: str, route: str, rule_name: str | None, gateway: str, listener: str
    ) -> CompiledSecurity | None:
        found = [
            index.for_rule(route_ns, route, rule_name, gateway, listener)
            for index in (self.policies, self.introspection)
        ]
        found = [g for g in found if g is not None]
        if len(found) < 2:
            return found[0] if found else None
        sp, ip = found
        merged = self._merged.get((sp.key, ip.key))
        if merged is None:
            stages = sorted(sp.stages + ip.stages, key=lambda s: _ORDER[s[0]])
            merged = CompiledSecurity(f"{sp.key}+{ip.key}", tuple(stages))
            self._merged[(sp.key, ip.key)] = merged
        return merged

    def dump(self) -> dict[str, Any]:
        return {"SecurityPolicy": self.policies.dump(), "IntrospectionPolicy": self.introspection.dump()}
