"""Version 2 of an agreement, loaded by a reload while version 1 is in force, takes over
at its validity start without a refused call.

AT and BE run in this process over real TLS on a clock set a few seconds before
midnight UTC (version 2 starts the next day). A caller submits updates all the while:
none is refused, those submitted before midnight travel under version 1 and those
after under version 2, and every one is applied by BE's registry (those still in flight at
the switch included: their envelopes pin version 1's digest, which BE still holds).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.settings import SpoolAdapterSettings
from gateway.agreements.loader import load_agreement, sign_agreement
from gateway.agreements.model import EXCHANGES_VALIDATOR
from gateway.config import load_settings
from gateway.connect import bearer
from gateway.envelope import EnvelopeSigner
from gateway.policy.transforms import MASK
from gateway.server.app import Gateway
from pouch.v1 import agreement_pb2, common_pb2, envelope_pb2
from pouch_devtools.demo.agreements import civil_agreement_text
from pouch_devtools.demo.deployment import Site, prepare_sites
from tests.integration.conftest import GatewayThread
from tests.integration.exchange_fixtures import (
    FAST_DELIVERY,
    LocalCaller,
    PeerCaller,
    civil_header,
    death_update,
    inbox_entry,
    outbox_message,
    signed_envelope,
    submission,
)

CIVIL = "at-be-civil"
LEAD_S = 4.0


@dataclass
class ShiftedClock:
    """The real clock moved so that it reads ``LEAD_S`` before the next midnight UTC."""

    offset: timedelta = field(default_factory=lambda: _offset_to_midnight())

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def today(self) -> date:
        return self().date()


def _offset_to_midnight() -> timedelta:
    now = datetime.now(UTC)
    # At least a minute ahead of the real clock: certificates issued now are valid then.
    midnight = datetime.combine((now + timedelta(minutes=1)).date(), datetime.min.time(), UTC)
    midnight += timedelta(days=1)
    return midnight - timedelta(seconds=LEAD_S) - now


class ClockCaller(LocalCaller):
    """A local caller whose tokens are minted on the gateways' clock."""

    def __init__(self, site: Site, scopes: list[str], clock: ShiftedClock) -> None:
        super().__init__(site, scopes)
        self._clock = clock
        self._token_site = site
        self._token_scopes = scopes

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        now = self._clock().timestamp()
        return bearer(self._token_site.token(self._token_scopes, now=now))


def write_version_2(sites: dict[str, Site], starts: date) -> None:
    at, be = sites["AT"], sites["BE"]
    text = civil_agreement_text(CIVIL, at.pki, be.pki, today=starts)
    text = text.replace("\nversion: 1\n", "\nversion: 2\n")
    text = text.replace(
        f"\nvalid_from: {starts - timedelta(days=1)}\n", f"\nvalid_from: {starts}\n"
    )
    assert "\nversion: 2\n" in text and f"\nvalid_from: {starts}\n" in text
    staging = at.agreements_dir / f"{CIVIL}-v2.yaml"
    staging.write_text(text, encoding="utf-8")
    for site in (at, be):
        sign_agreement(
            staging,
            key_path=site.pki.signing_key,
            cert_path=site.pki.signing_cert,
            exchanges_validator=EXCHANGES_VALIDATOR,
        )
    (be.agreements_dir / staging.name).write_bytes(staging.read_bytes())


@contextlib.contextmanager
def gateways_on(
    sites: dict[str, Site], clock: ShiftedClock, spool_root: Path
) -> Iterator[dict[str, Gateway]]:
    with contextlib.ExitStack() as stack:
        running = {}
        for state in ("AT", "BE"):
            settings = load_settings(sites[state].config_path)
            spool = SpoolAdapterSettings(kind="spool", directory=spool_root / state)
            settings = settings.model_copy(update={"registry": spool})
            running[state] = stack.enter_context(GatewayThread(Gateway(settings, clock=clock)))
        yield running


def versions(caller: LocalCaller) -> dict[int, agreement_pb2.AgreementSummary]:
    listing = caller.agreements.ListAgreements(
        agreement_pb2.ListAgreementsRequest(), metadata=caller.metadata, timeout=10
    )
    return {a.ref.version: a for a in listing.agreements if a.ref.id == CIVIL}


def death_tree(day: date) -> dict[str, Any]:
    """A death as AT's gateway sends it under the demo agreement (already minimised)."""
    return {
        "event_type": "CIVIL_EVENT_TYPE_DEATH",
        "event_date": {"year": day.year, "month": day.month, "day": day.day},
        "event_place": {"country_code": "AT", "locality": "Graz"},
        "act_reference": MASK,
        "parties": [
            {
                "role": "PARTY_ROLE_SUBJECT",
                "person": {
                    "name": {"given_names": ["Jan"], "family_names": ["Wouters"]},
                    "date_of_birth": {"year": 1950, "month": 6, "day": 2},
                    "nationalities": ["BE"],
                },
            }
        ],
    }


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock()


def test_version_2_loaded_by_reload_takes_over_at_its_start_without_a_refused_call(
    tmp_path: Path, clock: ShiftedClock
) -> None:
    sites = prepare_sites(
        tmp_path, ["AT", "BE"], now=datetime.now(UTC), agreements=[("AT", "BE")],
        delivery=FAST_DELIVERY,
    )  # fmt: skip
    with (
        gateways_on(sites, clock, tmp_path / "spool") as gateways,
        ClockCaller(sites["AT"], ["civil:submit", "admin"], clock) as at,
        ClockCaller(sites["BE"], ["admin"], clock) as be,
    ):
        switch_day = clock.today() + timedelta(days=1)
        write_version_2(sites, switch_day)
        for caller in (at, be):
            answer = caller.agreements.Reload(
                agreement_pb2.ReloadRequest(), metadata=caller.metadata, timeout=30
            )
            (loaded,) = [i for i in answer.items if i.kind == "agreements"]
            assert loaded.result == agreement_pb2.RELOAD_RESULT_RELOADED
            assert list(loaded.changed) == [CIVIL]
            held = versions(caller)
            assert held[1].status == agreement_pb2.AGREEMENT_STATUS_ACTIVE
            assert held[2].status == agreement_pb2.AGREEMENT_STATUS_INACTIVE
            assert held[2].inactive_reason == "NOT_YET_VALID"

        # Updates submitted all the while the clock passes midnight.
        sent: list[tuple[str, date]] = []
        straddling: list[str] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def submit_all_the_while() -> None:
            while not stop.is_set():
                try:
                    day = clock.today()
                    request = submission(
                        death_update(day), agreement_id=CIVIL, recipient_state="BE"
                    )
                    message_id = at.submit(request)
                    # A call begun before midnight may be taken after it: either version.
                    if clock.today() == day:
                        sent.append((message_id, day))
                    else:
                        straddling.append(message_id)
                except BaseException as e:  # reported below
                    errors.append(e)
                    return
                time.sleep(0.05)

        worker = threading.Thread(target=submit_all_the_while, daemon=True)
        worker.start()
        deadline = time.monotonic() + 30
        while clock.today() < switch_day or len([d for _, d in sent if d == switch_day]) < 20:
            assert time.monotonic() < deadline, "the clock never passed midnight"
            assert not errors, errors
            time.sleep(0.05)
        stop.set()
        worker.join(timeout=30)
        assert not errors, errors

        # Each update travelled under the version in force the day it was submitted.
        by_version = {1: 0, 2: 0}
        for message_id, day in sent:
            message = outbox_message(gateways["AT"], message_id)
            assert message is not None
            assert message.agreement_version == (2 if day >= switch_day else 1)
            by_version[message.agreement_version] += 1
        assert by_version[1] > 0 and by_version[2] > 0, by_version
        for message_id in [m for m, _ in sent] + straddling:
            final = at.wait_until_final(message_id)
            assert final.state == common_pb2.DELIVERY_STATE_APPLIED, (message_id, final)

        # A message made under version 1 reaching BE after the switch (in flight, or
        # from a gateway that has not switched yet) is received: BE still holds it.
        v1_digest = load_agreement(
            sites["BE"].agreements_dir / f"{CIVIL}.yaml", exchanges_validator=EXCHANGES_VALIDATOR
        ).digest
        header = civil_header(
            sender="AT",
            recipient="BE",
            agreement_id=CIVIL,
            agreement_digest=v1_digest,
            created_at=clock(),
        )
        late = signed_envelope(
            EnvelopeSigner.from_state_directory(sites["AT"].pki), header, death_tree(clock.today())
        )
        with PeerCaller(sites["AT"], sites["BE"]) as as_at:
            receipt = as_at.deliver(late)
        assert receipt.outcome == envelope_pb2.RECEIPT_OUTCOME_ACCEPTED
        stored = inbox_entry(gateways["BE"], late.message_id)
        assert stored is not None

        for caller in (at, be):
            held = versions(caller)
            assert held[2].status == agreement_pb2.AGREEMENT_STATUS_ACTIVE
            assert held[1].status == agreement_pb2.AGREEMENT_STATUS_INACTIVE
            assert held[1].inactive_reason == "SUPERSEDED"
        metric = gateways["AT"].metrics.registry.get_sample_value(
            "pouch_agreement_state",
            {"agreement": CIVIL, "version": "2", "state": "active", "reason": ""},
        )
        assert metric == 1
