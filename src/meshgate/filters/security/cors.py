"""SecurityPolicy ``cors``: the HTTPRoute CORS engine (``filters/gateway_api/cors.py``)
behind Envoy Gateway's field shapes.

What differs from the HTTPRoute filter is only where Envoy Gateway differs: ``maxAge``
is a duration (no header when unset), ``https://*`` means any https origin on any
port (Envoy Gateway turns it into the regex ``https://.*``), and a preflight from a
disallowed origin is passed on rather than answered, as Envoy's CORS filter does; the
later stages and the upstream then answer it, without CORS fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshgate.filters.gateway_api.cors import CORS

if TYPE_CHECKING:
    from meshgate.config.compile.refs import PolicyRefs
    from meshgate.config.models.security.cors import CORS as CORSConfig


def _origin(origin: str) -> str:
    """``scheme://*`` (no port) -> ``scheme://*:*``: any host on any port."""
    _, sep, host = origin.partition("://")
    if sep and host == "*":
        return origin + ":*"
    return origin


def build(spec: CORSConfig, refs: PolicyRefs) -> tuple[CORS, ...]:
    return (
        CORS(
            allow_origins=[_origin(o) for o in spec.allowOrigins or ()],
            allow_methods=list(spec.allowMethods or ()),
            allow_headers=list(spec.allowHeaders or ()),
            expose_headers=list(spec.exposeHeaders or ()),
            max_age=spec.max_age_seconds(),
            allow_credentials=bool(spec.allowCredentials),
            forward_disallowed_preflight=True,
        ),
    )
