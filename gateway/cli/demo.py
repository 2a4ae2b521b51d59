"""``pouch demo``: start gateways for two states on loopback and show them talking."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from gateway.demo.deployment import GatewayProcess, prepare_sites
from gateway.demo.scenario import Step, run_scenario

STATES = ("AT", "BE")


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
    """Create PKI for two states, start their gateways, and exchange over mutual TLS."""
    console = Console(width=max(Console().width, 140))
    root = workdir or Path(tempfile.mkdtemp(prefix="pouch-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise click.ClickException(f"{root} is not empty; give an empty --workdir")
    console.print(f"[bold]Pouch demo[/] in {root}")
    sites = prepare_sites(root, STATES, now=datetime.now(UTC))
    console.print(
        "created a state PKI, an identity provider and a configuration for " + ", ".join(STATES)
    )
    processes = [GatewayProcess(site) for site in sites.values()]
    try:
        for process in processes:
            process.start()
            s = process.site
            console.print(
                f"gateway {s.state}: local API {s.local_target}, peer API {s.peer_target}, "
                f"metrics http://127.0.0.1:{s.metrics_port}/metrics"
            )
        steps = asyncio.run(run_scenario(sites[STATES[0]], sites[STATES[1]]))
        console.print(_table(steps))
        failed = [s for s in steps if not s.as_expected]
        if keep:
            a = sites[STATES[0]]
            mint = [
                "pouch token mint",
                f"--idp-dir {a.idp.directory}",
                f"--cert {a.pki.client_cert('operator')}",
                f"--issuer {a.issuer} --audience {a.audience}",
                f"--subject operator@{a.state.lower()} --scope admin",
            ]
            pids = " ".join(str(p.process.pid) for p in processes if p.process)
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
