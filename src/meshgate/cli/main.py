"""The ``meshgate`` command: one click group, one subcommand per role or tool."""

from __future__ import annotations

import click

from meshgate import __version__
from meshgate.cli.gateway import gateway
from meshgate.cli.top import top
from meshgate.cli.validate import validate


@click.group()
@click.version_option(__version__, prog_name="meshgate")
def main() -> None:
    """meshgate: an API gateway and a service mesh in one Python package."""


main.add_command(gateway)
main.add_command(top)
main.add_command(validate)

if __name__ == "__main__":
    main()
