"""Entry point of the ``pouch`` command: one click group, one sub-group per concern."""

from __future__ import annotations

import click

from gateway import __version__


@click.group()
@click.version_option(__version__, prog_name="pouch")
def cli() -> None:
    """Pouch: secure gateway for bilateral consular-cooperation exchanges."""


def main() -> None:
    cli()
