"""The README's operator section, followed as written, for the two states of
``deploy/example``.

The commands are read from README.md itself: every fenced block after an
``<!-- operator-steps -->`` mark, in order, run by bash in a copy of ``deploy/example``
with ``pouch`` on the PATH, as an operator pastes them. A ``pouch serve --config FILE &``
line starts a gateway the test keeps hold of (to stop it at the end); the commands
after it run against the running gateways. The only liberty taken is the ports: the
example's fixed ports are swapped for free ones, in the commands and in the copied
configurations, so that the test can run beside others. Nothing else is done for the
operator: no hand-written client, no openssl, no file the README does not make. What
the test checks besides the commands' exit codes (each state's health, the update in
BE's spool, AT's listing showing it applied) it reads without changing anything.

If the README's steps stop working (a renamed option, a missing step, a configuration
that no longer starts), this test fails on the command that broke, with its output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pouch_devtools.demo.deployment import free_port, stop_process
from tests.integration.conftest import channel_to

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLE = ROOT / "deploy" / "example"
MARK = "<!-- operator-steps -->"
EXAMPLE_PORTS = ("7443", "7444", "9464", "8443", "8444", "9465")
_SERVE = re.compile(r"pouch serve --config (?P<config>\S+) &")
_FENCE = re.compile(r"(?P<indent>\s*)```(?P<info>\S*)\s*")
READY_TIMEOUT_S = 60.0
T = TypeVar("T")


def operator_blocks(text: str) -> list[str]:
    """The shell blocks the README marks as the operator's steps, dedented, in order."""
    lines = text.splitlines()
    blocks: list[str] = []
    for index, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        opening = _FENCE.fullmatch(lines[index + 1])
        assert opening is not None, f"README.md:{index + 2}: {MARK} must precede a fence"
        assert opening["info"] == "sh", f"README.md:{index + 2}: a marked block is sh"
        indent = len(opening["indent"])
        body: list[str] = []
        for candidate in lines[index + 2 :]:
            if candidate.strip() == "```":
                break
            body.append(candidate[indent:])
        else:
            raise AssertionError(f"README.md:{index + 2}: the block is never closed")
        blocks.append("\n".join(body))
    return blocks


@dataclass(frozen=True)
class Walkthrough:
    """The marked commands, split where gateways start: ``before`` (a script), the
    configurations ``serve`` starts, and ``after`` (a script run while they serve)."""

    before: str
    serve: tuple[str, ...]
    after: str


def walkthrough(text: str) -> Walkthrough:
    before: list[str] = []
    serve: list[str] = []
    after: list[str] = []
    for line in "\n".join(operator_blocks(text)).splitlines():
        started = _SERVE.fullmatch(line.strip())
        if started is not None:
            serve.append(started["config"])
        else:
            (after if serve else before).append(line)
    return Walkthrough("\n".join(before), tuple(serve), "\n".join(after))


def test_the_readme_marks_the_operator_steps_from_pki_to_running_gateways() -> None:
    steps = walkthrough(README.read_text(encoding="utf-8"))
    for command in (
        "pouch pki init --state AT",
        "--offline-ca",
        "pouch keys sealing",
        "pouch keys hash-key",
        "pouch agreement sign",
        "pouch db init",
        "pouch serve --check",
    ):
        assert command in steps.before, command
    assert steps.serve == ("AT/gateway.toml", "BE/gateway.toml")
    for command in ("pouch doctor --config AT/gateway.toml", "pouch civil submit"):
        assert command in steps.after, command
    assert "openssl" not in steps.before + steps.after


def _with_ports(text: str, ports: dict[str, str]) -> str:
    for old, new in ports.items():
        text = re.sub(rf"(?<![0-9]){old}(?![0-9])", new, text)
    return text


def _bash(script: str, cwd: Path, env: dict[str, str], step: str) -> str:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, (
        f"the README's {step} failed (exit {result.returncode}):\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result.stdout


def _wait_for(condition: Callable[[], T], timeout_s: float = 60.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            assert value, "the walkthrough's exchange did not complete"
            return value
        time.sleep(0.5)


@dataclass
class Served:
    config: str
    process: subprocess.Popen[bytes]
    log: Path

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.log.read_text(encoding="utf-8", errors="replace")
            if " ready: local API port " in text:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{self.config} did not become ready:\n{self.log.read_text()}")


@pytest.fixture
def gateways() -> Iterator[list[Served]]:
    served: list[Served] = []
    yield served
    for gateway in served:
        stop_process(gateway.process, timeout_s=20)


def _serving(example: Path, state: str, port: str) -> health_pb2.HealthCheckResponse.ServingStatus:
    pki = example / state / "pki"
    channel = channel_to(
        f"localhost:{port}",
        trusted_ca=(pki / "ca.crt").read_bytes(),
        chain=(pki / "clients" / "operator.crt").read_bytes(),
        key=(pki / "clients" / "operator.key").read_bytes(),
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return answer.status


def test_an_operator_following_the_readme_brings_up_two_states(
    tmp_path: Path, gateways: list[Served]
) -> None:
    ports = {old: str(free_port()) for old in EXAMPLE_PORTS}
    example = tmp_path / "pouch-example"
    shutil.copytree(EXAMPLE, example)
    for toml in example.glob("*/gateway.toml"):
        toml.write_text(_with_ports(toml.read_text(encoding="utf-8"), ports))
    steps = walkthrough(_with_ports(README.read_text(encoding="utf-8"), ports))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["PYTHONUNBUFFERED"] = "1"

    output = _bash(steps.before, example, env, "steps before the gateways start")
    assert output.count("ready to serve") == 2, output
    for state in ("AT", "BE"):
        # The CA key stayed offline: the gateway's directory never held it.
        assert not (example / state / "pki" / "ca.key").exists()
        assert (example / "offline" / f"{state}-ca" / "ca.key").is_file()

    for config in steps.serve:
        log = example / f"{Path(config).parent.name}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                ["pouch", "serve", "--config", config],
                cwd=example,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        gateways.append(Served(config, process, log))
    for gateway in gateways:
        gateway.wait_ready()

    assert _serving(example, "AT", ports["7443"]) == health_pb2.HealthCheckResponse.SERVING
    assert _serving(example, "BE", ports["8443"]) == health_pb2.HealthCheckResponse.SERVING
    output = _bash(steps.after, example, env, "steps run against the running gateways")
    assert output.count(", 0 FAIL") == 2, output  # pouch doctor, for each state

    # The birth AT submitted reaches BE's registry, and BE's decision comes back to AT.
    handed_over = _wait_for(lambda: sorted((example / "BE" / "data" / "inbound").glob("*/*.jsonl")))
    (record,) = (json.loads(line) for line in handed_over[0].read_text().splitlines())
    assert (record["sender_state"], record["agreement_id"]) == ("AT", "at-be-civil")
    exports = "\n".join(line for line in steps.after.splitlines() if line.startswith("export "))
    listing = f"{exports}\npouch civil list --to BE --json"
    _wait_for(lambda: "APPLIED" in _bash(listing, example, env, "listing"))

    for gateway in gateways:
        gateway.process.terminate()
        assert gateway.process.wait(timeout=30) == 0, gateway.log.read_text()
        assert "stopped" in gateway.log.read_text()
