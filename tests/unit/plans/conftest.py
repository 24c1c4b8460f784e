"""The plans unit tests import ``redis_server`` (tests/e2e: a real redis-server for the
Lua script's tests)."""

from __future__ import annotations

import sys
from pathlib import Path

E2E = Path(__file__).parents[2] / "e2e"
if str(E2E) not in sys.path:
    sys.path.insert(0, str(E2E))
