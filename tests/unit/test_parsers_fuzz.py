"""Every parser of untrusted input, fed random and mutated input: it refuses, by name.

The targets are the parsers a partner or a caller reaches: a request's bytes (every
request type of both APIs), page tokens, envelopes, receipts, signed notes and
checkpoints, and MRZs. Each starts from a genuine input and mutates it (bit flips,
cut, spliced, repeated), or draws random input. The assertion is the same for all:
the parser answers with its result or with the project's own refusal
(:class:`~gateway.errors.Rejected`), never another exception. The payload codec, the
agreement loader and the configuration loader have their own fuzz targets beside
their tests. Budgets come from ``tests/fuzz_budget.py`` (``--fuzz-long`` for long runs).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.audit.checkpoint import Checkpoint, open_checkpoint
from gateway.audit.log_signing import CheckpointSigner
from gateway.envelope import verify_receipt
from gateway.errors import Rejected, ValidationRejected
from gateway.exchanges.mrz import parse_mrz
from gateway.pki.note_keys import Ed25519Signer, MLDSA44Signer
from gateway.server import page_tokens
from gateway.server.local_api import METHOD_SCOPES
from gateway.server.request_input import check_values, decode_request
from pouch.v1 import (
    agreement_pb2,
    audit_pb2,
    civil_pb2,
    envelope_pb2,
    gateway_pb2,
    identity_pb2,
    peer_pb2,
    representation_pb2,
)
from tests.fuzz_budget import examples
from tests.unit.envelope import Pki, make_pki
from tests.vectors import load_icao9303_specimens


def fuzz(budget: int) -> settings:
    """``budget`` inputs in the normal suite (see ``tests/fuzz_budget.py``)."""
    return settings(
        max_examples=examples(budget),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@st.composite
def mutated(draw: st.DrawFn, genuine: bytes) -> bytes:
    """``genuine`` with a few random edits: flips, cuts, insertions, repeats."""
    data = bytearray(genuine)
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if edit == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "cut" and data:
            del data[at : at + draw(st.integers(1, 16))]
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif edit == "repeat" and data:
            data[at:at] = data[at : at + draw(st.integers(1, 32))] * draw(st.integers(2, 50))
        else:
            del data[at:]
    return bytes(data)


# -- requests of both APIs ------------------------------------------------------------


# Every service of the local API, registered in the descriptor pool by its module.
_LOCAL_SERVICES = (
    agreement_pb2,
    audit_pb2,
    civil_pb2,
    gateway_pb2,
    identity_pb2,
    representation_pb2,
)


def _request_types() -> list[Any]:
    pool = descriptor_pool.Default()
    types = []
    for path in METHOD_SCOPES:
        service, _, name = path.lstrip("/").partition("/")
        types.append(pool.FindServiceByName(service).methods_by_name[name].input_type)
    for method in peer_pb2.DESCRIPTOR.services_by_name["PeerService"].methods:
        types.append(method.input_type)
    return [GetMessageClass(t) for t in {t.full_name: t for t in types}.values()]


REQUEST_TYPES = _request_types()


@pytest.mark.fuzz
@fuzz(1500)
@given(st.sampled_from(REQUEST_TYPES), st.binary(max_size=512))
def test_request_bytes_of_every_method_parse_or_are_refused_by_name(
    request_type: Any, data: bytes
) -> None:
    try:
        request = decode_request(request_type.FromString, data)
        check_values(request)
    except ValidationRejected as e:
        assert all(v.field and v.rule for v in e.violations)


@pytest.mark.fuzz
@fuzz(800)
@given(st.data())
def test_nested_request_bytes_parse_or_are_refused_by_name(data: st.DataObject) -> None:
    # A field-1 message nested many levels deep: parsers with recursion limits meet them.
    depth = data.draw(st.integers(1, 300))
    inner = data.draw(st.binary(max_size=8))
    for _ in range(depth):
        inner = b"\x0a" + _varint(len(inner)) + inner
    request_type = data.draw(st.sampled_from(REQUEST_TYPES))
    with contextlib.suppress(ValidationRejected):
        check_values(decode_request(request_type.FromString, inner))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


# -- page tokens -------------------------------------------------------------------------


@pytest.mark.fuzz
@fuzz(2000)
@given(
    st.one_of(
        st.text(max_size=700),
        st.builds(
            lambda listing, cursor, cut: page_tokens.issue(listing, cursor)[:cut],
            st.sampled_from(["audit.entries", "civil.updates", "representation.cases"]),
            st.text(max_size=60),
            st.integers(0, 200),
        ),
    )
)
def test_page_token_reads_as_its_cursor_or_is_refused_by_name(token: str) -> None:
    try:
        page_tokens.read_index("audit.entries", token)
    except ValidationRejected as e:
        assert [v.field for v in e.violations] == ["page_token"]


@pytest.mark.fuzz
@fuzz(300)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1))
def test_issued_page_token_reads_back_its_cursor(cursor: str) -> None:
    token = page_tokens.issue("civil.updates", cursor[:300])
    assert page_tokens.read("civil.updates", token) == cursor[:300]


# -- envelopes and receipts --------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A frozen PKI of three parties, made once and only read (67 ms): the fuzz targets
    draw hundreds of inputs within one test, and each verifier is made fresh."""
    return make_pki(Path(tmp_path_factory.mktemp("fuzz-pki")))


@pytest.mark.fuzz
@fuzz(600)
@given(data=st.data())
def test_mutated_envelope_verifies_only_unchanged_or_is_refused(
    pki: Pki, data: st.DataObject
) -> None:
    genuine = pki.envelope(payload=b'{"event_type":"birth"}').SerializeToString()
    changed = data.draw(mutated(genuine))
    try:
        envelope = envelope_pb2.Envelope.FromString(changed)
    except Exception:  # the guard refuses these as MALFORMED_REQUEST before verification
        return
    try:
        verified = pki.verifier().verify(envelope, peer_state="BE")
    except Rejected:
        return
    # What verification vouches for is what was signed (unknown fields may ride along).
    original = pki.verifier().verify(envelope_pb2.Envelope.FromString(genuine), peer_state="BE")
    assert (verified.header, verified.payload) == (original.header, original.payload)


@pytest.mark.fuzz
@fuzz(600)
@given(data=st.data())
def test_mutated_receipt_verifies_only_unchanged_or_is_refused(
    pki: Pki, data: st.DataObject
) -> None:
    receipt = pki.own.receipts.sign_receipt(
        message_id="5f0c8d8e-8f53-4f5e-9d43-4e6c2f7b1a00",
        request_digest="sha256:" + "cd" * 32,
        outcome=envelope_pb2.RECEIPT_OUTCOME_ACCEPTED,
        reason_code="",
        issued_at=pki.now,
    )
    genuine = receipt.SerializeToString()
    try:
        changed = envelope_pb2.Receipt.FromString(data.draw(mutated(genuine)))
    except Exception:
        return
    try:
        verified = verify_receipt(
            changed,
            receiver_bundle=pki.own.bundle,
            expected_message_id="5f0c8d8e-8f53-4f5e-9d43-4e6c2f7b1a00",
            expected_request_digest="sha256:" + "cd" * 32,
            now=pki.now,
        )
    except Rejected:
        return
    assert verified == verify_receipt(
        receipt,
        receiver_bundle=pki.own.bundle,
        expected_message_id="5f0c8d8e-8f53-4f5e-9d43-4e6c2f7b1a00",
        expected_request_digest="sha256:" + "cd" * 32,
        now=pki.now,
    )


# -- signed notes and checkpoints --------------------------------------------------------

ORIGIN = "pouch.gateway/FR/audit"
_LOG = CheckpointSigner(
    ORIGIN, "pouch-fr-audit", Ed25519Signer.generate(), MLDSA44Signer.generate()
)
# Signed with both of the log's keys: an Ed25519 line and an ML-DSA-44 cosignature line.
_NOTE = _LOG.sign(Checkpoint(ORIGIN, 41, bytes(range(32))), datetime(2026, 6, 15, tzinfo=UTC))


@pytest.mark.fuzz
@fuzz(1500)
@given(st.one_of(mutated(_NOTE.encode()), st.binary(max_size=400)))
def test_mutated_signed_checkpoint_opens_only_unchanged_or_is_refused(data: bytes) -> None:
    try:
        opened = open_checkpoint(data, origin=ORIGIN, log_keys=_LOG.verifiers())
    except Rejected:
        return
    assert opened.checkpoint == Checkpoint(ORIGIN, 41, bytes(range(32)))


# -- machine-readable zones --------------------------------------------------------------

_SPECIMENS = load_icao9303_specimens()
_MRZ_TODAY = date(2026, 1, 1)


@pytest.mark.fuzz
@fuzz(2000)
@given(
    st.one_of(
        st.sampled_from(_SPECIMENS).flatmap(
            lambda s: mutated("\n".join(s["lines"]).encode("ascii")).map(
                lambda b: b.decode("latin-1")
            )
        ),
        st.text(max_size=200),
    )
)
def test_mutated_mrz_parses_or_is_refused_by_name(text: str) -> None:
    try:
        parse_mrz(text, today=_MRZ_TODAY, field="mrz")
    except ValidationRejected as e:
        assert all(v.field.startswith("mrz") for v in e.violations)


def test_fuzz_targets_start_from_inputs_that_are_accepted(pki: Pki) -> None:
    """The mutations start from genuine inputs: each of them passes unchanged."""
    envelope = pki.envelope(payload=b'{"event_type":"birth"}')
    assert pki.verifier().verify(envelope, peer_state="BE").header.sender_state == "BE"
    assert open_checkpoint(_NOTE, origin=ORIGIN, log_keys=_LOG.verifiers()).checkpoint.size == 41
    for specimen in _SPECIMENS:
        today = date.fromisoformat(specimen["today"])
        assert parse_mrz("\n".join(specimen["lines"]), today=today)
    assert page_tokens.read_index("audit.entries", page_tokens.issue("audit.entries", "7")) == 7
