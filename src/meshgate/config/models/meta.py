"""Shared building blocks of the resource models: the strict base class, ``Metadata``,
Gateway API scalar types (Duration, HeaderName, Hostname, ...) and ``FieldError``.

Every model here follows one contract (other modules code against it): attribute names
are the YAML keys (camelCase); the only exception is ``from``, spelled ``from_`` with an
alias. Models are frozen and forbid unknown fields.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    model_validator,
)

# Gateway API limits and patterns (apis/v1/shared_types.go).
DURATION_RE = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
HOSTNAME_RE = re.compile(
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
PRECISE_HOSTNAME_RE = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
GROUP_RE = re.compile(r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
KIND_RE = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_API_VERSIONS = ("gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1")


class FieldError(ValueError):
    """A validation failure at a sub-path of the object being validated.

    Raised from model validators so the reported path points at the offending field
    (``subpath`` is relative, e.g. ``("filters", 1, "requestRedirect")``), not at the
    object that holds the rule. ``errors.py`` reads it back from pydantic's error ctx.
    """

    def __init__(self, subpath: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.subpath = subpath
        self.message = message


class Strict(BaseModel):
    """Base of every config model: frozen, unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- scalar types -------------------------------------------------------------------


def _check_pattern(regex: re.Pattern[str], what: str, max_len: int | None = None):
    def check(value: str) -> str:
        if max_len is not None and len(value) > max_len:
            raise ValueError(f"{what} must be at most {max_len} characters")
        if not regex.match(value):
            raise ValueError(f"{value!r} is not a valid {what} (must match {regex.pattern})")
        return value

    return check


def _check_duration(value: str) -> str:
    if not DURATION_RE.match(value):
        raise ValueError(
            f"{value!r} is not a Gateway API Duration (examples: 10s, 500ms, 1h2m; "
            f"must match {DURATION_RE.pattern})"
        )
    return value


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


def _int_or_str(value: Any) -> int | str:
    # Kubernetes IntOrString: a port number or a port name. No coercion either way.
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("must be a port number or a port name")
    if isinstance(value, str) and not value:
        raise ValueError("port name must not be empty")
    return value


Duration = Annotated[str, AfterValidator(_check_duration)]
"""Gateway API Duration (GEP-2257), kept as the user wrote it; parse with ``parse_duration``."""

HeaderName = Annotated[
    str, Field(min_length=1), AfterValidator(_check_pattern(HEADER_NAME_RE, "header name", 256))
]
Hostname = Annotated[str, AfterValidator(_check_pattern(HOSTNAME_RE, "hostname", 253))]
PreciseHostname = Annotated[
    str, AfterValidator(_check_pattern(PRECISE_HOSTNAME_RE, "hostname (no wildcard)", 253))
]
ObjectName = Annotated[str, Field(min_length=1, max_length=253)]
SectionName = Annotated[
    str, AfterValidator(_check_pattern(DNS_LABEL_RE, "section name", 253))
]
Namespace = Annotated[str, AfterValidator(_check_pattern(DNS_LABEL_RE, "namespace", 63))]
Group = Annotated[str, AfterValidator(_check_pattern(GROUP_RE, "API group", 253))]
Kind = Annotated[str, AfterValidator(_check_pattern(KIND_RE, "kind", 63))]
PortNumber = Annotated[int, Field(ge=1, le=65535)]
RegexString = Annotated[str, AfterValidator(_check_regex)]
IntOrString = Annotated[int | str, PlainValidator(_int_or_str)]


def parse_duration(value: str) -> float:
    """Seconds in a Gateway API Duration string (``"1h2m"`` -> 3720.0)."""
    total = 0.0
    for number, unit in re.findall(r"([0-9]+)(ms|h|m|s)", value):
        total += int(number) * {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}[unit]
    return total


# --- metadata -------------------------------------------------------------------------


class Metadata(Strict):
    name: Annotated[
        str, AfterValidator(_check_pattern(DNS_SUBDOMAIN_RE, "resource name", 253))
    ] = Field(description="Name of the resource, unique per kind and namespace.")
    namespace: Namespace = Field(
        default="default", description="Namespace of the resource; defaults to `default`."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Labels, matched by label selectors."
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Free-form annotations; not interpreted."
    )
    creationTimestamp: datetime | None = Field(
        default=None,
        description="Creation time; the oldest route wins precedence ties (Gateway API).",
    )
    uid: str | None = Field(
        default=None, description="Accepted for kubectl compatibility; not used."
    )
    resourceVersion: str | None = Field(
        default=None, description="Accepted for kubectl compatibility; not used."
    )
    generation: int | None = Field(
        default=None, description="Accepted for kubectl compatibility; not used."
    )


class LabelSelectorRequirement(Strict):
    key: str = Field(description="Label key the requirement applies to.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="Relation between the label and `values`."
    )
    values: list[str] = Field(
        default_factory=list,
        description="Values for In / NotIn; must be empty for Exists / DoesNotExist.",
    )

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise FieldError(("values",), f"operator {self.operator} requires values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise FieldError(("values",), f"operator {self.operator} takes no values")
        return self


class LabelSelector(Strict):
    matchLabels: dict[str, str] = Field(
        default_factory=dict, description="Labels that must all be present with these values."
    )
    matchExpressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Requirements that must all hold."
    )


class ResourceBase(Strict):
    """Fields every top-level resource has; subclasses narrow apiVersion and kind."""

    apiVersion: str = Field(description="API group and version.")
    kind: str = Field(description="Resource kind.")
    metadata: Metadata = Field(description="Name, namespace, labels and annotations.")
