"""What every policy kind shares: targets (Envoy Gateway's targetRef / targetRefs with
its CEL rules), fields meshgate declares but does not serve yet, and the value types
Envoy Gateway's Go types use (Go durations, HTTP statuses, percentages).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field, model_validator

from meshgate.config.models.meta import (
    GATEWAY_GROUP,
    FieldError,
    Group,
    Kind,
    ObjectName,
    SectionName,
    Strict,
    parse_duration,
)

NOT_SUPPORTED = "Not supported by meshgate yet: rejected with an error."

# Kinds Envoy Gateway accepts in targetRefs, and the ones meshgate serves.
EG_TARGET_KINDS = ("Gateway", "HTTPRoute", "GRPCRoute", "UDPRoute", "TCPRoute", "TLSRoute")
TARGET_KINDS = ("Gateway", "HTTPRoute")

# Go's time.ParseDuration format (metav1.Duration), used by the health-check fields.
_GO_DURATION_RE = re.compile(r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$")
_GO_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(value: str) -> float:
    """Seconds in a Go duration string (``"1m30s"`` -> 90.0, ``"1.5s"`` -> 1.5)."""
    total = sum(float(n) * _GO_UNITS[u] for n, u in _GO_PART_RE.findall(value))
    return round(total, 9)


def _check_go_duration(value: str) -> str:
    if not _GO_DURATION_RE.match(value):
        raise ValueError(f"{value!r} is not a duration (examples: 3s, 500ms, 1m30s)")
    return value


GoDuration = Annotated[str, AfterValidator(_check_go_duration)]
"""Go duration (metav1.Duration), kept as written; parse with ``parse_go_duration``."""


def not_supported() -> Any:
    return Field(default=None, description=NOT_SUPPORTED, json_schema_extra={"unsupported": True})


class Section(Strict):
    """A part of the spec: a field declared with ``not_supported()`` is an error when set."""

    @model_validator(mode="after")
    def _reject_unsupported(self) -> Any:
        for name, info in type(self).model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and extra.get("unsupported") and getattr(self, name) is not None:
                raise FieldError((name,), f"{name} is not supported by meshgate yet")
        return self


def positive(value: str | None, what: str) -> None:
    if value is not None and parse_duration(value) <= 0:
        raise FieldError((what,), "must be greater than 0")


# HTTPStatus (shared_types.go): 100 <= code < 600.
HTTPStatus = Annotated[int, Field(ge=100, lt=600)]
Percentage = Annotated[float, Field(ge=0, le=100)]
UInt32 = Annotated[int, Field(ge=0, le=4294967295)]


# --- targets ---------------------------------------------------------------------------


class PolicyTargetReference(Strict):
    """Gateway API LocalPolicyTargetReferenceWithSectionName."""

    group: Group = Field(description="API group of the target: `gateway.networking.k8s.io`.")
    kind: Kind = Field(description="Kind of the target: `Gateway` or `HTTPRoute`.")
    name: ObjectName = Field(description="Name of the target, in the policy's namespace.")
    sectionName: SectionName | None = Field(
        default=None,
        description="A listener name (Gateway) or rule name (HTTPRoute); the whole target if unset.",
    )


class TargetedSpec(Section):
    """A policy spec's targets: ``targetRef`` (deprecated) or ``targetRefs``.

    The kinds a policy may target are class attributes, so that a policy kind that
    targets fewer (ClientTrafficPolicy: Gateways only) narrows them instead of copying
    the rule: the kinds Envoy Gateway's CEL rule accepts, named as its message names
    them, and those of them meshgate serves, named as meshgate's error names them."""

    accepted_target_kinds: ClassVar[tuple[str, ...]] = EG_TARGET_KINDS
    accepted_target_kinds_text: ClassVar[str] = "Gateway/HTTPRoute/GRPCRoute/TCPRoute/UDPRoute/TLSRoute"
    served_target_kinds: ClassVar[tuple[str, ...]] = TARGET_KINDS
    served_target_kinds_text: ClassVar[str] = " (Gateway or HTTPRoute)"

    targetRef: PolicyTargetReference | None = Field(
        default=None, description="Deprecated: the one target; use targetRefs."
    )
    targetRefs: list[PolicyTargetReference] = Field(
        default_factory=list,
        max_length=16,
        description="Gateways, listeners, HTTPRoutes or HTTPRoute rules in the policy's namespace. "
        "The most specific policy applies to a rule, whole: route rule > route > listener > Gateway.",
    )

    @model_validator(mode="after")
    def _targets(self) -> TargetedSpec:
        if (self.targetRef is None) == (not self.targetRefs):
            where = ("targetRefs",) if self.targetRefs else ()
            raise FieldError(where, "either targetRef or targetRefs must be used")
        located = (
            [(("targetRef",), self.targetRef)]
            if self.targetRef is not None
            else [(("targetRefs", i), ref) for i, ref in enumerate(self.targetRefs)]
        )
        for where, ref in located:
            name = "targetRef" if len(where) == 1 else "targetRefs[*]"
            if ref.group != GATEWAY_GROUP:
                raise FieldError(
                    (*where, "group"), f"this policy can only have a {name}.group of {GATEWAY_GROUP}"
                )
            if ref.kind not in self.accepted_target_kinds:
                raise FieldError(
                    (*where, "kind"),
                    f"this policy can only have a {name}.kind of {self.accepted_target_kinds_text}",
                )
            if ref.kind not in self.served_target_kinds:
                raise FieldError(
                    (*where, "kind"),
                    f"targeting a {ref.kind} is not supported by meshgate yet{self.served_target_kinds_text}",
                )
        return self

    def targets(self) -> list[PolicyTargetReference]:
        """targetRef or targetRefs, whichever is set (policy_helpers.go GetTargetRefs)."""
        return [self.targetRef] if self.targetRef is not None else list(self.targetRefs)


