"""``pouch db init``: the one explicit step that creates a state's database.

``pouch serve`` never creates a database: a typo in ``database_url`` must not start a
second, empty state. ``pouch db init`` creates the SQLite file (its directory must
exist) or the schema in an existing PostgreSQL database, and applies every migration;
run again on a Pouch database, it only migrates. A database holding tables of
something else is refused.
"""

from __future__ import annotations

from pathlib import Path

import click

from gateway.config import ConfigError, Settings, load_settings
from gateway.errors import StorageUnavailable
from gateway.server.startup_checks import StartupError
from gateway.store.engine import redact_url
from gateway.store.opening import initialise_database


def init_database(settings: Settings) -> str:
    """Create (if need be) and migrate the database ``settings`` name; one line saying so.

    :class:`StartupError` names the key, the URL and the rule when it cannot.
    """
    url = settings.gateway.database_url
    shown = redact_url(url)
    try:
        revision, fresh = initialise_database(url)
    except ValueError as e:
        raise StartupError(f"gateway.database_url: {shown}: not a usable database URL") from e
    except StorageUnavailable as e:
        raise StartupError(f"gateway.database_url: {shown}: {e.message}") from e
    done = "created" if fresh else "already a Pouch database; migrated"
    return f"pouch db init: {shown}: {done}, at schema revision {revision}"


@click.group()
def db() -> None:
    """The gateway's database."""


@db.command("init")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The gateway's TOML configuration file.",
)
def init(config_path: Path) -> None:
    """Create the database the configuration names, and migrate it to the current schema."""
    try:
        click.echo(init_database(load_settings(config_path)))
    except (ConfigError, StartupError) as e:
        raise click.ClickException(str(e)) from None
