"""Fixtures of the cache tests: the driver (``cache_driver.py`` beside this file) and
``redis_server`` (tests/e2e: a real redis-server for the Redis store's tests)."""

import sys
from pathlib import Path

HERE = Path(__file__).parent
for path in (HERE, HERE.parents[2] / "e2e"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from cache_driver import clock, driver, origin  # noqa: F401
