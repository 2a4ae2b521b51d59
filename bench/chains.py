"""The two chains every networked scenario is measured on, each hop its own process.

Gateway chain: caller -> AT gateway (local API) -> BE gateway (peer API) -> BE's
reference registry, plus AT's registry (for case events and outcomes), all as
``pouch_devtools.demo.deployment`` starts them.

Relay chain, the raw baseline, with the same certificates on every hop:

- caller -> relay A: the caller presents AT's operator certificate and trusts AT's
  CA; relay A presents AT's gateway TLS certificate and requires clients of AT's CA
  (as AT's local API does);
- relay A -> relay B: relay A presents AT's gateway certificate and trusts BE's CA;
  relay B presents BE's gateway certificate and requires clients of AT's CA, the
  partner CA (as BE's peer API does);
- relay B -> registry stub: relay B presents BE's registry-adapter client certificate
  and trusts BE's CA; the stub is served with BE's registry server certificate and
  requires clients of BE's CA (as BE's reference registry is).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import grpc.aio

from bench.relay import TALLY
from gateway.connect import ClientIdentity
from pouch_devtools.demo.deployment import (
    GatewayProcess,
    RegistryProcess,
    Site,
    free_port,
    prepare_sites,
    stop_process,
)

REPOSITORY = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 30.0
# The poll interval is the default a deployment runs with: new work wakes the dispatcher
# and the inbound loop, so polling only finds retries, which back off quickly here.
DELIVERY = {
    "backoff_initial_seconds": 0.1,
    "backoff_max_seconds": 1.0,
    "batch_size": 200,
}
DAILY_QUOTA = 100_000_000


def prepare(workdir: Path) -> dict[str, Site]:
    """An AT–BE deployment: PKI, the demo agreement signed by both, configuration."""
    return prepare_sites(
        workdir,
        ["AT", "BE"],
        now=datetime.now(UTC),
        agreements=[("AT", "BE")],
        delivery=DELIVERY,
        daily_quota=DAILY_QUOTA,
    )


class GatewayChain:
    """Both gateways and both reference registries, started and stopped together."""

    def __init__(self, at: Site, be: Site, *, program: Sequence[str] | None = None) -> None:
        """``program`` runs each gateway's ``serve`` instead of ``python -m gateway``
        (``bench/floor.py`` gives the gateways with work taken out)."""
        self.at, self.be = at, be
        self.registries = {"registry AT": RegistryProcess(at), "registry BE": RegistryProcess(be)}
        self.gateways = {
            "gateway AT": GatewayProcess(at, program=program),
            "gateway BE": GatewayProcess(be, program=program),
        }

    def start(self) -> None:
        for registry in self.registries.values():
            registry.start()
        for gateway in self.gateways.values():
            gateway.launch()
        for gateway in self.gateways.values():
            gateway.wait_ready()

    def stop(self) -> None:
        for gateway in self.gateways.values():
            gateway.terminate()
        for registry in self.registries.values():
            registry.stop()

    @property
    def pids(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for processes in (self.gateways, self.registries):
            for name, started in processes.items():
                if started.process is not None:
                    found[name] = started.process.pid
        return found


@dataclass(frozen=True)
class StubTally:
    applied: int
    last_applied: float  # time.time() on the stub
    latencies: list[float]


class _BenchProcess:
    def __init__(self, name: str, arguments: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.relay", *arguments],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPOSITORY,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            if b" ready on " in self.log_path.read_bytes():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready; see {self.log_path}")

    def stop(self) -> None:
        stop_process(self.process)


class RelayChain:
    """Relay A, relay B and the registry stub on the deployment's certificates."""

    def __init__(self, at: Site, be: Site) -> None:
        self.at, self.be = at, be
        self.a_port, self.b_port, self.stub_port = free_port(), free_port(), free_port()
        self._processes: dict[str, _BenchProcess] = {}

    @property
    def caller_target(self) -> str:
        return f"127.0.0.1:{self.a_port}"

    def caller_identity(self) -> ClientIdentity:
        return self.at.client_identity()

    def _stub_identity(self) -> ClientIdentity:
        return ClientIdentity.from_files(
            trusted_ca=self.be.pki.ca_cert,
            certificate=self.be.pki.client_cert("registry-adapter"),
            private_key=self.be.pki.client_key("registry-adapter"),
        )

    def start(self) -> None:
        at, be = self.at.pki, self.be.pki
        logs = self.at.root.parent
        stub = _BenchProcess(
            "registry stub",
            [
                "stub",
                f"--listen=127.0.0.1:{self.stub_port}",
                f"--cert={self.be.registry_dir / 'server.crt'}",
                f"--key={self.be.registry_dir / 'server.key'}",
                f"--client-ca={be.ca_cert}",
            ],
            logs / "stub.log",
        )
        relay_b = _BenchProcess(
            "relay B",
            [
                "relay",
                f"--listen=127.0.0.1:{self.b_port}",
                f"--cert={be.gateway_cert}",
                f"--key={be.gateway_key}",
                f"--client-ca={at.ca_cert}",
                f"--upstream=127.0.0.1:{self.stub_port}",
                f"--upstream-ca={be.ca_cert}",
                f"--upstream-cert={be.client_cert('registry-adapter')}",
                f"--upstream-key={be.client_key('registry-adapter')}",
            ],
            logs / "relay-b.log",
        )
        relay_a = _BenchProcess(
            "relay A",
            [
                "relay",
                f"--listen={self.caller_target}",
                f"--cert={at.gateway_cert}",
                f"--key={at.gateway_key}",
                f"--client-ca={at.ca_cert}",
                f"--upstream=127.0.0.1:{self.b_port}",
                f"--upstream-ca={be.ca_cert}",
                f"--upstream-cert={at.gateway_cert}",
                f"--upstream-key={at.gateway_key}",
            ],
            logs / "relay-a.log",
        )
        self._processes = {"relay A": relay_a, "relay B": relay_b, "registry stub": stub}
        for process in self._processes.values():
            process.wait_ready()

    def stop(self) -> None:
        for process in self._processes.values():
            process.stop()

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.process.pid for name, p in self._processes.items()}

    async def tally(self, *, reset: bool = False) -> StubTally:
        """What the stub has applied since the last reset (see :mod:`bench.relay`)."""
        target = f"127.0.0.1:{self.stub_port}"
        async with grpc.aio.secure_channel(target, self._stub_identity().credentials()) as ch:
            answer = await ch.unary_unary(
                TALLY, request_serializer=None, response_deserializer=None
            )(b"reset" if reset else b"", timeout=30)
        loaded = json.loads(answer)
        return StubTally(
            applied=int(loaded["applied"]),
            last_applied=float(loaded["last_applied"]),
            latencies=[float(v) for v in loaded["latencies"]],
        )


@contextmanager
def running(*chains: GatewayChain | RelayChain) -> Iterator[None]:
    started: list[GatewayChain | RelayChain] = []
    try:
        for chain in chains:
            started.append(chain)
            chain.start()
        yield
    finally:
        for chain in reversed(started):
            chain.stop()
