"""Puts tests/unit on sys.path so tests import shared helpers as plain modules
(``from inprocess import serve``): tests run with ``--import-mode=importlib``."""

import sys
from pathlib import Path

HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
