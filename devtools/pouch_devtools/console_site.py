"""One state's web console beside its demo gateway: provider, certificates, officers.

For a :class:`~pouch_devtools.demo.deployment.Site` prepared with
``identity_providers=True``, :func:`prepare_console` issues what the console and its
identity provider need from the state's own PKI (``pouch pki issue-server`` and
``issue-client``'s code), makes the officers' accounts with fresh passwords, and writes
the console's ``console.toml``. :func:`identity_provider` is the state's OpenID Connect
provider (oidc-provider under Node.js) signing with the development key the gateway's
JWKS already names; :class:`ConsoleProcess` runs ``pouch console`` as its own process.

Officers of state XX (usernames):

* ``xx-consul``: ``representation:request`` and ``representation:act``;
* ``xx-auditor``: ``audit:read``;
* ``xx-operator``: ``admin``;
* ``yy-auditor-at-xx`` for each partner YY: ``audit:read`` restricted to the partnership.
"""

from __future__ import annotations

import secrets
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from gateway.pki.idp import private_signing_jwk
from gateway.pki.keys import write_secret_file
from gateway.pki.layout import issue_client, issue_server
from pouch_devtools.demo.deployment import Site, free_port, stop_process
from pouch_devtools.oidc_provider import Account, Client, IdentityProvider, ProviderTls

CONSOLE_CLIENT_ID = "pouch-console"
READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ConsoleSite:
    site: Site
    port: int
    config_path: Path
    officers: tuple[Account, ...]
    client_secret: str = field(repr=False)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def officer(self, username: str) -> Account:
        for officer in self.officers:
            if officer.username == username:
                return officer
        raise KeyError(username)


def _officers(state: str, partners: Sequence[str]) -> tuple[Account, ...]:
    s = state.lower()

    def password() -> str:
        return secrets.token_urlsafe(12)

    officers = [
        Account(
            f"{s}-consul",
            password(),
            f"Consular officer {state}",
            ("representation:request", "representation:act"),
        ),
        Account(f"{s}-auditor", password(), f"Auditor {state}", ("audit:read",)),
        Account(f"{s}-operator", password(), f"Operator {state}", ("admin",)),
    ]
    officers += [
        Account(
            f"{p.lower()}-auditor-at-{s}",
            password(),
            f"Auditor of {p} at {state}",
            ("audit:read",),
            partner_state=p,
        )
        for p in partners
    ]
    return tuple(officers)


def prepare_console(site: Site, partners: Sequence[str], *, now: datetime) -> ConsoleSite:
    """Certificates, officers and ``console/console.toml`` for ``site``'s console."""
    if site.issuer_url is None:
        raise ValueError(f"{site.state}: prepare the sites with identity_providers=True")
    root = site.root / "console"
    root.mkdir(parents=True, exist_ok=True)
    for name in ("idp", "console"):
        issue_server(
            site.pki.root,
            name,
            dns_names=["localhost"],
            ip_addresses=["127.0.0.1"],
            now=now,
            validity_days=30,
            replace=True,
        )
    issue_client(site.pki.root, "console", now=now)
    secret = secrets.token_urlsafe(32)
    write_secret_file(root / "oidc-client-secret", secret.encode("ascii"), overwrite=True)
    port = free_port()
    pki = site.pki.root
    config = root / "console.toml"
    config.write_text(
        "\n".join(
            [
                "[console]",
                f'state = "{site.state}"',
                f'listen = "127.0.0.1:{port}"',
                f'public_url = "https://127.0.0.1:{port}"',
                f'tls_certificate = "{pki / "servers" / "console.crt"}"',
                f'tls_key = "{pki / "servers" / "console.key"}"',
                "session_idle_minutes = 15",
                f'metrics_listen = "127.0.0.1:{free_port()}"',
                'time_zone = "Europe/Brussels"',
                "",
                "[gateway]",
                f'target = "{site.local_target}"',
                f'ca = "{site.pki.ca_cert}"',
                f'certificate = "{site.pki.client_cert("console")}"',
                f'key = "{site.pki.client_key("console")}"',
                f'trust_bundle = "{site.pki.bundle}"',
                "",
                "[oidc]",
                f'issuer = "{site.issuer}"',
                f'client_id = "{CONSOLE_CLIENT_ID}"',
                'client_secret_file = "oidc-client-secret"',
                f'ca = "{site.pki.ca_cert}"',
                f'resource = "{site.audience}"',
                "",
            ]
        ),
        encoding="utf-8",
    )
    return ConsoleSite(
        site=site,
        port=port,
        config_path=config,
        officers=_officers(site.state, partners),
        client_secret=secret,
    )


def identity_provider(console: ConsoleSite) -> IdentityProvider:
    """The state's provider (not yet started), on the port its issuer names."""
    site = console.site
    assert site.issuer_url is not None
    port = int(site.issuer_url.rsplit(":", 1)[1])
    pki = site.pki.root
    return IdentityProvider(
        site.root / "console" / "idp",
        tls=ProviderTls(
            cert=pki / "servers" / "idp.crt",
            key=pki / "servers" / "idp.key",
            client_ca=site.pki.ca_cert,
        ),
        resource=site.audience,
        clients=[
            Client(
                CONSOLE_CLIENT_ID,
                console.client_secret,
                redirect_uris=(f"{console.url}/auth/callback",),
                post_logout_redirect_uris=(f"{console.url}/signed-out",),
            )
        ],
        accounts=console.officers,
        port=port,
        signing_jwk=private_signing_jwk(site.idp),
        # A working day: the console's idle timeout ends an officer's session sooner.
        access_token_ttl_s=8 * 3600,
    )


class ConsoleProcess:
    """``pouch console --config`` as its own process, ready once it answers HTTPS."""

    def __init__(self, console: ConsoleSite, *, log_path: Path | None = None) -> None:
        self.console = console
        self.log_path = log_path or console.config_path.parent / "console.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "console",
                    "--config",
                    str(self.console.config_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_ready()

    def wait_ready(self) -> None:
        context = ssl.create_default_context(cafile=str(self.console.site.pki.ca_cert))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"pouch console exited with {self.process.returncode}: "
                    + self.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
                )
            try:
                with urllib.request.urlopen(  # noqa: S310 (an https URL of our own)
                    f"{self.console.url}/sign-in", context=context, timeout=2
                ):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"pouch console did not answer at {self.console.url} in time")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None
