"""The civil-record part of ``pouch demo``: one birth notified from one state to the other.

Everything shown is read back from what really happened: the gateway's answers, the
envelope that was signed and sent (from the sender's outbox), the partner's signed
receipts, and the partner registry's row.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from gateway.connect import bearer, secure_channel
from gateway.pki.sealing import PayloadSealer, load_sealing_keys
from gateway.policy.catalogue import civil_record_payload
from pouch.v1 import civil_pb2, civil_pb2_grpc, common_pb2, envelope_pb2
from pouch_devtools.demo.agreements import CIVIL_PURPOSE
from pouch_devtools.demo.deployment import Site, agreement_id_for

CALL_TIMEOUT_S = 10.0
SETTLE_TIMEOUT_S = 30.0
FINAL = {
    common_pb2.DELIVERY_STATE_APPLIED,
    common_pb2.DELIVERY_STATE_REJECTED,
    common_pb2.DELIVERY_STATE_DEAD_LETTERED,
}


@dataclass(frozen=True)
class CivilOutcome:
    message_id: str
    state: str
    reason_code: str
    removed: tuple[str, ...]
    transformed: tuple[str, ...]
    delivery_receipt: str
    acknowledgement: str
    registry_rows: int
    refused_purpose: str


def demo_birth(
    recipient: str,
    agreement_id: str,
    *,
    purpose: str = CIVIL_PURPOSE,
    reference: str = "demo-birth-1",
) -> civil_pb2.SubmitUpdateRequest:
    """A fictitious birth registered abroad, to be notified to the state of nationality."""
    update = civil_pb2.CivilRecordUpdate(
        event_type=civil_pb2.CIVIL_EVENT_TYPE_BIRTH,
        event_date=common_pb2.CivilDate(year=2026, month=3, day=14),
        event_place=common_pb2.Place(country_code="AT", locality="Graz"),
        act_reference="GRZ-2026-000042",
    )
    child = update.parties.add(role=civil_pb2.PARTY_ROLE_SUBJECT)
    child.person.name.given_names.append("Lena")
    child.person.name.family_names.append("Example")
    child.person.date_of_birth.CopyFrom(common_pb2.CivilDate(year=2026, month=3, day=14))
    child.person.place_of_birth.CopyFrom(common_pb2.Place(country_code="AT", locality="Graz"))
    child.person.nationalities.append(recipient)
    child.person.registry_identifier = "BE-0000-DEMO"
    mother = update.parties.add(role=civil_pb2.PARTY_ROLE_MOTHER)
    mother.person.name.given_names.append("Anna")
    mother.person.name.family_names.append("Example")
    mother.person.nationalities.append(recipient)
    return civil_pb2.SubmitUpdateRequest(
        client_reference=reference,
        recipient_state=recipient,
        agreement_id=agreement_id,
        purpose=purpose,
        update=update,
    )


def _leaves(tree: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from _leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(tree, list):
        for item in tree:
            yield from _leaves(item, f"{path}[]")
    else:
        yield path, tree


def policy_effect(
    sent: Mapping[str, Any], submitted: Mapping[str, Any]
) -> tuple[set[str], set[str]]:
    """Paths the policy removed, and paths whose values it transformed (never values)."""
    before: dict[str, list[Any]] = {}
    after: dict[str, list[Any]] = {}
    for path, value in _leaves(submitted):
        before.setdefault(path, []).append(value)
    for path, value in _leaves(sent):
        after.setdefault(path, []).append(value)
    removed = {p for p in before if p not in after}
    transformed = {p for p in before if p in after and before[p] != after[p]}
    return removed, transformed


def _sent_envelope(site: Site, message_id: str) -> tuple[envelope_pb2.Envelope, bytes | None]:
    with sqlite3.connect(f"file:{site.root / 'data' / 'pouch.db'}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT envelope, receipt FROM outbox WHERE message_id = ?", (message_id,)
        ).fetchone()
    # The stored envelope is sealed at rest; the demo holds the site's key.
    sealer = PayloadSealer(load_sealing_keys(site.sealing_key_file))
    plain = sealer.open(row[0], aad=f"outbox:{message_id}")
    return envelope_pb2.Envelope.FromString(plain), row[1]


def _registry_rows(site: Site, message_id: str) -> int:
    with sqlite3.connect(f"file:{site.registry_db}?mode=ro", uri=True) as db:
        (count,) = db.execute(
            "SELECT COUNT(*) FROM applied_updates WHERE message_id = ?", (message_id,)
        ).fetchone()
    return int(count)


async def run_civil_scenario(a: Site, b: Site) -> CivilOutcome:
    request = demo_birth(b.state, agreement_id_for(a.state, b.state))
    metadata = bearer(a.token(["civil:submit"], now=time.time(), client="operator"))
    async with secure_channel(a.local_target, a.client_identity()) as channel:
        stub = civil_pb2_grpc.CivilRecordServiceStub(channel)
        submitted = await stub.SubmitUpdate(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            answer = await stub.GetUpdateStatus(
                civil_pb2.GetUpdateStatusRequest(message_id=submitted.message_id),
                metadata=metadata,
                timeout=CALL_TIMEOUT_S,
            )
            if answer.status.state in FINAL or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        refused = "OK (not refused!)"
        try:
            await stub.SubmitUpdate(
                demo_birth(
                    b.state,
                    agreement_id_for(a.state, b.state),
                    purpose="law_enforcement",
                    reference="demo-birth-2",
                ),
                metadata=metadata,
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as e:
            refused = f"{e.code().name}: {e.details()}"
    envelope, receipt_bytes = _sent_envelope(a, submitted.message_id)
    removed, transformed = policy_effect(
        json.loads(envelope.payload), civil_record_payload(request.update)
    )
    receipt = envelope_pb2.Receipt.FromString(receipt_bytes) if receipt_bytes else None
    status = answer.status
    return CivilOutcome(
        message_id=submitted.message_id,
        state=common_pb2.DeliveryState.Name(status.state).removeprefix("DELIVERY_STATE_"),
        reason_code=status.reason_code,
        removed=tuple(sorted(removed)),
        transformed=tuple(sorted(transformed)),
        delivery_receipt=(
            f"{envelope_pb2.ReceiptOutcome.Name(receipt.outcome).removeprefix('RECEIPT_OUTCOME_')}"
            f" by {receipt.receiver_state}, binds {receipt.request_digest[:23]}…"
            if receipt
            else "none"
        ),
        acknowledgement=(
            f"{common_pb2.DeliveryState.Name(status.state).removeprefix('DELIVERY_STATE_')}"
            f" (receipt signed by {b.state} after its registry answered)"
        ),
        registry_rows=_registry_rows(b, submitted.message_id),
        refused_purpose=refused,
    )
