"""A registry that is down and a partner that refuses our acknowledgements cost bounded work.

AT and BE run in this process over real TLS. Updates signed by AT's key reach BE's peer
API directly (not from AT's outbox), so AT knows none of them: when BE acknowledges,
AT answers ``NOT_FOUND``, a permanent answer that must not be sent again. BE's registry
(a spool directory with a file in its way) is down for a few backoff steps first.

Each message must end dead-lettered at the acknowledgement stage with AT's reason, the
registry's outage must be logged once as it starts and once as it ends, naming the
messages, and the failed hand-overs must stay within what the backoff allows before
the deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.envelope import EnvelopeSigner
from gateway.events import EVENT_LOGGER
from gateway.policy.transforms import MASK, keyed_hash
from gateway.store.backlog import InboxStage
from pouch.v1 import gateway_pb2
from pouch_devtools.demo.deployment import prepare_sites
from tests.integration.civil_builders import wait_until
from tests.integration.exchange_fixtures import (
    LocalCaller,
    PeerCaller,
    agreement_digest,
    civil_header,
    hash_key,
    inbox_entry,
    running_gateways,
    signed_envelope,
)

CIVIL = "at-be-civil"
COUNT = 4
INITIAL_S, MAXIMUM_S, MULTIPLIER, JITTER = 0.2, 0.8, 2.0, 0.2
DEADLINE_S = 30.0
DOWN_S = 2.5
DELIVERY = {
    "backoff_initial_seconds": INITIAL_S,
    "backoff_max_seconds": MAXIMUM_S,
    "backoff_multiplier": MULTIPLIER,
    "jitter_fraction": JITTER,
    "poll_interval_seconds": 0.05,
    "deadline_seconds": DEADLINE_S,
}


def most_failures_within(seconds: float) -> int:
    """The most tries one message can fail in ``seconds``: each wait at its shortest."""
    tries, spent = 1, 0.0
    while True:
        wait = min(MAXIMUM_S, INITIAL_S * MULTIPLIER ** (tries - 1)) * (1 - JITTER)
        if spent + wait > seconds:
            return tries
        spent += wait
        tries += 1


class _Events(logging.Handler):
    """Every event record, as its fields."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "pouch_event", None)
        if isinstance(fields, dict):
            self.seen.append(dict(fields))

    def named(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [
            f
            for f in self.seen
            if f["event"] == event and all(f.get(k) == v for k, v in match.items())
        ]


@pytest.fixture
def events() -> Iterator[_Events]:
    handler = _Events()
    logger = logging.getLogger(EVENT_LOGGER)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _death(key: bytes, n: int) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    return {
        "event_type": "CIVIL_EVENT_TYPE_DEATH",
        "event_date": {"year": today.year, "month": today.month, "day": today.day},
        "event_place": {"country_code": "AT", "locality": "Graz"},
        "act_reference": MASK,
        "parties": [
            {
                "role": "PARTY_ROLE_SUBJECT",
                "person": {
                    "name": {"given_names": ["Jan"], "family_names": [f"Wouters{n}"]},
                    "date_of_birth": {"year": 1950, "month": 6, "day": 2},
                    "nationalities": ["BE"],
                    "registry_identifier": keyed_hash(f"REG-SUBJECT-{n}", key),
                },
            }
        ],
    }


def test_a_down_registry_and_a_partner_refusing_receipts_cost_bounded_calls_and_lines(
    tmp_path: Path, events: _Events
) -> None:
    sites = prepare_sites(
        tmp_path, ["AT", "BE"], now=datetime.now(UTC), agreements=[("AT", "BE")], delivery=DELIVERY
    )
    spool_root = tmp_path / "spool"
    spool_root.mkdir()
    in_the_way = spool_root / "BE"
    in_the_way.write_text("not a directory")  # BE's registry cannot take anything

    with running_gateways(sites, ["AT", "BE"], spool_root=spool_root) as running:
        be = running.gateway("BE")
        key = hash_key(sites["BE"], CIVIL)
        signer = EnvelopeSigner.from_state_directory(sites["AT"].pki)
        digest = agreement_digest(sites["BE"], CIVIL)
        message_ids = []
        down_since = time.monotonic()
        with PeerCaller(sites["AT"], sites["BE"]) as peer:
            for n in range(COUNT):
                header = civil_header(
                    sender="AT", recipient="BE", agreement_id=CIVIL, agreement_digest=digest
                )
                peer.deliver(signed_envelope(signer, header, _death(key, n)))
                message_ids.append(header.message_id)

        wait_until(
            lambda: len(events.named("retry_scheduled", reason="REGISTRY_UNAVAILABLE")) >= COUNT,
            timeout_s=10,
            describe=lambda: f"events {[e['event'] for e in events.seen]}",
        )
        time.sleep(max(0.0, DOWN_S - (time.monotonic() - down_since)))
        in_the_way.unlink()  # the registry is back
        down_for = time.monotonic() - down_since

        def settled() -> bool:
            entries = [inbox_entry(be, m) for m in message_ids]
            return all(e is not None and e.dead_reason is not None for e in entries)

        wait_until(settled, timeout_s=20, describe=lambda: f"events {events.seen[-5:]}")

        for message_id in message_ids:
            entry = inbox_entry(be, message_id)
            assert entry is not None
            assert entry.registry_outcome == "applied"
            assert not entry.ack_sent
            assert entry.dead_reason == "PARTNER_NOT_FOUND"
        backlog = {(b.partner, b.stage): b.count for b in be.exchanges.inbox.backlog()}  # type: ignore[union-attr]
        assert backlog[("AT", InboxStage.ACKNOWLEDGEMENT_DEAD.value)] == COUNT
        # The operator's status call names each, its stage and its reason.
        with LocalCaller(sites["BE"], ["admin"]) as operator:
            listed = operator.gateway.ListDeadLetters(
                gateway_pb2.ListDeadLettersRequest(partner_state="AT"),
                metadata=operator.metadata,
                timeout=10,
            ).dead_letters
        assert sorted(d.message_id for d in listed) == sorted(message_ids)
        assert {(d.direction, d.stage, d.reason_code) for d in listed} == {
            ("inbound", "acknowledgement", "PARTNER_NOT_FOUND")
        }

    # Hand-over failed no more often than the backoff allows while the registry was down.
    failed_handovers = events.named("retry_scheduled", reason="REGISTRY_UNAVAILABLE")
    assert COUNT <= len(failed_handovers) <= COUNT * most_failures_within(down_for + 1.0)
    # NOT_FOUND is permanent: one acknowledgement each, dead at once, none retried.
    dead = events.named("dead_lettered", reason="PARTNER_NOT_FOUND")
    assert sorted(e["message_id"] for e in dead) == sorted(message_ids)
    assert not [e for e in events.named("retry_scheduled") if e["reason"].startswith("PARTNER_")]
    # The registry's outage: one line as it started, one as it ended, naming the messages.
    failing = events.named("dependency_failing", dependency="registry")
    recovered = events.named("dependency_recovered", dependency="registry")
    assert len(failing) == 1 and len(recovered) == 1
    assert set(failing[0]["message_ids"]) <= set(message_ids)
    assert set(recovered[0]["message_ids"]) == set(message_ids)
    assert recovered[0]["count"] == len(failed_handovers)
    assert not events.named("dependency_still_failing")
    # Every line the events logger wrote in all this, on both sides, stays within bounds.
    assert len(events.seen) <= 2 * len(failed_handovers) + 10 * COUNT + 20
