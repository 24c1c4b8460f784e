"""SecurityPolicy: each policy compiled once into its filters, attached to its targets
(``attachment.PolicyIndex``: the most specific policy wins, whole), and put in front
of the rule's own filters.

The filters run in Envoy Gateway's order (its HTTP filter chain): CORS first, so a
preflight is answered without credentials; then external authorization, API keys,
basic auth, JWT; authorization last, since its rules read what authentication found
(consumer, claims); a Consumer's Plan after them (``plans``). Each section's filter is built by ``filters/security/<section>.py``
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
# SecurityPolicy section, or a meshgate.dev kind (IntrospectionPolicy is the
# ``oauth2Introspection`` stage); ``consumerHeader`` puts the authenticated consumer in
# a request header upstream.
STAGES = (
    ("cors", "meshgate.filters.security.cors"),
    ("extAuth", "meshgate.filters.security.ext_auth"),
    ("apiKeyAuth", "meshgate.filters.security.api_key_auth"),
    ("basicAuth", "meshgate.filters.security.basic_auth"),
    ("oauth2Introspection", "meshgate.filters.security.introspection"),
    ("jwt", "meshgate.filters.security.jwt"),
    ("consumerHeader", "meshgate.filters.security.consumer_header"),
    ("authorization", "meshgate.filters.security.authorization"),
    # Not a policy section: a Consumer's Plan, added to every rule whose policies
    # authenticate (``StagedPolicies.plans``); runs before BackendTrafficPolicy rate limits.
    ("plans", "meshgate.filters.plans"),
    # After rate limits (BackendTrafficPolicy): meshgate.dev ValidationPolicy,
    # CachePolicy and TransformPolicy, in this order.
    ("validation", "meshgate.filters.validation"),
    ("cache", "meshgate.filters.cache"),
    ("transform", "meshgate.filters.transform"),
)
_ORDER = {stage: i for i, (stage, _) in enumerate(STAGES)}
_BUILDERS = dict(STAGES)
# Stages that may set the request's consumer.
AUTHENTICATION_STAGES = frozenset({"apiKeyAuth", "basicAuth", "oauth2Introspection", "jwt"})


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


class SingleStagePolicies(SecurityPolicies):
    """A meshgate.dev policy kind whose whole spec builds one stage."""

    def __init__(
        self,
        kind: str,
        stage: str,
        inputs: Inputs,
        resolver: BackendResolver,
        errors: ErrorSink,
        consumers: Any,
    ) -> None:
        self.kind = kind
        self.stage = stage
        super().__init__(inputs, resolver, errors, consumers)

    def refs(self, res: LoadedResource) -> PolicyRefs:
        return PolicyRefs(
            res, self.inputs, self.resolver, self.errors, group="meshgate.dev", consumers=self.consumers
        )

    def compile(self, key: str, res: LoadedResource) -> CompiledSecurity:
        filters = build_stage(self.stage, res.obj.spec, self.refs(res))
        return CompiledSecurity(key, ((self.stage, filters),))


class StagedPolicies:
    """What several policy kinds put in front of a rule: for each kind the most
    specific policy, their stages merged in STAGES order (memoized per combination).

    With ``plans`` (security only): when a policy authenticates, the ``plans`` stage of
    its namespace joins them (the first such policy's namespace: the Consumers that
    can be found are those of the authenticating policy's namespace)."""

    def __init__(self, indexes: list[SecurityPolicies], plans: Any = None) -> None:
        self.indexes = indexes
        self.plans = plans  # meshgate.plans.book.PlanIndex
        self._merged: dict[tuple[str, ...], CompiledSecurity] = {}

    def for_rule(
        self, route_ns: str, route: str, rule_name: str | None, gateway: str, listener: str
    ) -> CompiledSecurity | None:
        found = [
            p
            for index in self.indexes
            if (p := index.for_rule(route_ns, route, rule_name, gateway, listener)) is not None
        ]
        if not found:
            return None
        if len(found) == 1 and self.plans is None:
            return found[0]
        keys = tuple(p.key for p in found)
        merged = self._merged.get(keys)
        if merged is None:
            if len(found) == 1:
                merged = found[0]
            else:
                stages = sorted((s for p in found for s in p.stages), key=lambda s: _ORDER[s[0]])
                merged = CompiledSecurity("+".join(keys), tuple(stages))
            merged = self._with_plans(merged, found)
            self._merged[keys] = merged
        return merged

    def _with_plans(self, merged: CompiledSecurity, found: list[CompiledSecurity]) -> CompiledSecurity:
        if self.plans is None:
            return merged
        for p in found:
            if any(stage in AUTHENTICATION_STAGES for stage, _ in p.stages):
                plan_filter = self.plans.filter_for(p.key.partition("/")[0])
                if plan_filter is None:
                    return merged
                stages = sorted((*merged.stages, ("plans", (plan_filter,))), key=lambda s: _ORDER[s[0]])
                return CompiledSecurity(merged.key, tuple(stages))
        return merged

    def dump(self) -> dict[str, Any]:
        out = {index.kind: index.dump() for index in self.indexes}
        if self.plans is not None and self.plans.plans:
            out["Plan"] = self.plans.dump()
        return out


# meshgate.dev kinds that shape traffic after authentication and rate limits.
SHAPING_KINDS = (
    ("ValidationPolicy", "validation"),
    ("CachePolicy", "cache"),
    ("TransformPolicy", "transform"),
)


def policy_stages(
    inputs: Inputs, resolver: BackendResolver, errors: ErrorSink
) -> tuple[StagedPolicies, StagedPolicies]:
    """(security, shaping): SecurityPolicy + IntrospectionPolicy, which go in front of a
    rule's filters first; and the meshgate.dev kinds that validate, cache and transform,
    which go after rate limits."""
    from meshgate.filters.security.consumers import ConsumerIndex
    from meshgate.plans.book import PlanIndex

    consumers = ConsumerIndex(inputs, errors)
    security = StagedPolicies(
        [
            SecurityPolicies(inputs, resolver, errors, consumers),
            SingleStagePolicies(
                "IntrospectionPolicy", "oauth2Introspection", inputs, resolver, errors, consumers
            ),
        ],
        plans=PlanIndex(inputs, errors, consumers),
    )
    shaping = StagedPolicies(
        [
            SingleStagePolicies(kind, stage, inputs, resolver, errors, consumers)
            for kind, stage in SHAPING_KINDS
        ]
    )
    return security, shaping
