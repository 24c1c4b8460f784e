"""``meshgate.dev/v1alpha1`` Plan: what a Consumer may use — rate limits (requests per
second, minute, hour or day) and quotas (cost units per UTC day or calendar month,
each route costing 1 unless ``routeCosts`` says otherwise).

A Consumer takes a Plan with ``spec.plan.name`` (same namespace). The plan applies
wherever a SecurityPolicy of that namespace identifies the Consumer; no policy names
it. ``meshgate.plans`` compiles it, ``meshgate.filters.plans`` enforces it.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from meshgate.config.models.meta import FieldError, ResourceBase, Strict

# "name" (the Plan's namespace) or "namespace/name".
ROUTE_REF_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


def _check_route(value: str) -> str:
    if not ROUTE_REF_RE.match(value) or len(value) > 317:
        raise ValueError(f"{value!r} is not an HTTPRoute reference (NAME or NAMESPACE/NAME)")
    return value


class PlanRateLimit(Strict):
    requests: int = Field(ge=0, le=4294967295, description="Requests allowed per unit (0 refuses every request).")
    unit: Literal["Second", "Minute", "Hour", "Day"] = Field(
        description="Second, Minute, Hour or Day: a fixed window aligned to the Unix epoch (UTC)."
    )


class PlanQuota(Strict):
    requests: int = Field(
        ge=0,
        le=2**53,
        description="Cost units allowed per period: requests, unless `routeCosts` gives a route another cost.",
    )
    period: Literal["Day", "Month"] = Field(
        description="Day (00:00 to 24:00 UTC) or Month (the calendar month, UTC)."
    )


class PlanRouteCost(Strict):
    route: Annotated[str, AfterValidator(_check_route)] = Field(
        description="An HTTPRoute: `NAME` (in the Plan's namespace) or `NAMESPACE/NAME`."
    )
    rule: str | None = Field(
        default=None,
        min_length=1,
        description="The name of one rule of that route; unset: every rule of the route.",
    )
    cost: int = Field(
        ge=0,
        le=2**32,
        description="Quota units a request to it takes (default for other routes: 1). 0: the "
        "route is free — neither counted against nor refused by the quotas.",
    )


class PlanSpec(Strict):
    rateLimits: list[PlanRateLimit] = Field(
        default_factory=list,
        description="Request rate limits per consumer; at most one per unit.",
    )
    quotas: list[PlanQuota] = Field(
        default_factory=list, description="Quotas per consumer; at most one per period."
    )
    routeCosts: list[PlanRouteCost] = Field(
        default_factory=list,
        description="What a request to a route (or one rule of it) takes from the quotas.",
    )

    @model_validator(mode="after")
    def _unique(self) -> PlanSpec:
        for field, items, key in (
            ("rateLimits", self.rateLimits, lambda x: x.unit),
            ("quotas", self.quotas, lambda x: x.period),
            ("routeCosts", self.routeCosts, lambda x: (x.route, x.rule)),
        ):
            seen: set = set()
            for i, item in enumerate(items):
                k = key(item)
                if k in seen:
                    raise FieldError((field, i), f"a second entry for {k!r}; give each one once")
                seen.add(k)
        return self


class Plan(ResourceBase):
    """Rate limits and quotas that Consumers take (meshgate extension)."""

    apiVersion: Literal["meshgate.dev/v1alpha1"] = Field(description="Always `meshgate.dev/v1alpha1`.")
    kind: Literal["Plan"] = Field(description="Always `Plan`.")
    spec: PlanSpec = Field(
        default_factory=PlanSpec, description="The limits and quotas of the plan."
    )
