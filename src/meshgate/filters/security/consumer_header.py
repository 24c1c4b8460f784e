"""The authenticated consumer, sent upstream in a request header. Placeholder, being built."""

from __future__ import annotations

from typing import Any


def build(spec: Any, refs: Any) -> tuple:
    return ()
