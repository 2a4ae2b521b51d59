"""The reference registry: exactly-once application, business rejections, lookups, a process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc.aio
import pytest

from adapters.base import APPLIED, InboundUpdate
from adapters.grpc_registry import GrpcRegistryAdapter
from pouch.v1 import (
    civil_pb2,
    common_pb2,
    identity_pb2,
    registry_pb2,
    registry_pb2_grpc,
    representation_pb2,
)
from pouch_devtools.reference_registry import (
    UNKNOWN_PERSON,
    ReferenceRegistry,
    count_applied,
    start_reference_registry,
)

APPLIED_ = registry_pb2.APPLY_OUTCOME_APPLIED
REJECTED = registry_pb2.APPLY_OUTCOME_REJECTED
DUPLICATE = registry_pb2.APPLY_OUTCOME_DUPLICATE


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ReferenceRegistry]:
    created = ReferenceRegistry(
        tmp_path / "registry.db", clock=lambda: datetime(2025, 1, 2, 8, 0, tzinfo=UTC)
    )
    try:
        yield created
    finally:
        created.close()


def _subject(
    identifier: str = "",
    *,
    name: common_pb2.PersonName | None = None,
    date_of_birth: common_pb2.CivilDate | None = None,
) -> civil_pb2.Party:
    person = civil_pb2.Person(
        registry_identifier=identifier, name=name, date_of_birth=date_of_birth
    )
    return civil_pb2.Party(role=civil_pb2.PARTY_ROLE_SUBJECT, person=person)


def _request(
    message_id: str,
    event_type: civil_pb2.CivilEventType.ValueType,
    *parties: civil_pb2.Party,
    new_name: common_pb2.PersonName | None = None,
) -> registry_pb2.ApplyCivilUpdateRequest:
    return registry_pb2.ApplyCivilUpdateRequest(
        message_id=message_id,
        sender_state="FR",
        agreement_id="FR-DE/civil-records",
        purpose="civil-status-update",
        update=civil_pb2.CivilRecordUpdate(
            event_type=event_type,
            event_date=common_pb2.CivilDate(year=2025, month=1, day=1),
            parties=parties,
            new_name=new_name,
        ),
    )


def _seed_person(registry: ReferenceRegistry, identifier: str) -> None:
    registry.add_person(
        registry_identifier=identifier,
        name=common_pb2.PersonName(given_names=["Anna"], family_names=["Weber"]),
        date_of_birth=common_pb2.CivilDate(year=1950, month=6, day=1),
    )


def test_birth_registers_the_person_once(registry: ReferenceRegistry) -> None:
    name = common_pb2.PersonName(given_names=["Léa"], family_names=["Martin"])
    birth = _request(
        "m-1",
        civil_pb2.CIVIL_EVENT_TYPE_BIRTH,
        _subject("DE-1", name=name, date_of_birth=common_pb2.CivilDate(year=2025, month=1, day=1)),
    )
    assert registry.apply_update(birth).outcome == APPLIED_
    assert registry.apply_update(birth).outcome == DUPLICATE
    person = registry.find_person("DE-1")
    assert person is not None
    assert (person.given_names, person.family_names, person.status) == (
        ("Léa",),
        ("Martin",),
        "living",
    )
    assert registry.count_applied() == 1


def test_death_of_unknown_person_is_rejected_and_changes_nothing(
    registry: ReferenceRegistry,
) -> None:
    answer = registry.apply_update(
        _request("m-2", civil_pb2.CIVIL_EVENT_TYPE_DEATH, _subject("DE-404"))
    )
    assert (answer.outcome, answer.reason_code) == (REJECTED, UNKNOWN_PERSON)
    assert registry.count_applied() == 0
    # Once the person is known, the same message may still be applied.
    _seed_person(registry, "DE-404")
    again = registry.apply_update(
        _request("m-2", civil_pb2.CIVIL_EVENT_TYPE_DEATH, _subject("DE-404"))
    )
    assert again.outcome == APPLIED_


def test_name_change_of_unknown_person_is_rejected(registry: ReferenceRegistry) -> None:
    answer = registry.apply_update(
        _request(
            "m-3",
            civil_pb2.CIVIL_EVENT_TYPE_NAME_CHANGE,
            _subject("DE-405"),
            new_name=common_pb2.PersonName(family_names=["Schmidt"]),
        )
    )
    assert (answer.outcome, answer.reason_code) == (REJECTED, UNKNOWN_PERSON)


def test_death_without_registry_identifier_is_recorded_not_rejected(
    registry: ReferenceRegistry,
) -> None:
    answer = registry.apply_update(_request("m-4", civil_pb2.CIVIL_EVENT_TYPE_DEATH, _subject()))
    assert answer.outcome == APPLIED_
    assert registry.count_applied() == 1


def test_death_and_name_change_update_a_known_person(registry: ReferenceRegistry) -> None:
    _seed_person(registry, "DE-7")
    renamed = registry.apply_update(
        _request(
            "m-5",
            civil_pb2.CIVIL_EVENT_TYPE_NAME_CHANGE,
            _subject("DE-7"),
            new_name=common_pb2.PersonName(given_names=["Anna"], family_names=["Schmidt"]),
        )
    )
    died = registry.apply_update(
        _request("m-6", civil_pb2.CIVIL_EVENT_TYPE_DEATH, _subject("DE-7"))
    )
    assert (renamed.outcome, died.outcome) == (APPLIED_, APPLIED_)
    person = registry.find_person("DE-7")
    assert person is not None
    assert person.family_names == ("Schmidt",)
    assert (person.status, person.date_of_death) == ("deceased", "2025-01-01")
    second_death = registry.apply_update(
        _request("m-7", civil_pb2.CIVIL_EVENT_TYPE_DEATH, _subject("DE-7"))
    )
    assert (second_death.outcome, second_death.reason_code) == (
        REJECTED,
        "PERSON_ALREADY_DECEASED",
    )


def test_lookup_and_case_events_over_grpc(tmp_path: Path) -> None:
    async def scenario() -> None:
        served = await start_reference_registry(tmp_path / "registry.db", "127.0.0.1:0")
        served.registry.add_document(
            document_type=identity_pb2.DOCUMENT_TYPE_PASSPORT,
            number="C01X00T47",
            name=common_pb2.PersonName(given_names=["Erika"], family_names=["Mustermann"]),
            date_of_birth=common_pb2.CivilDate(year=1964, month=8, day=12),
            sex=common_pb2.SEX_FEMALE,
            nationality="DE",
            status=identity_pb2.DOCUMENT_STATUS_LOST_OR_STOLEN,
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            found = await stub.LookupIdentity(
                registry_pb2.LookupIdentityRequest(
                    message_id="q-1",
                    requester_state="FR",
                    document_type=identity_pb2.DOCUMENT_TYPE_PASSPORT,
                    document_number="C01X00T47",
                )
            )
            missing = await stub.LookupIdentity(
                registry_pb2.LookupIdentityRequest(
                    message_id="q-2",
                    requester_state="FR",
                    document_type=identity_pb2.DOCUMENT_TYPE_IDENTITY_CARD,
                    document_number="C01X00T47",
                )
            )
            by_birth_year = await stub.LookupIdentity(
                registry_pb2.LookupIdentityRequest(
                    message_id="q-3",
                    requester_state="FR",
                    document_type=identity_pb2.DOCUMENT_TYPE_PASSPORT,
                    date_of_birth=common_pb2.CivilDate(year=1964),
                )
            )
            other_year = await stub.LookupIdentity(
                registry_pb2.LookupIdentityRequest(
                    message_id="q-4",
                    requester_state="FR",
                    document_type=identity_pb2.DOCUMENT_TYPE_PASSPORT,
                    date_of_birth=common_pb2.CivilDate(year=1965, month=8, day=12),
                )
            )
            await stub.NotifyCaseEvent(
                registry_pb2.NotifyCaseEventRequest(
                    event_kind="ACCEPTED",
                    case=representation_pb2.RepresentationCase(case_id="case-1"),
                )
            )
        await served.stop(None)
        assert len(found.records) == 1 and not missing.records
        assert found.records[0].name.family_names == ["Mustermann"]
        assert found.records[0].date_of_birth.year == 1964
        assert found.records[0].document_status == identity_pb2.DOCUMENT_STATUS_LOST_OR_STOLEN
        assert [r.document_number for r in by_birth_year.records] == ["C01X00T47"]
        assert not other_year.records
        assert served.registry.case_event_kinds("case-1") == ["ACCEPTED"]

    asyncio.run(scenario())


def test_plaintext_listener_beyond_loopback_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without TLS"):
        asyncio.run(start_reference_registry(tmp_path / "registry.db", "0.0.0.0:0"))


def test_runs_as_a_process_and_applies_exactly_once(tmp_path: Path) -> None:
    db_path = tmp_path / "registry.db"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pouch_devtools.reference_registry",
            "--db",
            str(db_path),
            "--listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("reference registry ready on "), line
        port = int(line.rsplit(" ", 1)[1])

        async def hand_over() -> None:
            adapter = GrpcRegistryAdapter(f"127.0.0.1:{port}", None, 5.0, insecure_loopback=True)
            item = InboundUpdate(
                message_id="m-process-1",
                sender_state="FR",
                agreement_id="FR-DE/civil-records",
                purpose="civil-status-update",
                update=civil_pb2.CivilRecordUpdate(event_type=civil_pb2.CIVIL_EVENT_TYPE_MARRIAGE),
            )
            try:
                assert await adapter.apply(item) == APPLIED
                assert await adapter.apply(item) == APPLIED
            finally:
                await adapter.close()

        asyncio.run(hand_over())
        assert count_applied(db_path) == 1
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
