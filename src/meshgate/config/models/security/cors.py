"""SecurityPolicy ``cors`` section (gateway.envoyproxy.io/v1alpha1, Envoy Gateway's
cors_types.go): which cross-origin callers a browser may let read the responses.

Origins follow Envoy Gateway's validation: ``*`` alone, or ``http(s)://host[:port]``
where the host may be ``*`` or start with one wildcard label (``*.example.com``) and
the port may be ``*``. A scheme is required (``example.com`` alone is an error), as
in Envoy Gateway.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from meshgate.config.models.meta import Duration, FieldError, HeaderName, parse_duration
from meshgate.config.models.policy_common import Section

# Envoy Gateway's Origin pattern (Go RE2; ``\w`` is ASCII there too).
_ORIGIN_RE = re.compile(
    r"^(\*|https?:\/\/(\*|(\*\.)?(([\w-]+\.?)+)?[\w-]+)(:(\*|\d{1,5}))?)$", re.ASCII
)


def _check_origin(value: str) -> str:
    if not 1 <= len(value) <= 253 or not _ORIGIN_RE.match(value):
        raise ValueError(
            f"{value!r} is not an origin: `*`, or http(s)://host[:port] where the host may be "
            "`*` or start with `*.` and the port may be `*` (examples: https://app.example.com, "
            "https://*.example.com, http://localhost:*)"
        )
    return value


Origin = Annotated[str, AfterValidator(_check_origin)]


class CORS(Section):
    """Cross-origin resource sharing, answered at the gateway (Envoy's CORS filter)."""

    allowOrigins: list[Origin] | None = Field(
        default=None,
        min_length=1,
        description="Origins allowed to read responses: `*`, `https://app.example.com`, "
        "`https://*.example.com` (one or more labels, host characters only), "
        "`http://localhost:*` (any port), `https://*` (any https origin). "
        "A disallowed origin gets no CORS fields; its request is still forwarded.",
    )
    allowMethods: list[HeaderName] | None = Field(
        default=None,
        min_length=1,
        description="Methods a preflight allows (Access-Control-Allow-Methods), or `*`; "
        "with allowCredentials a `*` is answered with the requested method.",
    )
    allowHeaders: list[HeaderName] | None = Field(
        default=None,
        description="Request headers a preflight allows (Access-Control-Allow-Headers), or `*`; "
        "with allowCredentials a `*` is answered with the requested headers.",
    )
    exposeHeaders: list[HeaderName] | None = Field(
        default=None,
        description="Response headers scripts may read (Access-Control-Expose-Headers); "
        "`*` counts only without allowCredentials.",
    )
    maxAge: Duration | None = Field(
        default=None,
        description="How long a browser may cache a preflight answer (Access-Control-Max-Age, "
        "whole seconds); not sent when unset.",
    )
    allowCredentials: bool | None = Field(
        default=None,
        description="Let requests carry cookies and Authorization (Access-Control-Allow-Credentials: "
        "true). The allowed origin is always echoed, never `*`, as the Fetch spec requires.",
    )

    @model_validator(mode="after")
    def _wildcards_alone(self) -> CORS:
        if self.allowOrigins and "*" in self.allowOrigins and len(self.allowOrigins) > 1:
            raise FieldError(("allowOrigins",), "cannot contain '*' alongside other origins")
        return self

    def max_age_seconds(self) -> int:
        """maxAge in whole seconds (0: unset, no Access-Control-Max-Age)."""
        return int(parse_duration(self.maxAge)) if self.maxAge is not None else 0
