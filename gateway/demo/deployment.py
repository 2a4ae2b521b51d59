"""A throw-away deployment of several states on one machine, for the demo and tests.

Each state gets its own directory: a PKI made by ``pouch pki init``'s code, a
development identity provider, an operator's client certificate, copies of its
partners' trust bundles and CRLs (the out-of-band exchange, pinned by digest), and a
configuration file. Gateways run as real ``pouch serve`` processes on loopback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gateway.connect import ClientIdentity
from gateway.pki.bundle import load_trust_bundle
from gateway.pki.directory import StateDirectory
from gateway.pki.idp import DevelopmentIdp, create_development_idp, mint_token
from gateway.pki.layout import init_state, issue_client

OPERATOR = "operator"
READY_TIMEOUT_S = 30.0


def free_port() -> int:
    """A port free on loopback now (the OS picks it; a later bind may still race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Site:
    """Everything one state's demo gateway needs on disk."""

    state: str
    root: Path
    pki: StateDirectory
    idp: DevelopmentIdp
    local_port: int
    peer_port: int
    metrics_port: int

    @property
    def config_path(self) -> Path:
        return self.root / "gateway.toml"

    @property
    def issuer(self) -> str:
        return f"https://idp.{self.state.lower()}.pouch.test"

    @property
    def audience(self) -> str:
        return f"pouch:{self.state}"

    @property
    def local_target(self) -> str:
        return f"127.0.0.1:{self.local_port}"

    @property
    def peer_target(self) -> str:
        return f"127.0.0.1:{self.peer_port}"

    def client_identity(self, name: str = OPERATOR) -> ClientIdentity:
        """A local caller of this state, trusting this state's CA."""
        return ClientIdentity.from_files(
            trusted_ca=self.pki.ca_cert,
            certificate=self.pki.client_cert(name),
            private_key=self.pki.client_key(name),
        )

    def gateway_identity(self, trusting: Site) -> ClientIdentity:
        """This gateway as a client of ``trusting``'s peer API."""
        return ClientIdentity.from_files(
            trusted_ca=trusting.pki.ca_cert,
            certificate=self.pki.gateway_cert,
            private_key=self.pki.gateway_key,
        )

    def token(self, scopes: Sequence[str], *, now: float, client: str = OPERATOR) -> str:
        return mint_token(
            key_path=self.idp.key_path,
            jwks_path=self.idp.jwks_path,
            issuer=self.issuer,
            audience=self.audience,
            subject=f"{client}@{self.state.lower()}",
            scopes=scopes,
            client_cert_pem=self.pki.client_cert(client).read_bytes(),
            lifetime_s=600,
            now=now,
        )


def prepare_sites(workdir: Path, states: Sequence[str], *, now: datetime) -> dict[str, Site]:
    """Create PKI, identity providers and configuration for ``states``, all partnered."""
    sites: dict[str, Site] = {}
    for state in states:
        root = workdir / state
        peer_port = free_port()
        pki = init_state(
            state,
            root / "pki",
            dns_names=["localhost"],
            ip_addresses=["127.0.0.1"],
            peer_endpoint=f"127.0.0.1:{peer_port}",
            crl_location=None,
            now=now,
        )
        issue_client(pki.root, OPERATOR, now=now)
        sites[state] = Site(
            state=state,
            root=root,
            pki=pki,
            idp=create_development_idp(root / "idp"),
            local_port=free_port(),
            peer_port=peer_port,
            metrics_port=free_port(),
        )
    for site in sites.values():
        partners = [p for p in sites.values() if p.state != site.state]
        _write_config(site, partners)
    return sites


def _write_config(site: Site, partners: Sequence[Site]) -> None:
    lines = [
        "[gateway]",
        f'state = "{site.state}"',
        'database_url = "sqlite:///data/pouch.db"',
        "",
        "[pki]",
        'dir = "pki"',
        "",
        "[local_api]",
        f'listen = "127.0.0.1:{site.local_port}"',
        "",
        "[peer_api]",
        f'listen = "127.0.0.1:{site.peer_port}"',
        "",
        "[tokens]",
        f'issuer = "{site.issuer}"',
        f'audience = "{site.audience}"',
        'jwks_file = "idp/jwks.json"',
        'algorithms = ["ES256"]',
        "",
        "[metrics]",
        f'listen = "127.0.0.1:{site.metrics_port}"',
    ]
    for partner in partners:
        # The out-of-band exchange: the partner's bundle and CRL, pinned by digest.
        folder = site.root / "partners" / partner.state
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(partner.pki.bundle, folder / "bundle.json")
        shutil.copyfile(partner.pki.crl, folder / "crl.pem")
        digest = load_trust_bundle(partner.pki.bundle).digest
        lines += [
            "",
            "[[partners]]",
            f'state = "{partner.state}"',
            f'bundle = "partners/{partner.state}/bundle.json"',
            f'bundle_digest = "{digest}"',
            f'crl = "partners/{partner.state}/crl.pem"',
        ]
    site.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class GatewayProcess:
    """One ``pouch serve`` process; started and stopped like an operator would."""

    def __init__(self, site: Site, *, log_path: Path | None = None) -> None:
        self.site = site
        self.log_path = log_path or site.root / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(self.site.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        marker = f"pouch gateway {self.site.state} ready".encode()
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"gateway {self.site.state} exited with {self.process.returncode}; "
                    f"see {self.log_path}"
                )
            if marker in self.log_path.read_bytes():
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"gateway {self.site.state} did not become ready; see {self.log_path}")

    def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, then wait; returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait()
