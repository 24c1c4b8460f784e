"""``meshgate validate [--gateway NS/NAME]... PATH...``: load and fully validate config, as
a gateway would.

Runs the loader (models: fields, types, spec limits, cross-field rules) and then the
compiler (references, attachment, conflicts) for the Gateways ``meshgate gateway`` would
serve with the same ``--gateway`` options (all when none), prints every error as
``file:document:Kind/namespace/name:field.path: message`` on stderr and exits 1 if there
is any.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import click

from meshgate.config.errors import ConfigInvalid
from meshgate.config.loader import load_paths


def _find_compiler() -> Callable[..., Any] | None:
    """``compile_snapshot`` if the compiler is installed; None only when it is absent
    (an import error inside the compiler is a bug and propagates)."""
    try:
        module = importlib.import_module("meshgate.config.compile")
    except ModuleNotFoundError as exc:
        if exc.name in ("meshgate.config.compile",):
            return None
        raise
    return getattr(module, "compile_snapshot", None)


@click.command("validate")
@click.option(
    "--gateway",
    "gateways",
    multiple=True,
    help="Validate as if serving only this Gateway (NS/NAME); repeatable.",
)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
def validate(gateways: tuple[str, ...], paths: tuple[str, ...]) -> None:
    """Validate config files or directories of *.yaml / *.yml files (not recursive)."""
    result = load_paths(paths)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    errors = list(result.errors)
    if not errors:
        compile_snapshot = _find_compiler()
        if compile_snapshot is not None:
            try:
                # Same selection as ``meshgate gateway``: listeners of Gateways not
                # served cannot conflict, so the answer depends on it.
                compile_snapshot(result.resources, gateways=set(gateways) or None)
            except ConfigInvalid as exc:
                errors.extend(exc.errors)
    for error in errors:
        click.echo(str(error), err=True)
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        click.echo(f"invalid: {len(errors)} {noun}", err=True)
        raise SystemExit(1)
    counts = Counter(r.kind for r in result.resources)
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    click.echo(f"ok: {len(result.resources)} resources ({kinds})")
