"""The rate-limit unit tests import ``ratelimit_helpers`` (beside this file) and
``redis_server`` (tests/e2e: a real redis-server for the Lua script's tests)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
for path in (HERE, HERE.parents[2] / "e2e"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
