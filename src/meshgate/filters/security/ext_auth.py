"""SecurityPolicy `ext_auth`: placeholder, being built."""

from __future__ import annotations

from typing import Any


def build(spec: Any, refs: Any) -> tuple:
    """The filters for this section of a SecurityPolicy (none yet)."""
    return ()
