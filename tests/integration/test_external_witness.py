"""An independent witness process cosigns AT's checkpoints beside BE, and auditors need it.

AT and BE run in this process over real TLS; a third process, the standalone witness of
``pouch_devtools.witness`` (written from the C2SP specifications, sharing no code with
the gateway), speaks only HTTP tlog-witness on loopback. AT's ``[[audit.witnesses]]``
names it; a checkpoint is published once BE and the witness cosigned it. The bundle AT
exports then verifies with ``pouch audit verify`` given both trust bundles and the
witness's key, and fails, naming the witness, once its cosignature is taken out.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
from click.testing import CliRunner
from sqlalchemy import delete

from gateway.audit.checkpoint import audit_origin
from gateway.audit.log_signing import CheckpointSigner
from gateway.cli.audit import audit
from gateway.server.app import Gateway
from gateway.store.engine import write_transaction
from gateway.store.tables import audit_witness_cosignatures
from pouch.v1 import audit_pb2, common_pb2
from pouch_devtools.demo.deployment import Site, agreement_id_for, prepare_sites
from tests.integration.exchange_fixtures import (
    FAST_DELIVERY,
    LocalCaller,
    death_update,
    running_gateways,
    submission,
)
from tests.integration.test_audit_trail import Auditor

WITNESS = "witness.test/w1"
AT_BE = agreement_id_for("AT", "BE")
TIMEOUT_S = 30.0
T = TypeVar("T")


def eventually(probe: Callable[[], T | None], *, what: str, within_s: float = TIMEOUT_S) -> T:
    deadline = time.monotonic() + within_s
    while (found := probe()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:.0f} s: {what}")
        time.sleep(0.1)
    return found


@dataclass(frozen=True)
class WitnessProcess:
    process: subprocess.Popen[str]
    vkeys: list[str]
    vkey_file: Path
    state_file: Path
    port: int

    def cosigned_size(self) -> int:
        """The size of AT's log this witness last cosigned, from its own record."""
        if not self.state_file.exists():
            return 0
        state = json.loads(self.state_file.read_text())
        return int(state.get(audit_origin("AT"), {}).get("size", 0))


@contextlib.contextmanager
def witness_process(root: Path, at: Site) -> Iterator[WitnessProcess]:
    """The standalone witness, trusting AT's log keys, on a port of its choosing."""
    root.mkdir(parents=True, exist_ok=True)
    log_keys = root / "at-log.vkeys"
    log_keys.write_text(
        "".join(f"{key.vkey}\n" for key in CheckpointSigner.for_state(at.pki).verifiers())
    )
    port_file, vkey_file = root / "witness.port", root / "witness.vkeys"
    command = [
        sys.executable,
        "-m",
        "pouch_devtools.witness",
        "--name",
        WITNESS,
        "--key-file",
        str(root / "witness.keys"),
        "--state-file",
        str(root / "witness.json"),
        "--log",
        f"{audit_origin('AT')}={log_keys}",
        "--listen",
        "127.0.0.1:0",
        "--port-file",
        str(port_file),
        "--vkey-file",
        str(vkey_file),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        vkeys = [process.stdout.readline().strip() for _ in range(2)]
        port = eventually(
            lambda: int(port_file.read_text()) if port_file.exists() else None,
            what="the witness listens",
            within_s=15,
        )
        yield WitnessProcess(process, vkeys, vkey_file, root / "witness.json", port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def add_external_witness(site: Site, witness: WitnessProcess) -> None:
    vkeys = ", ".join(f'"{vkey}"' for vkey in witness.vkeys)
    with site.config_path.open("a", encoding="utf-8") as config:
        config.write(
            f'\n[[audit.witnesses]]\nname = "{WITNESS}"\n'
            f'url = "http://127.0.0.1:{witness.port}/"\nvkeys = [{vkeys}]\n'
        )


@dataclass(frozen=True)
class Witnessed:
    at: Site
    be: Site
    gateway: Gateway
    witness: WitnessProcess
    bundle: Path
    tree_size: int


def publish(site: Site) -> audit_pb2.PublishCheckpointResponse | None:
    """Ask AT to publish now; the answer once it is published, else ``None``."""
    with Auditor(site, scopes=("admin",)) as operator:
        answer: audit_pb2.PublishCheckpointResponse = operator.stub.PublishCheckpoint(
            audit_pb2.PublishCheckpointRequest(), metadata=operator.metadata, timeout=TIMEOUT_S
        )
    return answer if answer.published else None


def grow_log(site: Site) -> None:
    """An update from AT to BE, applied: AT's log gains its stages."""
    with LocalCaller(site, ["civil:submit"]) as clerk:
        message_id = clerk.submit(
            submission(
                death_update(datetime.now(UTC).date()), agreement_id=AT_BE, recipient_state="BE"
            )
        )
        assert clerk.wait_until_final(message_id).state == common_pb2.DELIVERY_STATE_APPLIED


@pytest.fixture(scope="module")
def witnessed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Witnessed]:
    """AT, BE and the witness process, with one checkpoint published and exported
    (about 3 s: once for the module)."""
    root = tmp_path_factory.mktemp("external-witness")
    sites = prepare_sites(
        root,
        ["AT", "BE"],
        now=datetime.now(UTC),
        agreements=[("AT", "BE")],
        delivery=FAST_DELIVERY,
        checkpoint_interval_s=0.5,
    )
    with witness_process(root / "witness", sites["AT"]) as witness:
        add_external_witness(sites["AT"], witness)
        with running_gateways(sites, ["AT", "BE"], spool_root=root / "spool") as running:
            grow_log(sites["AT"])
            answer = eventually(lambda: publish(sites["AT"]), what="AT publishes a checkpoint")
            with Auditor(sites["AT"]) as auditor:
                exported = auditor.export()
            bundle = root / "at-audit.json"
            bundle.write_bytes(exported)
            yield Witnessed(
                at=sites["AT"],
                be=sites["BE"],
                gateway=running.gateway("AT"),
                witness=witness,
                bundle=bundle,
                tree_size=answer.tree_size,
            )


def verify(w: Witnessed, bundle: Path, *extra: str) -> tuple[int, str]:
    arguments = [
        "verify",
        str(bundle),
        "--bundle",
        str(w.at.pki.bundle),
        "--bundle",
        str(w.be.pki.bundle),
        *extra,
    ]
    result = CliRunner().invoke(audit, arguments)
    return result.exit_code, result.output


def without_witness_lines(bundle: Path, out: Path) -> Path:
    document = json.loads(bundle.read_text(encoding="utf-8"))
    note = document["checkpoint"]
    kept = [line for line in note.split("\n") if not line.startswith(f"— {WITNESS} ")]
    assert len(kept) == note.count("\n") + 1 - 2, "the bundle held two witness lines"
    document["checkpoint"] = "\n".join(kept)
    out.write_text(json.dumps(document), encoding="utf-8")
    return out


def test_the_independent_witness_cosigns_the_published_checkpoint(witnessed: Witnessed) -> None:
    w = witnessed
    assert w.witness.cosigned_size() >= w.tree_size > 0
    document = json.loads(w.bundle.read_text(encoding="utf-8"))
    assert document["witness_keys"] == {WITNESS: w.witness.vkeys}
    assert document["checkpoint"].count(f"— {WITNESS} ") == 2


def test_the_bundle_verifies_with_both_trust_bundles_and_the_witness_key(
    witnessed: Witnessed,
) -> None:
    w = witnessed
    code, output = verify(w, w.bundle, "--witness-key", f"{WITNESS}={w.witness.vkey_file}")
    assert code == 0, output
    assert f"by {WITNESS}" in output
    assert "VERIFIED" in output


def test_a_bundle_without_the_witness_cosignature_fails_when_its_key_is_required(
    witnessed: Witnessed, tmp_path: Path
) -> None:
    w = witnessed
    stripped = without_witness_lines(w.bundle, tmp_path / "stripped.json")
    # The partner's cosignature is still there: without the witness's key it verifies.
    code, output = verify(w, stripped)
    assert code == 0, output
    code, output = verify(w, stripped, "--witness-key", f"{WITNESS}={w.witness.vkey_file}")
    assert code == 1, output
    assert f"not cosigned by witness {WITNESS}" in output


def test_a_witness_ahead_of_our_record_is_offered_again_from_the_size_it_names(
    witnessed: Witnessed,
) -> None:
    w = witnessed
    # AT forgets what the witness cosigned: its next offer says old 0, the witness
    # answers 409 with its size, and AT offers again from there with a proof.
    assert w.gateway.exchanges is not None
    with write_transaction(w.gateway.engine) as conn:
        conn.execute(delete(audit_witness_cosignatures))
    before = w.witness.cosigned_size()
    grow_log(w.at)
    answer = eventually(
        lambda: (a := publish(w.at)) and (a if a.tree_size > before else None),
        what="AT publishes a larger checkpoint",
    )
    assert w.witness.cosigned_size() == answer.tree_size
    stored = w.gateway.exchanges.checkpoints.witness_cosignatures(answer.tree_size)
    assert list(stored) == [WITNESS]


def test_a_forged_witness_cosignature_fails_naming_the_witness(
    witnessed: Witnessed, tmp_path: Path
) -> None:
    w = witnessed
    document = json.loads(w.bundle.read_text(encoding="utf-8"))
    lines = document["checkpoint"].split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith(f"— {WITNESS} "))
    # The key ID and timestamp stay; one signature character changes.
    line = lines[at]
    lines[at] = line[:-6] + ("A" if line[-6] != "A" else "B") + line[-5:]
    document["checkpoint"] = "\n".join(lines)
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(document), encoding="utf-8")
    code, output = verify(w, w.bundle, "--witness-key", f"{WITNESS}={w.witness.vkey_file}")
    assert code == 0, output
    code, output = verify(w, forged, "--witness-key", f"{WITNESS}={w.witness.vkey_file}")
    assert code == 1, output
    assert f"cosignature by witness {WITNESS} does not verify" in output


def test_a_witness_key_given_under_another_name_is_refused(
    witnessed: Witnessed,
) -> None:
    w = witnessed
    code, output = verify(w, w.bundle, "--witness-key", f"witness.test/other={w.witness.vkey_file}")
    assert code == 2, output
    assert "trusted witness key of witness.test/other" in output
