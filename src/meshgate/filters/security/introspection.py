"""IntrospectionPolicy: OAuth2 token introspection (RFC 7662). Placeholder, being built."""

from __future__ import annotations

from typing import Any


def build(spec: Any, refs: Any) -> tuple:
    """The filters for an IntrospectionPolicy's spec (none yet)."""
    return ()
