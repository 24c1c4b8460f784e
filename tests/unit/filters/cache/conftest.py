"""Fixtures of the cache tests (the driver lives in cache_driver.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from cache_driver import clock, driver, origin  # noqa: E402, F401
