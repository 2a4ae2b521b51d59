"""``pouch demo``: three states' gateways on loopback, and every exchange between them.

The harness is a development tool, not part of the gateway: it is the pouch-devtools
distribution (``devtools/`` in the repository), imported only when the command runs. A
gateway installed without it says how to install it and exits 1.
"""

from __future__ import annotations

from pathlib import Path

import click

INSTALL_HINT = "pouch demo needs the development tools: pip install -e ./devtools"
"""The one line a gateway without pouch-devtools answers, from a checkout of Pouch."""


@click.command()
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to create the states' files (default: a new temporary directory).",
)
@click.option("--keep", is_flag=True, help="Leave the gateways running and say how to call them.")
def demo(workdir: Path | None, keep: bool) -> None:
    """Three states' gateways and registries on loopback, and every kind of exchange.

    Needs the development tools (pip install -e ./devtools).
    """
    try:
        from pouch_devtools.demo.run import run_demo
    except ModuleNotFoundError as e:
        # Only pouch-devtools itself missing; a module it needs is a fault to show.
        if e.name != "pouch_devtools":
            raise
        raise click.ClickException(INSTALL_HINT) from None
    run_demo(workdir, keep)
