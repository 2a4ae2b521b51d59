"""An operator sends a dead letter again: the partner applies it once, and nothing else goes.

AT runs alone in this process over real TLS while BE is down: the updates AT's
registry submits meet a closed port until their delivery deadline and die. BE then
starts, and AT's operator resends them through ``GatewayService.ResendDeadLetter`` (and
``pouch dead-letter resend``). The clock window is two seconds and envelopes are
re-signed after one, so a resent update, queued seconds before, would be refused as
stale were it sent as it was signed: it arrives only because the dispatcher signs it
afresh. The deployment is shared by the module; each test resends its own message.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from gateway.envelope import EnvelopeSigner
from gateway.policy.transforms import MASK, keyed_hash
from gateway.server.app import Gateway
from gateway.store.tables import audit_entries
from pouch.v1 import civil_pb2, common_pb2, gateway_pb2
from pouch_devtools.demo.deployment import Site, agreement_id_for, prepare_sites
from tests.integration.civil_builders import wait_until
from tests.integration.conftest import FORBIDDEN_IN_MESSAGES, error_reason
from tests.integration.exchange_fixtures import (
    LocalCaller,
    PeerCaller,
    agreement_digest,
    civil_header,
    death_update,
    hash_key,
    inbox_entry,
    running_gateways,
    signed_envelope,
    submission,
)

AT_BE = agreement_id_for("AT", "BE")
DELIVERY = {
    "backoff_initial_seconds": 0.2,
    "backoff_max_seconds": 0.5,
    "poll_interval_seconds": 0.05,
    "deadline_seconds": 3.0,
    "clock_window_seconds": 2.0,
    "resign_after_seconds": 1.0,
}
COUNT = 4  # one dead letter per test that resends
TIMEOUT_S = 10.0
OPERATOR = "operator@at"


@dataclass(frozen=True)
class Scene:
    """AT and BE running; AT's updates that died while BE was down; what AT's operator
    saw while they waited; and when they were submitted."""

    sites: dict[str, Site]
    at: Gateway
    be: Gateway
    dead: tuple[str, ...]
    while_down: gateway_pb2.GetGatewayInfoResponse
    submitted: tuple[datetime, datetime]
    root: Path


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    root = tmp_path_factory.mktemp("dead-letter-resend")
    sites = prepare_sites(
        root, ["AT", "BE"], now=datetime.now(UTC), agreements=[("AT", "BE")], delivery=DELIVERY
    )
    with contextlib.ExitStack() as stack:
        at = stack.enter_context(running_gateways(sites, ["AT"], spool_root=root / "spool"))
        registry = stack.enter_context(LocalCaller(sites["AT"], ["civil:submit"]))
        operator = stack.enter_context(LocalCaller(sites["AT"], ["admin"]))
        before = datetime.now(UTC)
        today = before.date()
        dead = tuple(
            registry.submit(
                submission(
                    death_update(today, family_name=f"Wouters{n}"),
                    agreement_id=AT_BE,
                    recipient_state="BE",
                )
            )
            for n in range(COUNT)
        )
        after = datetime.now(UTC)
        while_down = operator.gateway.GetGatewayInfo(
            gateway_pb2.GetGatewayInfoRequest(), metadata=operator.metadata, timeout=TIMEOUT_S
        )
        for message_id in dead:
            status = registry.wait_until_final(message_id, within_s=15)
            assert status.state == common_pb2.DELIVERY_STATE_DEAD_LETTERED, status
        be = stack.enter_context(running_gateways(sites, ["BE"], spool_root=root / "spool"))
        yield Scene(
            sites=sites,
            at=at.gateway("AT"),
            be=be.gateway("BE"),
            dead=dead,
            while_down=while_down,
            submitted=(before, after),
            root=root,
        )


def resend(caller: LocalCaller, message_id: str) -> gateway_pb2.ResendDeadLetterResponse:
    return caller.gateway.ResendDeadLetter(
        gateway_pb2.ResendDeadLetterRequest(message_id=message_id),
        metadata=caller.metadata,
        timeout=TIMEOUT_S,
    )


def refusal(caller: LocalCaller, message_id: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        resend(caller, message_id)
    return refused.value


def audit_rows(gateway: Gateway, message_id: str) -> list[Any]:
    query = (
        select(
            audit_entries.c.event_kind,
            audit_entries.c.decision,
            audit_entries.c.principal,
            audit_entries.c.reason_code,
        )
        .where(audit_entries.c.message_id == message_id)
        .order_by(audit_entries.c.idx)
    )
    with gateway.engine.connect() as conn:
        return list(conn.execute(query).all())


def applied(scene: Scene, message_id: str) -> civil_pb2.UpdateStatus:
    with LocalCaller(scene.sites["AT"], ["civil:submit"]) as registry:
        status = registry.wait_until_final(message_id, within_s=15)
    assert status.state == common_pb2.DELIVERY_STATE_APPLIED, status
    return status


def test_a_message_dead_while_the_partner_was_down_is_resent_applied_once_then_not_dead(
    scene: Scene,
) -> None:
    message_id = scene.dead[0]
    with LocalCaller(scene.sites["AT"], ["admin"]) as operator:
        answer = resend(operator, message_id)
        assert (answer.message_id, answer.status) == (message_id, "pending")
        applied(scene, message_id)

        again = refusal(operator, message_id)
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(again) == "NOT_DEAD_LETTER"

    # BE took it once: stored, handed to its registry once, acknowledged.
    entry = inbox_entry(scene.be, message_id)
    assert entry is not None and entry.registry_outcome == "applied"
    be_kinds = [(kind, reason) for kind, _, _, reason in audit_rows(scene.be, message_id)]
    assert be_kinds.count(("received", None)) == 1
    assert be_kinds.count(("delivered", None)) == 1, be_kinds
    # AT: dead, then the operator's resend naming who acted, then sent once.
    at_rows = audit_rows(scene.at, message_id)
    assert ("admin_action", "accepted", OPERATOR, "DEAD_LETTER_RESENT") in at_rows
    assert ("admin_action", "refused", OPERATOR, "NOT_DEAD_LETTER") in at_rows
    assert [row[0] for row in at_rows].count("sent") == 1
    kinds = [row[0] for row in at_rows]
    assert kinds.index("dead_lettered") < kinds.index("admin_action") < kinds.index("sent")
    resent = scene.at.metrics.registry.get_sample_value(
        "pouch_dead_letters_resent_total", {"partner": "BE"}
    )
    assert resent is not None and resent >= 1


def test_a_token_without_admin_cannot_resend_what_the_admin_can(scene: Scene) -> None:
    message_id = scene.dead[1]
    with LocalCaller(scene.sites["AT"], ["civil:submit", "audit:read"]) as registry:
        denied = refusal(registry, message_id)
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(denied) == "SCOPE_MISSING"
    with LocalCaller(scene.sites["AT"], ["admin"]) as operator:
        assert resend(operator, message_id).status == "pending"
    applied(scene, message_id)


def test_an_unknown_message_id_is_not_found(scene: Scene) -> None:
    with LocalCaller(scene.sites["AT"], ["admin"]) as operator:
        assert resend(operator, scene.dead[2]).status == "pending"
        unknown = refusal(operator, str(uuid.uuid4()))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(unknown) == "NOT_FOUND"
    applied(scene, scene.dead[2])


def _death(key: bytes) -> dict[str, Any]:
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
                    "name": {"given_names": ["Jan"], "family_names": ["Peeters"]},
                    "date_of_birth": {"year": 1950, "month": 6, "day": 2},
                    "nationalities": ["BE"],
                    "registry_identifier": keyed_hash("REG-SUBJECT-77", key),
                },
            }
        ],
    }


def test_an_inbound_dead_letter_is_not_resendable(scene: Scene) -> None:
    # An update signed with AT's key reaches BE's peer API directly: AT never sent it,
    # so it refuses BE's acknowledgement for good and BE gives that stage up.
    be_site = scene.sites["BE"]
    signer = EnvelopeSigner.from_state_directory(scene.sites["AT"].pki)
    header = civil_header(
        sender="AT",
        recipient="BE",
        agreement_id=AT_BE,
        agreement_digest=agreement_digest(be_site, AT_BE),
    )
    with PeerCaller(scene.sites["AT"], be_site) as peer:
        peer.deliver(signed_envelope(signer, header, _death(hash_key(be_site, AT_BE))))
    message_id = header.message_id

    def dead() -> bool:
        entry = inbox_entry(scene.be, message_id)
        return entry is not None and entry.dead_reason is not None

    wait_until(dead, timeout_s=15, describe=lambda: str(inbox_entry(scene.be, message_id)))
    with LocalCaller(be_site, ["admin"]) as operator:
        listed = operator.gateway.ListDeadLetters(
            gateway_pb2.ListDeadLettersRequest(partner_state="AT"),
            metadata=operator.metadata,
            timeout=TIMEOUT_S,
        ).dead_letters
        (letter,) = [d for d in listed if d.message_id == message_id]
        assert (letter.direction, letter.stage) == ("inbound", "acknowledgement")
        inbound = refusal(operator, message_id)
    assert inbound.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(inbound) == "NOT_RESENDABLE"


def test_gateway_info_shows_the_backlog_while_the_partner_was_down_and_refusals_by_reason(
    scene: Scene,
) -> None:
    before, after = scene.submitted
    waiting = [
        b for b in scene.while_down.backlogs if (b.store, b.partner_state) == ("outbox", "BE")
    ]
    assert {b.stage for b in waiting} <= {"pending", "in_flight"}
    assert sum(b.messages for b in waiting) == COUNT
    oldest = min(b.oldest.ToDatetime(tzinfo=UTC) for b in waiting)
    assert before - timedelta(seconds=1) <= oldest <= after

    with (
        LocalCaller(scene.sites["AT"], ["civil:submit"]) as registry,
        LocalCaller(scene.sites["AT"], ["admin"]) as operator,
    ):
        for n in range(3):
            with pytest.raises(grpc.RpcError) as refused:
                registry.submit(
                    submission(
                        death_update(before.date(), family_name=f"Maes{n}"),
                        agreement_id=AT_BE,
                        recipient_state="BE",
                        purpose="law_enforcement",
                    )
                )
            assert error_reason(refused.value) == "PURPOSE_NOT_AGREED"
        info = operator.gateway.GetGatewayInfo(
            gateway_pb2.GetGatewayInfoRequest(), metadata=operator.metadata, timeout=TIMEOUT_S
        )
    counts = {r.reason_code: r for r in info.recent_refusals}
    assert counts["PURPOSE_NOT_AGREED"].count == 3
    last = counts["PURPOSE_NOT_AGREED"].last_at.ToDatetime(tzinfo=UTC)
    assert before <= last <= datetime.now(UTC)
    ordered = [r.count for r in info.recent_refusals]
    assert ordered == sorted(ordered, reverse=True)


def _pouch(scene: Scene, *args: str) -> subprocess.CompletedProcess[str]:
    site = scene.sites["AT"]
    token_file = scene.root / f"admin-{uuid.uuid4().hex[:8]}.token"
    token_file.write_text(site.token(["admin"], now=time.time()), encoding="ascii")
    env = {k: v for k, v in os.environ.items() if not k.startswith("POUCH_")} | {
        "POUCH_TARGET": site.local_target,
        "POUCH_CA": str(site.pki.ca_cert),
        "POUCH_CERT": str(site.pki.client_cert("operator")),
        "POUCH_KEY": str(site.pki.client_key("operator")),
        "POUCH_TOKEN_FILE": str(token_file),
    }
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    for marker in FORBIDDEN_IN_MESSAGES:
        assert marker not in done.stderr, done.stderr
    return done


def test_pouch_dead_letter_resend_exits_0_then_1_and_pouch_status_shows_backlog_and_refusals(
    scene: Scene,
) -> None:
    message_id = scene.dead[3]
    done = _pouch(scene, "dead-letter", "resend", message_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{message_id}: pending"
    applied(scene, message_id)

    again = _pouch(scene, "dead-letter", "resend", message_id)
    assert again.returncode == 1, (again.stdout, again.stderr)
    assert "refused the call: FAILED_PRECONDITION (reason NOT_DEAD_LETTER)" in again.stderr

    shown = _pouch(scene, "status")
    assert shown.returncode == 0, shown.stderr
    assert "refusals in the last 24 hours" in shown.stdout
    refusals = shown.stdout.split("refusals in the last 24 hours", 1)[1]
    assert "NOT_DEAD_LETTER" in refusals
    assert "backlog" in shown.stdout
