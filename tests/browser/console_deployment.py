"""Two states' gateways, identity providers and consoles, as the console's tests use them.

LU and BE share an agreement (civil records, identity, representation); LU and FR share
another, whose entries a BE auditor at LU's console must never reach. LU and BE each run
a gateway (``pouch serve``), a reference registry, an OpenID Connect provider
(oidc-provider under Node.js) and a console (``pouch console``), all as processes over
real TLS on loopback; FR runs a gateway and a registry only (its partnership with LU is
the one LU's checkpoints also wait for: published means cosigned by every partner).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from playwright.sync_api import Page, expect

from pouch_devtools.console_site import (
    ConsoleProcess,
    ConsoleSite,
    identity_provider,
    prepare_console,
)
from pouch_devtools.demo.deployment import (
    GatewayProcess,
    RegistryProcess,
    Site,
    agreement_id_for,
    prepare_sites,
)
from tests.integration.exchange_fixtures import FAST_DELIVERY
from tests.needs import require_node_modules

LU_BE = agreement_id_for("LU", "BE")
LU_FR = agreement_id_for("LU", "FR")


@dataclass(frozen=True)
class Deployment:
    root: Path
    sites: dict[str, Site]
    consoles: dict[str, ConsoleSite]

    def log_files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*.log") if p.is_file())


@contextlib.contextmanager
def running_deployment(root: Path) -> Iterator[Deployment]:
    require_node_modules()
    now = datetime.now(UTC)
    sites = prepare_sites(
        root,
        ["LU", "BE", "FR"],
        now=now,
        agreements=[("LU", "BE"), ("LU", "FR")],
        identity_providers=True,
        checkpoint_interval_s=0.5,
        delivery=FAST_DELIVERY,
    )
    consoles = {
        "LU": prepare_console(sites["LU"], ["BE", "FR"], now=now),
        "BE": prepare_console(sites["BE"], ["LU"], now=now),
    }
    with contextlib.ExitStack() as stack:
        for console in consoles.values():
            stack.enter_context(identity_provider(console))
        for state in ("LU", "BE", "FR"):
            registry = RegistryProcess(sites[state])
            registry.start()
            stack.callback(registry.stop)
        for state in ("LU", "BE", "FR"):
            gateway = GatewayProcess(sites[state])
            gateway.start()
            stack.callback(gateway.terminate)
        for console in consoles.values():
            process = ConsoleProcess(console)
            process.start()
            stack.callback(process.stop)
        yield Deployment(root=root, sites=sites, consoles=consoles)


def sign_in(page: Page, console: ConsoleSite, username: str) -> None:
    """Sign ``username`` in at ``console`` through its identity provider's own form."""
    officer = console.officer(username)
    page.goto(f"{console.url}/sign-in")
    page.get_by_role("link", name="Sign in with the identity provider").click()
    page.get_by_label("Username").fill(officer.username)
    page.get_by_label("Password").fill(officer.password)
    page.get_by_role("button", name="Sign in").click()
    # The callback's page moves on to the officer's start page by itself.
    page.wait_for_url(lambda url: url.startswith(console.url) and "/auth/" not in url)
    expect(page.get_by_text(f"Signed in as {officer.name}")).to_be_visible()
