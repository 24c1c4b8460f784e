"""SecurityPolicy `authorization` section (gateway.envoyproxy.io/v1alpha1). Placeholder: being built."""

from __future__ import annotations

from meshgate.config.models.meta import Strict


class Authorization(Strict):
    """Not available yet: any content is rejected."""
