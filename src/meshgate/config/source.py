"""Config from files: load + validate + compile in one call, and a watcher for reloads.

The watcher polls file metadata (size, mtime, inode) once a second: portable, no extra
dependency, and cheap next to a request path. A change triggers a full build; a build
that fails anywhere leaves the running snapshot untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from meshgate.config.compile import compile_snapshot
from meshgate.config.errors import ConfigInvalid
from meshgate.config.loader import load_paths
from meshgate.config.snapshot import Limits, Snapshot


def build_snapshot(
    paths: Sequence[str],
    gateways: set[str] | None = None,
    limits: Limits | None = None,
) -> tuple[Snapshot, list[str]]:
    """(snapshot, warnings) for the files in ``paths``. Raises ConfigInvalid."""
    result = load_paths(paths)
    if result.errors:
        raise ConfigInvalid(result.errors)
    snapshot = compile_snapshot(result.resources, gateways=gateways, limits=limits)
    return snapshot, result.warnings


def fingerprint(paths: Sequence[str]) -> tuple:
    """What the watcher compares: every config file with its size, mtime and inode."""
    entries = []
    for raw in paths:
        p = Path(raw)
        files = (
            sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml"))
            if p.is_dir()
            else [p]
        )
        for f in files:
            try:
                st = f.stat()
            except OSError:
                entries.append((str(f), None))
                continue
            entries.append((str(f), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(entries)


__all__ = ["ConfigInvalid", "build_snapshot", "fingerprint"]
