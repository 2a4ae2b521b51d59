"""AT's gateway witnesses BE's log over c2sp.org/tlog-witness HTTP, as over gRPC.

AT runs in this process with ``[witness_http]`` on a loopback port (BE's gateway is
not running: the test speaks as BE's log, signing checkpoints with BE's audit keys,
over a deterministic tree whose every root and proof it can compute). Tests share the
one witness record AT keeps of BE's log, so each first reads where it stands (the
monitoring endpoint) and offers from there: they run in any order.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from gateway.audit.checkpoint import Checkpoint, audit_key_name, audit_origin
from gateway.audit.cosignature import partner_cosigners, verify_cosignatures
from gateway.audit.log_signing import CheckpointSigner
from gateway.audit.merkle import consistency_proof, leaf_hash, root, subtree_levels
from gateway.audit.witness_protocol import (
    SIZE_CONTENT_TYPE,
    AddCheckpoint,
    add_checkpoint_body,
    origin_hash,
)
from gateway.pki.bundle import load_trust_bundle
from gateway.pki.note_keys import Ed25519Signer, MLDSA44Signer
from gateway.server.app import Gateway
from pouch.v1 import peer_pb2
from pouch_devtools.demo.deployment import Site, free_port, prepare_sites
from tests.integration.exchange_fixtures import FAST_DELIVERY, PeerCaller, running_gateways

TIMEOUT_S = 10.0
TREE = 64  # leaves of BE's pretend log: enough for every test to grow it in any order
FORBIDDEN = ("Traceback", 'File "', "PRIVATE KEY")


class Tree:
    """BE's log as the tests grow it: leaf i hashes ``entry i``."""

    def __init__(self, leaves: int) -> None:
        self._levels = subtree_levels([leaf_hash(f"entry {i}".encode()) for i in range(leaves)])

    def _node(self, level: int, index: int) -> bytes:
        return self._levels[level][index]

    def root(self, size: int) -> bytes:
        return root(size, self._node)

    def proof(self, old: int, size: int) -> list[bytes]:
        return [] if old in (0, size) else consistency_proof(old, size, self._node)


@dataclass(frozen=True)
class Witnessing:
    """AT's witness endpoint, and BE's log speaking to it."""

    gateway: Gateway
    at: Site
    be: Site
    url: str
    tree: Tree
    be_log: CheckpointSigner

    def client(self) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.at.pki.ca_cert))
        return httpx.Client(base_url=self.url, verify=context, timeout=TIMEOUT_S)

    def checkpoint(self, size: int) -> Checkpoint:
        return Checkpoint(audit_origin("BE"), size, self.tree.root(size))

    def note(self, size: int, signer: CheckpointSigner | None = None) -> str:
        return (signer or self.be_log).sign(self.checkpoint(size), datetime.now(UTC))

    def body(self, old: int, size: int, *, note: str | None = None) -> bytes:
        proof = tuple(self.tree.proof(old, size))
        return add_checkpoint_body(AddCheckpoint(old, proof, note or self.note(size)))

    def cosigned_size(self, client: httpx.Client) -> int:
        """The size AT last cosigned for BE's log, read from its monitoring endpoint."""
        answer = client.get(f"/{origin_hash(audit_origin('BE'))}/checkpoint")
        if answer.status_code == 404:
            return 0
        assert answer.status_code == 200, answer.text
        return int(answer.text.split("\n")[1])


@pytest.fixture(scope="module")
def witnessing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Witnessing]:
    """AT with its witness endpoint (about 1 s to start: once for the module)."""
    root = tmp_path_factory.mktemp("witness-http")
    sites = prepare_sites(
        root, ["AT", "BE"], now=datetime.now(UTC), agreements=[("AT", "BE")], delivery=FAST_DELIVERY
    )
    port = free_port()
    add_witness_http(sites["AT"], port)
    with running_gateways(sites, ["AT"], spool_root=root / "spool") as running:
        gateway = running.gateway("AT")
        assert gateway.witness_port == port
        yield Witnessing(
            gateway=gateway,
            at=sites["AT"],
            be=sites["BE"],
            url=f"https://127.0.0.1:{port}",
            tree=Tree(TREE),
            be_log=CheckpointSigner.for_state(sites["BE"].pki),
        )


def add_witness_http(site: Site, port: int, prefix: str = "") -> None:
    with site.config_path.open("a", encoding="utf-8") as config:
        config.write(f'\n[witness_http]\nlisten = "127.0.0.1:{port}"\nprefix = "{prefix}"\n')


def grow(w: Witnessing, client: httpx.Client, by: int = 1) -> tuple[int, httpx.Response]:
    """Offer BE's next checkpoint, ``by`` entries larger than the one AT cosigned."""
    old = w.cosigned_size(client)
    size = old + by
    return size, client.post("/add-checkpoint", content=w.body(old, size))


def witness_requests(w: Witnessing, status: str) -> float:
    """``pouch_witness_http_requests_total`` for add-checkpoint answers of ``status``."""
    value = w.gateway.metrics.registry.get_sample_value(
        "pouch_witness_http_requests_total", {"endpoint": "add-checkpoint", "status": status}
    )
    return value or 0.0


def assert_one_safe_line(answer: httpx.Response) -> None:
    assert answer.text.endswith("\n") and answer.text.count("\n") == 1, answer.text
    for marker in FORBIDDEN:
        assert marker not in answer.text


def test_a_partner_checkpoint_is_cosigned_with_two_lines_that_verify(
    witnessing: Witnessing,
) -> None:
    w = witnessing
    with w.client() as client:
        size, answer = grow(w, client, by=2)
        assert answer.status_code == 200, answer.text
        lines = answer.text
        assert lines.count("\n") == 2 and all(line.startswith("— ") for line in lines.splitlines())
        cosigners = partner_cosigners(load_trust_bundle(w.at.pki.bundle))
        verified = verify_cosignatures(w.checkpoint(size), lines, cosigners)
        assert [c.key_name for c in verified] == ["pouch-at-witness"] * 2
        # The monitoring endpoint serves the checkpoint with BE's signatures and AT's.
        assert w.cosigned_size(client) == size
        published = client.get(f"/{origin_hash(audit_origin('BE'))}/checkpoint").text
        assert all(line in published for line in lines.splitlines())
        assert f"— {audit_key_name('BE')} " in published


def test_an_old_size_other_than_the_one_cosigned_is_409_with_that_size(
    witnessing: Witnessing,
) -> None:
    w = witnessing
    with w.client() as client:
        size, answer = grow(w, client)
        assert answer.status_code == 200, answer.text
        conflicts = witness_requests(w, "409")
        refused = client.post("/add-checkpoint", content=w.body(0, size + 2))
        assert refused.status_code == 409
        assert witness_requests(w, "409") == conflicts + 1  # the operator sees it
        assert refused.headers["content-type"].startswith(SIZE_CONTENT_TYPE)
        assert refused.text == f"{size}\n"
        # Told the size, the log offers from it and is cosigned.
        retried = client.post("/add-checkpoint", content=w.body(size, size + 2))
        assert retried.status_code == 200, retried.text


def test_a_checkpoint_of_a_log_not_witnessed_here_is_404(witnessing: Witnessing) -> None:
    w = witnessing
    with w.client() as client:
        _, answer = grow(w, client)
        assert answer.status_code == 200, answer.text
        stranger = CheckpointSigner(
            audit_origin("CH"),
            audit_key_name("CH"),
            Ed25519Signer.generate(),
            MLDSA44Signer.generate(),
        )
        note = stranger.sign(Checkpoint(audit_origin("CH"), 1, w.tree.root(1)), datetime.now(UTC))
        refused = client.post(
            "/add-checkpoint", content=add_checkpoint_body(AddCheckpoint(0, (), note))
        )
        assert refused.status_code == 404
        assert_one_safe_line(refused)
        assert client.get(f"/{origin_hash(audit_origin('CH'))}/checkpoint").status_code == 404


def test_a_checkpoint_signed_by_other_keys_under_the_log_key_name_is_403(
    witnessing: Witnessing,
) -> None:
    w = witnessing
    forger = CheckpointSigner(
        audit_origin("BE"), audit_key_name("BE"), Ed25519Signer.generate(), MLDSA44Signer.generate()
    )
    with w.client() as client:
        old = w.cosigned_size(client)
        refused = client.post(
            "/add-checkpoint", content=w.body(old, old + 1, note=w.note(old + 1, forger))
        )
        assert refused.status_code == 403
        assert_one_safe_line(refused)
        # A line of BE's own key whose signature does not verify is refused the same way.
        genuine = w.note(old + 1)
        body, _, signatures = genuine.partition("\n\n")
        first, rest = signatures.split("\n", 1)
        tampered = first[:-6] + ("AAAA" if first[-6:-2] != "AAAA" else "BBBB") + first[-2:]
        forged = f"{body}\n\n{tampered}\n{rest}"
        refused = client.post("/add-checkpoint", content=w.body(old, old + 1, note=forged))
        assert refused.status_code == 403
        accepted = client.post("/add-checkpoint", content=w.body(old, old + 1, note=genuine))
        assert accepted.status_code == 200, accepted.text


def test_a_consistency_proof_that_does_not_verify_is_422_and_audited(
    witnessing: Witnessing,
) -> None:
    w = witnessing
    with w.client() as client:
        old, answer = grow(w, client)
        assert answer.status_code == 200, answer.text
        size = old + 3
        proof = w.tree.proof(old, size)
        proof[0] = bytes([proof[0][0] ^ 0x10]) + proof[0][1:]
        bad = add_checkpoint_body(AddCheckpoint(old, tuple(proof), w.note(size)))
        refused = client.post("/add-checkpoint", content=bad)
        assert refused.status_code == 422
        assert_one_safe_line(refused)
        assert refusals(w.gateway, "CHECKPOINT_INCONSISTENT") >= 1
        # Same size, another root: 422 too.
        other = Checkpoint(audit_origin("BE"), old, w.tree.root(old + 1))
        fork = w.be_log.sign(other, datetime.now(UTC))
        forked = client.post(
            "/add-checkpoint", content=add_checkpoint_body(AddCheckpoint(old, (), fork))
        )
        assert forked.status_code == 422
        assert client.post("/add-checkpoint", content=w.body(old, size)).status_code == 200


def test_a_malformed_request_is_400_in_one_line(witnessing: Witnessing) -> None:
    w = witnessing
    with w.client() as client:
        old = w.cosigned_size(client)
        for body in (
            b"",
            b"old 01\n\n" + w.note(old + 1).encode(),
            b"old 1\nnot base64!\n\n" + w.note(old + 1).encode(),
            b"\xff\xfe",
            b"old 0\n" + w.note(old + 1).encode(),
        ):
            answer = client.post("/add-checkpoint", content=body)
            assert answer.status_code == 400, (body[:20], answer.text)
            assert_one_safe_line(answer)
        # An old size above the checkpoint's.
        answer = client.post(
            "/add-checkpoint",
            content=add_checkpoint_body(AddCheckpoint(old + 5, (), w.note(old + 1))),
        )
        assert answer.status_code == 400
        assert_one_safe_line(answer)
        too_large = client.post("/add-checkpoint", content=b"old 0\n" + b"A" * 300_000)
        assert too_large.status_code == 400


def test_http_and_grpc_cosign_against_one_record_of_the_partner_log(
    witnessing: Witnessing,
) -> None:
    w = witnessing
    with w.client() as client, PeerCaller(w.be, w.at) as be:
        size, answer = grow(w, client)
        assert answer.status_code == 200, answer.text
        # Over gRPC, the next checkpoint is checked against the one cosigned over HTTP.
        request = peer_pb2.CosignCheckpointRequest(
            signed_checkpoint=w.note(size + 2), consistency_proof=w.tree.proof(size, size + 2)
        )
        cosigned = be.stub.CosignCheckpoint(request, timeout=TIMEOUT_S)
        verify_cosignatures(
            w.checkpoint(size + 2),
            cosigned.cosignature,
            partner_cosigners(load_trust_bundle(w.at.pki.bundle)),
        )
        assert w.cosigned_size(client) == size + 2
        # And over HTTP, an offer from the size before it is a conflict naming it.
        stale = client.post("/add-checkpoint", content=w.body(size, size + 3))
        assert stale.status_code == 409 and stale.text == f"{size + 2}\n"


def refusals(gateway: Gateway, reason: str) -> int:
    assert gateway.exchanges is not None
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        found = [
            r
            for r in gateway.exchanges.audit_log.entries(
                event_kind="checkpoint_refused", limit=1000
            )
            if r.reason_code == reason
        ]
        if found or time.monotonic() > deadline:
            return len(found)
        time.sleep(0.05)


def test_the_witness_listener_is_off_without_its_section(tmp_path: Path) -> None:
    sites = prepare_sites(tmp_path, ["AT"], now=datetime.now(UTC))
    with running_gateways(sites, ["AT"], spool_root=tmp_path / "spool") as running:
        assert running.gateway("AT").witness_port == 0
