"""A throw-away deployment of several states on one machine, for the demo and tests.

Each state gets its own directory: a PKI made by ``pouch pki init``'s code, a
development identity provider, an operator's client certificate, copies of its
partners' trust bundles and CRLs (the out-of-band exchange, pinned by digest), and a
configuration file. Its database is created as an operator creates it, by what
``pouch db init`` runs, since ``pouch serve`` never creates one. Gateways run as real
``pouch serve`` processes on loopback.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gateway.cli.db import init_database
from gateway.config import load_settings
from gateway.connect import ClientIdentity
from gateway.pki.bundle import load_trust_bundle
from gateway.pki.directory import StateDirectory
from gateway.pki.idp import DevelopmentIdp, create_development_idp, mint_token
from gateway.pki.keys import (
    write_public_file,
    write_secret_file,
)
from gateway.pki.layout import init_state, issue_client, issue_server
from gateway.pki.sealing import generate_sealing_key
from pouch_devtools.demo.agreements import write_hash_key, write_signed_agreement

OPERATOR = "operator"
READY_TIMEOUT_S = 30.0


# Ports are chosen below the kernel's ephemeral range, the one outgoing connections take
# their local port from: a port chosen there could be taken by any connection (a gateway
# calling its partner) between the moment it is chosen and the moment its server binds.
_LOWEST_PORT = 10_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()
_choice = random.SystemRandom()


def free_port() -> int:
    """A port free on loopback now, outside the range outgoing connections draw from, and
    never handed out before by this process. Another process may still bind it first."""
    try:
        highest = int(_EPHEMERAL_RANGE.read_text().split()[0]) - 1
    except (OSError, ValueError, IndexError):
        highest = 32_767  # Linux's default range starts at 32768
    with _handed_out_lock:
        for _ in range(200):
            port = _choice.randint(_LOWEST_PORT, max(_LOWEST_PORT, highest))
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
        # No luck below the range (a narrow one, or a crowded machine): let the OS pick.
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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
    registry_port: int
    # Where the state's OpenID Connect provider runs, when it runs one (the console).
    issuer_url: str | None = None

    @property
    def registry_db(self) -> Path:
        return self.root / "registry" / "registry.db"

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    @property
    def agreements_dir(self) -> Path:
        return self.root / "agreements"

    @property
    def hash_keys_dir(self) -> Path:
        return self.root / "secrets" / "hash-keys"

    @property
    def sealing_key_file(self) -> Path:
        return self.root / "secrets" / "sealing.key"

    @property
    def config_path(self) -> Path:
        return self.root / "gateway.toml"

    @property
    def issuer(self) -> str:
        if self.issuer_url is not None:
            return self.issuer_url
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


def agreement_id_for(first: str, second: str) -> str:
    return f"{first.lower()}-{second.lower()}-civil"


def prepare_sites(
    workdir: Path,
    states: Sequence[str],
    *,
    now: datetime,
    agreements: Sequence[tuple[str, str]] = (),
    delivery: Mapping[str, float] | None = None,
    daily_quota: int = 100_000,
    database_urls: Mapping[str, str] | None = None,
    checkpoint_interval_s: float | None = None,
    identity_providers: bool = False,
) -> dict[str, Site]:
    """Create PKI, identity providers and configuration for ``states``, all partnered.

    Each pair in ``agreements`` gets a civil-record agreement signed by both, a shared
    hashing key, and each state of such a pair a reference registry behind mutual TLS
    and its own key sealing stored payloads (``secrets/sealing.key``).
    ``delivery`` overrides keys of the ``[delivery]`` section (tests shorten backoff);
    ``database_urls`` puts a state's gateway on another database than its SQLite file
    (one that exists: its schema is created here, as for the default file).
    ``identity_providers`` gives each state the issuer of an OpenID Connect provider
    on a port of its own (:mod:`pouch_devtools.console_site` starts it), signing with
    the development key the scripts' tokens are minted with.
    """
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
            registry_port=free_port(),
            issuer_url=f"https://127.0.0.1:{free_port()}" if identity_providers else None,
        )
    for first, second in agreements:
        a, b = sites[first], sites[second]
        agreement_id = agreement_id_for(first, second)
        write_signed_agreement(
            agreement_id,
            a.pki,
            b.pki,
            [a.agreements_dir, b.agreements_dir],
            today=now.date(),
            daily_quota=daily_quota,
        )
        write_hash_key(agreement_id, [a.hash_keys_dir, b.hash_keys_dir])
    with_agreements = {state for pair in agreements for state in pair}
    for site in sites.values():
        partners = [p for p in sites.values() if p.state != site.state]
        exchanges = site.state in with_agreements
        if exchanges:
            _issue_registry_certificates(site, now)
            if not site.sealing_key_file.exists():
                site.sealing_key_file.parent.mkdir(parents=True, exist_ok=True)
                generate_sealing_key(site.sealing_key_file)
        database_url = (database_urls or {}).get(site.state)
        if database_url is None:
            database_url = "sqlite:///data/pouch.db"
            (site.root / "data").mkdir(parents=True, exist_ok=True)
        _write_config(
            site,
            partners,
            exchanges=exchanges,
            delivery=delivery or {},
            database_url=database_url,
            checkpoint_interval_s=checkpoint_interval_s,
        )
        init_database(load_settings(site.config_path))
    return sites


def _issue_registry_certificates(site: Site, now: datetime) -> None:
    """The registry's server certificate (``pouch pki issue-server``), copied where the
    registry reads it, and the gateway adapter's client certificate."""
    cert, key = issue_server(
        site.pki.root,
        "registry",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        now=now,
        validity_days=90,
        replace=True,
    )
    site.registry_dir.mkdir(parents=True, exist_ok=True)
    write_public_file(site.registry_dir / "server.crt", cert.read_bytes())
    write_secret_file(site.registry_dir / "server.key", key.read_bytes(), overwrite=True)
    issue_client(site.pki.root, "registry-adapter", now=now)


def _write_config(
    site: Site,
    partners: Sequence[Site],
    *,
    exchanges: bool,
    delivery: Mapping[str, float],
    database_url: str,
    checkpoint_interval_s: float | None = None,
) -> None:
    lines = [
        "[gateway]",
        f'state = "{site.state}"',
        f'database_url = "{database_url}"',
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
    if exchanges:
        lines += [
            "",
            "[agreements]",
            'dir = "agreements"',
            'hash_keys_dir = "secrets/hash-keys"',
            "",
            "[storage]",
            'sealing_key_file = "secrets/sealing.key"',
            "",
            "[registry]",
            'kind = "grpc"',
            f'target = "127.0.0.1:{site.registry_port}"',
            'tls_ca = "pki/ca.crt"',
            'tls_cert = "pki/clients/registry-adapter.crt"',
            'tls_key = "pki/clients/registry-adapter.key"',
        ]
    if checkpoint_interval_s is not None:
        lines += ["", "[audit]", f"checkpoint_interval_seconds = {checkpoint_interval_s!r}"]
    if delivery:
        lines += ["", "[delivery]"] + [f"{key} = {value!r}" for key, value in delivery.items()]
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


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM, and SIGKILL if it has not exited within ``timeout_s``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class GatewayProcess:
    """One ``pouch serve`` process; started and stopped like an operator would."""

    def __init__(
        self,
        site: Site,
        *,
        log_path: Path | None = None,
        program: Sequence[str] | None = None,
        serve_options: Sequence[str] = (),
    ) -> None:
        """``program`` is the command ``serve --config ...`` is given to; by default
        ``python -m gateway``. ``serve_options`` follow (``--log-format json``)."""
        self.serve_options = tuple(serve_options)
        self.site = site
        self.log_path = log_path or site.root / "gateway.log"
        self.program = tuple(program) if program else (sys.executable, "-m", "gateway")
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the process without waiting; :meth:`wait_ready` waits for it."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # A restart appends to the same log: only what this start writes counts.
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *self.program,
                    "serve",
                    "--config",
                    str(self.site.config_path),
                    *self.serve_options,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        marker = f"pouch gateway {self.site.state} ready".encode()
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"gateway {self.site.state} exited with {self.process.returncode}; "
                    f"see {self.log_path}"
                )
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                if marker in log.read():
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


class RegistryProcess:
    """A state's reference registry as its own process, behind mutual TLS."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.log_path = site.registry_dir / "registry.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        d = self.site.registry_dir
        d.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pouch_devtools.reference_registry",
                    "--db",
                    str(self.site.registry_db),
                    "--listen",
                    f"127.0.0.1:{self.site.registry_port}",
                    "--tls-cert",
                    str(d / "server.crt"),
                    "--tls-key",
                    str(d / "server.key"),
                    "--client-ca",
                    str(self.site.pki.ca_cert),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"registry {self.site.state} exited; see {self.log_path}")
            if b"reference registry ready" in self.log_path.read_bytes():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"registry {self.site.state} did not become ready")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
