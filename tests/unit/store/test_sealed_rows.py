"""Outbox and inbox rows hold sealed envelopes: unreadable in the database, bound to the row."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, select, update

from gateway.pki.sealing import KEY_BYTES, PayloadSealer, SealingError, SealingKeys, sealing_key_id
from gateway.store.inbox import InboundMessage, Inbox
from gateway.store.outbox import Outbox, OutboxItem
from gateway.store.tables import inbox, outbox

from .conftest import FakeClock, within

MakeItem = Callable[..., OutboxItem]
MakeInbound = Callable[..., InboundMessage]


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def raw_envelope(engine: Engine, table_name: str, message_id: str) -> bytes:
    table = outbox if table_name == "outbox" else inbox
    with engine.connect() as conn:
        value = conn.execute(
            select(table.c.envelope).where(table.c.message_id == message_id)
        ).scalar_one()
    return bytes(value)


def set_raw_envelope(engine: Engine, table_name: str, message_id: str, value: bytes) -> None:
    table = outbox if table_name == "outbox" else inbox
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.message_id == message_id).values(envelope=value))


def test_stored_envelope_is_not_readable_without_the_key(
    migrated_engine: Engine,
    clock: FakeClock,
    make_item: MakeItem,
    make_inbound: MakeInbound,
) -> None:
    sealer = PayloadSealer(SealingKeys(new_key()))
    box = Outbox(migrated_engine, clock=clock, sealer=sealer)
    received = Inbox(migrated_engine, clock=clock, sealer=sealer)
    item = make_item("m-1")
    inbound = make_inbound("m-2")

    with within(migrated_engine) as conn:
        assert box.enqueue_within(conn, [item]) == 1
    with within(migrated_engine) as conn:
        assert received.accept_once_within(conn, inbound)

    for table_name, message_id in (("outbox", "m-1"), ("inbox", "m-2")):
        stored = raw_envelope(migrated_engine, table_name, message_id)
        assert b"signed envelope" not in stored
        assert stored[1:9] == sealer.current_key_id
    message, entry = box.get("m-1"), received.get("m-2")
    assert message is not None and message.envelope == item.envelope
    assert entry is not None and entry.envelope == inbound.envelope


def test_every_read_opens_the_envelope(
    migrated_engine: Engine,
    clock: FakeClock,
    make_item: MakeItem,
    make_inbound: MakeInbound,
) -> None:
    sealer = PayloadSealer(SealingKeys(new_key()))
    box = Outbox(migrated_engine, clock=clock, sealer=sealer)
    received = Inbox(migrated_engine, clock=clock, sealer=sealer)
    with within(migrated_engine) as conn:
        box.enqueue_within(conn, [make_item("m-1"), make_item("m-2")])
    with within(migrated_engine) as conn:
        received.accept_once_within(conn, make_inbound("m-3"))
    # A duplicate delivery is compared with the stored (opened) payload, not the sealed one.
    with within(migrated_engine) as conn:
        assert received.accept_once_within(conn, make_inbound("m-3")) is False

    (listed,) = box.page(limit=1)
    claimed = box.claim_due("worker-1", limit=10, lease_s=30)
    (pending,) = received.pending_handover(10)

    assert listed.envelope == make_item("m-1").envelope
    assert [m.envelope for m in claimed] == [make_item(f"m-{i}").envelope for i in (1, 2)]
    assert pending.envelope == make_inbound("m-3").envelope


@pytest.mark.parametrize("table_name", ["outbox", "inbox"])
def test_sealed_envelope_copied_to_another_row_is_refused(
    migrated_engine: Engine,
    clock: FakeClock,
    make_item: MakeItem,
    make_inbound: MakeInbound,
    table_name: str,
) -> None:
    sealer = PayloadSealer(SealingKeys(new_key()))
    box = Outbox(migrated_engine, clock=clock, sealer=sealer)
    received = Inbox(migrated_engine, clock=clock, sealer=sealer)
    with within(migrated_engine) as conn:
        box.enqueue_within(conn, [make_item("m-1"), make_item("m-2")])
    with within(migrated_engine) as conn:
        received.accept_once_within(conn, make_inbound("m-1"))
    with within(migrated_engine) as conn:
        received.accept_once_within(conn, make_inbound("m-2"))

    moved = raw_envelope(migrated_engine, table_name, "m-1")
    set_raw_envelope(migrated_engine, table_name, "m-2", moved)
    reader = box.get if table_name == "outbox" else received.get
    with pytest.raises(SealingError, match="another row"):
        reader("m-2")

    # The same message id in the other table is another row too.
    other = "inbox" if table_name == "outbox" else "outbox"
    set_raw_envelope(migrated_engine, other, "m-1", moved)
    other_reader = received.get if table_name == "outbox" else box.get
    with pytest.raises(SealingError, match="another row"):
        other_reader("m-1")


def test_rotated_key_still_opens_older_rows_and_new_rows_use_the_new_key(
    migrated_engine: Engine, clock: FakeClock, make_item: MakeItem, make_inbound: MakeInbound
) -> None:
    old, new = new_key(), new_key()
    before = PayloadSealer(SealingKeys(old))
    with within(migrated_engine) as conn:
        Outbox(migrated_engine, clock=clock, sealer=before).enqueue_within(
            conn, [make_item("m-old")]
        )
    with within(migrated_engine) as conn:
        Inbox(migrated_engine, clock=clock, sealer=before).accept_once_within(
            conn, make_inbound("m-old")
        )

    after = PayloadSealer(SealingKeys(new, (old,)))
    box = Outbox(migrated_engine, clock=clock, sealer=after)
    received = Inbox(migrated_engine, clock=clock, sealer=after)
    with within(migrated_engine) as conn:
        box.enqueue_within(conn, [make_item("m-new")])
    with within(migrated_engine) as conn:
        received.accept_once_within(conn, make_inbound("m-new"))

    for message_id in ("m-old", "m-new"):
        message, entry = box.get(message_id), received.get(message_id)
        assert message is not None and message.envelope == make_item(message_id).envelope
        assert entry is not None and entry.envelope == make_inbound(message_id).envelope
    for table_name in ("outbox", "inbox"):
        assert raw_envelope(migrated_engine, table_name, "m-old")[1:9] == sealing_key_id(old)
        assert raw_envelope(migrated_engine, table_name, "m-new")[1:9] == sealing_key_id(new)
    # Dropping the old key too early makes its rows unreadable, loudly.
    with pytest.raises(SealingError, match="unknown key id"):
        Outbox(migrated_engine, clock=clock, sealer=PayloadSealer(SealingKeys(new))).get("m-old")


def test_tampered_stored_envelope_is_refused(
    migrated_engine: Engine, clock: FakeClock, make_item: MakeItem
) -> None:
    box = Outbox(migrated_engine, clock=clock, sealer=PayloadSealer(SealingKeys(new_key())))
    with within(migrated_engine) as conn:
        box.enqueue_within(conn, [make_item("m-1")])
    stored = bytearray(raw_envelope(migrated_engine, "outbox", "m-1"))
    stored[-20] ^= 0x80
    set_raw_envelope(migrated_engine, "outbox", "m-1", bytes(stored))

    with pytest.raises(SealingError, match="failed authentication"):
        box.get("m-1")


def test_plaintext_row_is_not_taken_for_a_sealed_one(
    migrated_engine: Engine, clock: FakeClock, make_inbound: MakeInbound
) -> None:
    # The sealer is required from a database's first message: an unsealed row is refused.
    with within(migrated_engine) as conn:
        Inbox(migrated_engine, clock=clock).accept_once_within(conn, make_inbound("m-1"))
    sealed_inbox = Inbox(migrated_engine, clock=clock, sealer=PayloadSealer(SealingKeys(new_key())))

    with pytest.raises(SealingError):
        sealed_inbox.get("m-1")


def test_purged_sealed_row_reads_as_no_envelope(
    migrated_engine: Engine, clock: FakeClock, make_item: MakeItem, make_inbound: MakeInbound
) -> None:
    sealer = PayloadSealer(SealingKeys(new_key()))
    box = Outbox(migrated_engine, clock=clock, sealer=sealer)
    received = Inbox(migrated_engine, clock=clock, sealer=sealer)
    with within(migrated_engine) as conn:
        box.enqueue_within(conn, [make_item("m-1")])
    with within(migrated_engine) as conn:
        received.accept_once_within(conn, make_inbound("m-1"))

    assert box.purge_payloads("FR-DE/civil-records") == 1
    assert received.purge_payloads("FR-DE/civil-records") == 1

    message, entry = box.get("m-1"), received.get("m-1")
    assert message is not None and message.envelope is None
    assert entry is not None and entry.envelope is None
    assert received.pending_handover(10)[0].envelope is None
