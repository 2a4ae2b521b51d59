"""Entry point of the ``pouch`` command: one click group, one sub-group per concern.

Each sub-group is imported when it is called (:class:`LazyGroup`), so a client command
such as ``pouch civil submit`` does not load the server, the audit verifier and the
agreement loader first: measured on a 2-core machine, ``import gateway.cli.main`` took
1.17 s with every group imported up front, most of it for commands not being run.
"""

from __future__ import annotations

import importlib

import click

from gateway import __version__

# name: "module:attribute" of the click command or group, or a builder of one.
_COMMANDS = {
    "agreement": "gateway.cli.groups:agreement_group",
    "audit": "gateway.cli.groups:audit_group",
    "case": "gateway.cli.case:case",
    "civil": "gateway.cli.civil:civil",
    "db": "gateway.cli.db:db",
    "dead-letter": "gateway.cli.dead_letter:dead_letter",
    "demo": "gateway.cli.demo:demo",
    "console": "gateway.cli.console:console",
    "doctor": "gateway.cli.doctor:doctor",
    "identity": "gateway.cli.identity:identity",
    "keys": "gateway.cli.keys:keys",
    "pki": "gateway.cli.pki:pki",
    "serve": "gateway.cli.serve:serve",
    "status": "gateway.cli.gateway_status:status",
    "token": "gateway.cli.token:token",
}


class LazyGroup(click.Group):
    """A group whose commands are imported by name when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target.partition(":")
        found = getattr(importlib.import_module(module_name), attribute)
        command = found if isinstance(found, click.Command) else found()
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="pouch")
def cli() -> None:
    """Pouch: secure gateway for bilateral consular-cooperation exchanges."""


def main() -> None:
    cli()
