"""The Gateway API HTTPRoute filters (the core and extended ``filters[].type`` values).

Each class is built once per snapshot by the config compiler from a validated filter
and then called per request, so everything that can be is worked out in ``__init__``.
"""

from meshgate.filters.gateway_api.cors import CORS
from meshgate.filters.gateway_api.headers import (
    RequestHeaderModifier,
    ResponseHeaderModifier,
)
from meshgate.filters.gateway_api.mirror import RequestMirror
from meshgate.filters.gateway_api.paths import RequestRedirect, URLRewrite

__all__ = [
    "CORS",
    "RequestHeaderModifier",
    "RequestMirror",
    "RequestRedirect",
    "ResponseHeaderModifier",
    "URLRewrite",
]
