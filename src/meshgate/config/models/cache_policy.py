"""``meshgate.dev/v1alpha1`` CachePolicy: an HTTP response cache (RFC 9111, shared
cache) for the routes or Gateways it targets.

Responses are stored and reused as their Cache-Control, Expires, Vary and validators
allow; the policy chooses the cache key, bounds the store and may supply a freshness
lifetime where the origin gives none. It runs after authentication and rate limiting
(so a hit is still authenticated and counted) and before transformation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from meshgate.config.models.meta import Duration, FieldError, HeaderName, ResourceBase
from meshgate.config.models.policy_common import Section, TargetedSpec, positive


class CacheKey(Section):
    """What tells two requests apart in the cache. GET and HEAD share entries (a HEAD is
    answered from a stored GET); other methods are never served from the cache."""

    host: bool = Field(
        default=True,
        description="Include the request's host (lowercase, without port). Turn off only "
        "when every host of the target serves the same content.",
    )
    query: Literal["All", "Ignore", "Only"] = Field(
        default="All",
        description="`All`: the whole query string as received. `Ignore`: no query. "
        "`Only`: just the parameters in `queryParams`, sorted, so order does not matter.",
    )
    queryParams: list[str] = Field(
        default_factory=list,
        description="Query parameter names kept when `query` is `Only`.",
    )
    headers: list[HeaderName] = Field(
        default_factory=list,
        max_length=16,
        description="Request headers whose values are part of the key (in addition to the "
        "response's own `Vary`).",
    )
    consumer: bool = Field(
        default=True,
        description="Include who authenticated (set by a SecurityPolicy or "
        "IntrospectionPolicy): the consumer, else the verified token's issuer and subject, "
        "so each caller has its own entries. `false`: authenticated callers share entries.",
    )

    @model_validator(mode="after")
    def _params(self) -> CacheKey:
        if self.query == "Only" and not self.queryParams:
            raise FieldError(("queryParams",), "must list at least one parameter when query is Only")
        if self.query != "Only" and self.queryParams:
            raise FieldError(("queryParams",), "is used only when query is Only")
        return self


class CacheStore(Section):
    """Where entries live."""

    type: Literal["Memory", "Redis"] = Field(
        default="Memory",
        description="`Memory`: in this gateway process, bounded by `maxEntries` and "
        "`maxBytes`, least recently used first out. `Redis`: shared by every gateway "
        "process, in the Redis of `--redis-url`; entries expire with their staleness "
        "windows and Redis's `maxmemory-policy` bounds the size.",
    )


class CachePolicySpec(TargetedSpec):
    """Targets, the key, lifetimes and bounds of the response cache."""

    key: CacheKey = Field(default_factory=CacheKey, description="The cache key.")
    store: CacheStore = Field(default_factory=CacheStore, description="The store.")
    defaultTTL: Duration | None = Field(
        default=None,
        description="Freshness lifetime of a response with no Cache-Control max-age / "
        "s-maxage and no Expires, when its status is heuristically cacheable (RFC 9111 "
        "section 4.2.2). Unset: 10% of the time since Last-Modified, or not stored.",
    )
    maxTTL: Duration | None = Field(
        default=None,
        description="Upper bound on any freshness lifetime, explicit or not. Unset: no bound.",
    )
    maxEntries: int = Field(
        default=10000, ge=1, le=10_000_000, description="Memory store: most entries kept (Vary variants count one each)."
    )
    maxBytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Memory store: most bytes kept (bodies and fields).",
    )
    maxObjectBytes: int = Field(
        default=1024 * 1024,
        ge=1,
        le=64 * 1024 * 1024,
        description="Largest response body stored. The cache reads whole bodies: on a "
        "targeted route a larger response is answered 502 (an engine limit today), so "
        "set this above the largest response the route serves.",
    )
    coalesce: bool = Field(
        default=True,
        description="Concurrent misses for one key send one request upstream; the others "
        "wait for it (up to `coalesceTimeout`) and are answered from what it stored.",
    )
    coalesceTimeout: Duration = Field(
        default="5s",
        description="Longest a request waits for another one's upstream answer before "
        "going upstream itself.",
    )

    @model_validator(mode="after")
    def _rules(self) -> CachePolicySpec:
        positive(self.defaultTTL, "defaultTTL")
        positive(self.maxTTL, "maxTTL")
        positive(self.coalesceTimeout, "coalesceTimeout")
        return self


class CachePolicy(ResourceBase):
    """Responses cached and reused as HTTP caching (RFC 9111) allows."""

    apiVersion: Literal["meshgate.dev/v1alpha1"] = Field(description="Always `meshgate.dev/v1alpha1`.")
    kind: Literal["CachePolicy"] = Field(description="Always `CachePolicy`.")
    spec: CachePolicySpec = Field(description="Targets and cache settings.")
