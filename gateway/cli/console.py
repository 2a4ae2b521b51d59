"""``pouch console``: the web console for officers, auditors and operators.

It runs as its own process, a client of the state's gateway over the local API, and
needs the ``console`` extra (``pip install 'pouch-gateway[console]'``).
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="console")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The console's TOML file.",
)
@click.option("--check", is_flag=True, help="Check the configuration and exit.")
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    default="INFO",
    show_default=True,
)
def console(config_path: Path, check: bool, log_format: str, log_level: str) -> None:
    """Serve the web console named by --config over HTTPS."""
    try:
        from console.serve import ConsoleStartError, serve
    except ImportError as e:
        raise click.ClickException(
            f"the console needs the console extra: pip install 'pouch-gateway[console]' ({e.name})"
        ) from None
    try:
        serve(config_path, check_only=check, log_format=log_format, log_level=log_level)
    except ConsoleStartError as e:
        raise click.ClickException(str(e)) from None
