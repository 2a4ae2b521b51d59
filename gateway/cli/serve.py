"""``pouch serve``: check everything the configuration names, then run one gateway.

Nothing listens until :func:`~gateway.server.startup_checks.check_startup` has passed;
``--check`` stops there. A refusal is one line on stderr and a non-zero exit. SIGTERM
and SIGINT stop the gateway gracefully; SIGHUP reloads it (:mod:`gateway.server.reload`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click

from gateway.config import ConfigError, Settings, load_settings
from gateway.errors import PouchError, unexpected_summary
from gateway.events import FORMATTERS, configure_logging
from gateway.server.app import Gateway
from gateway.server.startup_checks import StartupError, check_startup

log = logging.getLogger("gateway.cli.serve")


async def run_gateway(settings: Settings) -> None:
    gateway = Gateway(settings)
    try:
        await gateway.start()
    except BaseException:
        await gateway.stop(0)  # whatever had started stops before the error is reported
        raise
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    reloads: set[asyncio.Task[None]] = set()

    def reload_on_signal() -> None:
        task = asyncio.create_task(_reload(gateway))
        reloads.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_on_signal)
    click.echo(
        f"pouch gateway {gateway.state} ready: local API port {gateway.local_port}, "
        f"peer API port {gateway.peer_port}, metrics port {gateway.metrics_port or '-'}",
    )
    await stopping.wait()
    click.echo(f"pouch gateway {gateway.state} stopping")
    await gateway.stop()
    click.echo(f"pouch gateway {gateway.state} stopped")


async def _reload(gateway: Gateway) -> None:
    try:
        report = await gateway.reload("signal:SIGHUP")
    except Exception as e:  # a failed reload must not stop the gateway
        log.error("reload failed: %s", unexpected_summary(e))
        return
    refused = ", ".join(f"{o.kind} {o.file}" for o in report.refused) or "nothing"
    reloaded = ", ".join(o.kind for o in report.reloaded) or "nothing"
    click.echo(f"pouch gateway {gateway.state} reloaded: {reloaded}; refused: {refused}")


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The gateway's TOML configuration file.",
)
@click.option("--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING"]))
@click.option(
    "--log-format",
    default="text",
    type=click.Choice(sorted(FORMATTERS)),
    help="One line per record: text, or one JSON object (events with their fields).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Check the configuration, every file it names, the ports and the database; "
    "then exit without serving.",
)
def serve(config_path: Path, log_level: str, check: bool, log_format: str = "text") -> None:
    """Run a gateway: local API, peer API and metrics, until SIGTERM; SIGHUP reloads
    agreements, CRLs, the JWKS and the TLS certificate (docs/operations.md)."""
    configure_logging(log_format=log_format, level=log_level)
    try:
        settings = load_settings(config_path)
        report = check_startup(settings)
        for warning in report.warnings:
            log.warning("%s", warning)
        if check:
            click.echo(
                f"pouch gateway {settings.gateway.state}: {config_path}: configuration, files, "
                "ports and database checked; ready to serve"
            )
            return
        asyncio.run(run_gateway(settings))
    except (ConfigError, StartupError) as e:
        raise click.ClickException(str(e)) from None
    except PouchError as e:  # e.g. the database fails while starting
        raise click.ClickException(f"cannot start: {e.message} ({e.reason})") from None
