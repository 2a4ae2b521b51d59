"""``pouch demo``: start gateways for two states on loopback and show them talking."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from gateway.demo.audit_scenario import AuditOutcome, run_audit_scenario
from gateway.demo.civil_scenario import CivilOutcome, run_civil_scenario
from gateway.demo.deployment import GatewayProcess, RegistryProcess, prepare_sites
from gateway.demo.scenario import Step, run_scenario

STATES = ("AT", "BE")


def _civil_tables(outcome: CivilOutcome, a: str, b: str) -> list[Table]:
    policy = Table(title=f"What the agreement let cross ({a} -> {b}, a birth: minors' rules)")
    policy.add_column("field path")
    policy.add_column("what the policy did")
    for path in outcome.removed:
        policy.add_row(path, "removed")
    for path in outcome.transformed:
        policy.add_row(path, "transformed (masked, hashed or generalised)")
    receipts = Table(title="Evidence")
    receipts.add_column("what")
    receipts.add_column("value")
    receipts.add_row("message id", outcome.message_id)
    receipts.add_row("delivery receipt", outcome.delivery_receipt)
    receipts.add_row("registry's decision", outcome.acknowledgement)
    receipts.add_row(f"rows in {b}'s registry for it", str(outcome.registry_rows))
    return [policy, receipts]


def _civil_steps(outcome: CivilOutcome, a: str, b: str) -> list[Step]:
    return [
        Step(
            f"{a} civil registry",
            f"{a} local API -> {b}",
            "CivilRecordService/SubmitUpdate (birth)",
            "APPLIED",
            f"{outcome.state}{': ' + outcome.reason_code if outcome.reason_code else ''}",
        ),
        Step(
            f"{a} civil registry",
            f"{a} local API",
            "SubmitUpdate, purpose 'law_enforcement'",
            "PERMISSION_DENIED",
            outcome.refused_purpose,
        ),
    ]


def _audit_steps(outcome: AuditOutcome, a: str, b: str) -> list[Step]:
    verdict = "verified" if outcome.verified else "FAILED: " + "; ".join(outcome.failures)
    return [
        Step(
            f"{a} auditor (audit:read)",
            f"{a} local API",
            "AuditService/ExportBundle, verified offline",
            "verified",
            f"{verdict} ({outcome.bundle_bytes} bytes, tree size {outcome.tree_size}, "
            f"{'cosigned by ' + outcome.cosigned_by if outcome.published else 'not published'})",
        )
    ]


def _audit_table(outcome: AuditOutcome, a: str) -> Table:
    table = Table(title=f"{a}'s audit log (decision records: no personal data)")
    for column in ("index", "event", "decision", "reason code"):
        table.add_column(column)
    for index, kind, decision, reason in outcome.entries:
        table.add_row(str(index), kind, decision, reason)
    return table


def _table(steps: list[Step]) -> Table:
    table = Table(title="Pouch demo: what crossed the wire")
    for column in ("caller", "called", "call", "expected", "outcome"):
        table.add_column(column)
    for step in steps:
        style = "green" if step.as_expected else "bold red"
        table.add_row(
            step.caller, step.target, step.call, step.expected, f"[{style}]{step.outcome}"
        )
    return table


@click.command()
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to create the states' files (default: a new temporary directory).",
)
@click.option("--keep", is_flag=True, help="Leave the gateways running and say how to call them.")
def demo(workdir: Path | None, keep: bool) -> None:
    """Two states' gateways and registries on loopback: mTLS, tokens, a civil-record update."""
    console = Console(width=max(Console().width, 140))
    root = workdir or Path(tempfile.mkdtemp(prefix="pouch-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise click.ClickException(f"{root} is not empty; give an empty --workdir")
    console.print(f"[bold]Pouch demo[/] in {root}")
    a_state, b_state = STATES
    sites = prepare_sites(
        root,
        STATES,
        now=datetime.now(UTC),
        agreements=[(a_state, b_state)],
        checkpoint_interval_s=0.5,
    )
    console.print(
        f"created for {a_state} and {b_state}: a state PKI, an identity provider, a reference "
        f"registry, a configuration, and an agreement signed by both "
        f"({root / a_state / 'agreements'})"
    )
    registries = [RegistryProcess(site) for site in sites.values()]
    processes = [GatewayProcess(site) for site in sites.values()]
    try:
        for registry in registries:
            registry.start()
        for process in processes:
            process.start()
            s = process.site
            console.print(
                f"gateway {s.state}: local API {s.local_target}, peer API {s.peer_target}, "
                f"metrics http://127.0.0.1:{s.metrics_port}/metrics"
            )
        a, b = sites[a_state], sites[b_state]
        steps = asyncio.run(run_scenario(a, b))
        civil = asyncio.run(run_civil_scenario(a, b))
        steps += _civil_steps(civil, a_state, b_state)
        audit = asyncio.run(run_audit_scenario(a, b))
        steps += _audit_steps(audit, a_state, b_state)
        console.print(_table(steps))
        for table in [*_civil_tables(civil, a_state, b_state), _audit_table(audit, a_state)]:
            console.print(table)
        failed = [s for s in steps if not s.as_expected]
        if keep:
            mint = [
                "pouch token mint",
                f"--idp-dir {a.idp.directory}",
                f"--cert {a.pki.client_cert('operator')}",
                f"--issuer {a.issuer} --audience {a.audience}",
                f"--subject operator@{a.state.lower()} --scope admin",
            ]
            running = [p.process for p in processes] + [r.process for r in registries]
            pids = " ".join(str(p.pid) for p in running if p is not None)
            configs = ", ".join(str(s.config_path) for s in sites.values())
            console.print(f"\nThe gateways keep running; stop them with: kill {pids}")
            console.print(f"Configurations: {configs}")
            console.print(f"A token for {a.state}'s operator: {' '.join(mint)}")
        if failed:
            raise click.ClickException(f"{len(failed)} step(s) did not behave as expected")
        console.print(f"[green]all {len(steps)} steps behaved as expected[/]")
    finally:
        if not keep:
            for process in processes:
                process.terminate()
            for registry in registries:
                registry.stop()
