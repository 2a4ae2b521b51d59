"""``pouch demo``: three states' gateways on loopback, and every exchange between them.

AT and BE, and LU and BE, have signed agreements; AT and LU have not. BE's registry
holds identity documents. The scenario: mutual TLS and tokens, a civil-record update
AT -> BE, identity confirmations AT -> BE, a representation case LU -> BE from
request to completion with a cost claim, refusals by policy, and AT's audit log
cosigned by BE and verified offline. The exit status is 0 only if every step behaved
as expected.

The ``pouch demo`` command of the gateway (``gateway/cli/demo.py``) imports this module
only when it runs, so a gateway installed without the development tools has none of it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shlex
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console

from pouch_devtools.console_site import ConsoleProcess, identity_provider, prepare_console
from pouch_devtools.demo import report
from pouch_devtools.demo.audit_scenario import run_audit_scenario
from pouch_devtools.demo.civil_scenario import run_civil_scenario
from pouch_devtools.demo.deployment import GatewayProcess, RegistryProcess, Site, prepare_sites
from pouch_devtools.demo.identity_scenario import run_identity_scenario, seed_identity_documents
from pouch_devtools.demo.representation_scenario import run_representation_scenario
from pouch_devtools.demo.scenario import Step, run_scenario
from pouch_devtools.oidc_provider import INSTALL_COMMAND, node_modules_present

# AT asks BE (civil records, identities); LU, with no mission in Cabo Verde, asks BE's.
REQUESTER, RESPONDER, REPRESENTED = "AT", "BE", "LU"
STATES = (REQUESTER, RESPONDER, REPRESENTED)
AGREEMENTS = ((REQUESTER, RESPONDER), (REPRESENTED, RESPONDER))


async def _run_all(sites: dict[str, Site], console: Console) -> list[Step]:
    a, b, lu = sites[REQUESTER], sites[RESPONDER], sites[REPRESENTED]
    steps = await run_scenario(a, b)
    civil = await run_civil_scenario(a, b)
    steps += report.civil_steps(civil, a.state, b.state)
    identity = await run_identity_scenario(a, b)
    steps += report.identity_steps(identity, a.state, b.state)
    case = await run_representation_scenario(lu, b)
    steps += report.representation_steps(case)
    audit = await run_audit_scenario(a, b)
    steps += report.audit_steps(audit, a.state, b.state)
    console.print(report.steps_table(steps))
    for table in (
        *report.civil_tables(civil, a.state, b.state),
        report.identity_table(identity, a.state, b.state),
        report.representation_table(case, lu.state),
        report.audit_table(audit, a.state),
        report.evidence_table(audit, a.state, b.state),
    ):
        console.print(table)
    return steps


def _pouch() -> str:
    """The ``pouch`` command next to this interpreter (a venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "pouch"
    return str(beside) if beside.exists() else "pouch"


def _mint_command(site: Site) -> list[str]:
    return [
        _pouch(), "token", "mint",
        "--idp-dir", str(site.idp.directory),
        "--cert", str(site.pki.client_cert("operator")),
        "--issuer", site.issuer, "--audience", site.audience,
        "--subject", f"operator@{site.state.lower()}", "--scope", "admin",
    ]  # fmt: skip


def _how_to_call(sites: dict[str, Site], running: Sequence[int], console: Console) -> None:
    pids = " ".join(map(str, running))
    console.print(f"\nThe gateways and registries keep running; stop them with: kill {pids}")
    for site in sites.values():
        console.print(
            f"[bold]{site.state}[/]: local API {site.local_target}, peer API {site.peer_target}, "
            f"configuration {site.config_path}\n"
            f"  CA {site.pki.ca_cert}\n"
            f"  client certificate {site.pki.client_cert('operator')}, "
            f"key {site.pki.client_key('operator')}\n"
            f"  a token for its operator: {shlex.join(_mint_command(site))}",
            soft_wrap=True,
        )
    site = sites[REQUESTER]
    token_file = site.root / "operator.token"
    connection = {
        "POUCH_TARGET": site.local_target,
        "POUCH_CA": str(site.pki.ca_cert),
        "POUCH_CERT": str(site.pki.client_cert("operator")),
        "POUCH_KEY": str(site.pki.client_key("operator")),
        "POUCH_TOKEN_FILE": str(token_file),
    }
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in connection.items())
    console.print(
        f"\nFor example, {site.state}'s gateway, partners, agreements and backlog "
        "(docs/cli.md lists every command):\n"
        f"  {shlex.join(_mint_command(site))} > {shlex.quote(str(token_file))}\n"
        f"  export {exports}\n"
        f"  {_pouch()} status\n"
        f"  {_pouch()} agreement list",
        soft_wrap=True,
        markup=False,
    )


def start_consoles(sites: dict[str, Site], console: Console) -> list[int]:
    """Each state's identity provider and ``pouch console``, left running; their pids.

    Without the provider's Node.js packages the consoles are not started, and the
    command that installs them is printed instead."""
    if importlib.util.find_spec("authlib") is None:
        console.print(
            "\nThe consoles need the console extra: pip install -e '.[console]' -e ./devtools",
            markup=False,
        )
        return []
    if not node_modules_present():
        console.print(
            f"\nThe consoles need their identity provider's packages: run `{INSTALL_COMMAND}` "
            "and `pouch demo --keep` again.",
            markup=False,
        )
        return []
    pids: list[int] = []
    now = datetime.now(UTC)
    for site in sites.values():
        partners = [s for s in sites if s != site.state]
        state_console = prepare_console(site, partners, now=now)
        provider = identity_provider(state_console)
        provider.start()
        process = ConsoleProcess(state_console)
        process.start()
        pids += [p for p in (provider.pid, process.process and process.process.pid) if p]
        console.print(
            f"\n[bold]{site.state} console[/]: {state_console.url} (its certificate is issued "
            f"by {site.state}'s CA, {site.pki.ca_cert}; identity provider {site.issuer})",
            soft_wrap=True,
        )
        for officer in state_console.officers:
            role = ", ".join(officer.scopes)
            if officer.partner_state:
                role += f", restricted to the partnership with {officer.partner_state}"
            console.print(
                f"  sign in as {officer.username} / {officer.password}  ({role})",
                soft_wrap=True,
                markup=False,
            )
    return pids


def run_demo(workdir: Path | None, keep: bool) -> None:
    """What ``pouch demo`` runs: the states in ``workdir`` (a new temporary directory
    without it), every step, and the report; :class:`click.ClickException` when a step
    did not behave as expected. ``keep`` leaves the processes running."""
    console = Console(width=max(Console().width, 140))
    root = workdir or Path(tempfile.mkdtemp(prefix="pouch-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise click.ClickException(f"{root} is not empty; give an empty --workdir")
    console.print(f"[bold]Pouch demo[/] in {root}")
    sites = prepare_sites(
        root,
        STATES,
        now=datetime.now(UTC),
        agreements=AGREEMENTS,
        checkpoint_interval_s=0.5,
        # Kept running, each state gets its web console and the identity provider its
        # officers sign in at; the provider's issuer is in the gateways' configuration.
        identity_providers=keep,
    )
    seed_identity_documents(sites[RESPONDER])
    pairs = " and ".join(f"{first}–{second}" for first, second in AGREEMENTS)
    console.print(
        f"created for {', '.join(STATES)}: a state PKI, an identity provider, a reference "
        f"registry and a configuration each; agreements signed by both parties for {pairs}; "
        f"passports in {RESPONDER}'s registry"
    )
    registries = [RegistryProcess(site) for site in sites.values()]
    processes = [GatewayProcess(site) for site in sites.values()]
    try:
        for registry in registries:
            registry.start()
        # All at once: a gateway that calls a partner not yet up backs off before retrying.
        for process in processes:
            process.launch()
        for process in processes:
            process.wait_ready()
            s = process.site
            console.print(
                f"gateway {s.state}: local API {s.local_target}, peer API {s.peer_target}, "
                f"metrics http://127.0.0.1:{s.metrics_port}/metrics"
            )
        steps = asyncio.run(_run_all(sites, console))
        failed = [s for s in steps if not s.as_expected]
        if keep:
            running = [p.process for p in processes] + [r.process for r in registries]
            pids = [p.pid for p in running if p is not None]
            pids += start_consoles(sites, console)
            _how_to_call(sites, pids, console)
        if failed:
            raise click.ClickException(f"{len(failed)} step(s) did not behave as expected")
        console.print(f"[green]all {len(steps)} steps behaved as expected[/]")
    finally:
        if not keep:
            for process in processes:
                process.terminate()
            for registry in registries:
                registry.stop()
