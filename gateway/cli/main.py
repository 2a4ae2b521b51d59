"""Entry point of the ``pouch`` command: one click group, one sub-group per concern."""

from __future__ import annotations

import click

from gateway import __version__
from gateway.cli.agreement import agreement
from gateway.cli.agreement_lifecycle import reload, resume, suspend, terminate
from gateway.cli.audit import audit
from gateway.cli.db import db
from gateway.cli.demo import demo
from gateway.cli.doctor import doctor
from gateway.cli.keys import keys
from gateway.cli.pki import pki
from gateway.cli.serve import serve
from gateway.cli.services import add_client_commands
from gateway.cli.token import token


@click.group()
@click.version_option(__version__, prog_name="pouch")
def cli() -> None:
    """Pouch: secure gateway for bilateral consular-cooperation exchanges."""


cli.add_command(pki)
cli.add_command(keys)
agreement.add_command(suspend)
agreement.add_command(terminate)
agreement.add_command(resume)
agreement.add_command(reload)
cli.add_command(agreement)
cli.add_command(audit)
cli.add_command(token)
cli.add_command(db)
cli.add_command(serve)
cli.add_command(demo)
cli.add_command(doctor)
add_client_commands(cli, agreement=agreement, audit=audit)


def main() -> None:
    cli()
