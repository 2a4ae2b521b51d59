"""The ``pouch agreement`` and ``pouch audit`` groups, whole: their offline commands, the
operator's declarations and the client commands that ask a running gateway."""

from __future__ import annotations

import functools

import click


@functools.cache
def agreement_group() -> click.Group:
    from gateway.cli.agreement import agreement
    from gateway.cli.agreement_lifecycle import reload, resume, suspend, terminate
    from gateway.cli.agreements_held import list_agreements, show_agreement

    for command in (suspend, terminate, resume, reload, list_agreements, show_agreement):
        agreement.add_command(command)
    return agreement


@functools.cache
def audit_group() -> click.Group:
    from gateway.cli.audit import audit
    from gateway.cli.audit_evidence import checkpoint, entries, export, proof

    for command in (entries, checkpoint, proof, export):
        audit.add_command(command)
    return audit
