"""The client commands of ``pouch``, one per call of the local API's services, and where
each is placed: ``civil``, ``identity``, ``case`` and ``status`` at the top, ``list`` and
``show`` beside the offline agreement commands, ``entries``, ``checkpoint``, ``proof``
and ``export`` beside ``audit verify``. All share :mod:`gateway.cli.client`'s options.
"""

from __future__ import annotations

import click

from gateway.cli.agreements_held import list_agreements, show_agreement
from gateway.cli.audit_evidence import checkpoint, entries, export, proof
from gateway.cli.case import case
from gateway.cli.civil import civil
from gateway.cli.gateway_status import status
from gateway.cli.identity import identity


def add_client_commands(cli: click.Group, *, agreement: click.Group, audit: click.Group) -> None:
    for group in (civil, identity, case, status):
        cli.add_command(group)
    for command in (list_agreements, show_agreement):
        agreement.add_command(command)
    for command in (entries, checkpoint, proof, export):
        audit.add_command(command)
