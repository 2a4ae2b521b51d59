"""Shared material for the exchange tests: one valid civil-record submission per event.

Every builder returns a fresh message, so a test may change it freely; nothing here
holds state between tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date

from pouch.v1 import civil_pb2, common_pb2

#: The day the gateway believes it is in these tests.
TODAY = date(2026, 6, 15)
SENDER = "AT"
RECIPIENT = "BE"


def civil_date(year: int, month: int, day: int) -> common_pb2.CivilDate:
    return common_pb2.CivilDate(year=year, month=month, day=day)


def person(
    given: Sequence[str] = ("Anna",),
    family: Sequence[str] = ("Muster",),
    *,
    born: tuple[int, int, int] | None = (1990, 4, 2),
    nationalities: Sequence[str] = ("AT",),
) -> civil_pb2.Person:
    built = civil_pb2.Person(
        name=common_pb2.PersonName(given_names=given, family_names=family),
        place_of_birth=common_pb2.Place(country_code="AT", locality="Wien"),
        sex=common_pb2.SEX_FEMALE,
        nationalities=nationalities,
    )
    if born is not None:
        built.date_of_birth.CopyFrom(civil_date(*born))
    return built


def party(
    role: civil_pb2.PartyRole.ValueType, who: civil_pb2.Person | None = None
) -> civil_pb2.Party:
    return civil_pb2.Party(role=role, person=who if who is not None else person())


def request(
    event_type: civil_pb2.CivilEventType.ValueType,
    parties: Sequence[civil_pb2.Party],
    *,
    event_date: tuple[int, int, int] = (2026, 5, 20),
) -> civil_pb2.SubmitUpdateRequest:
    return civil_pb2.SubmitUpdateRequest(
        client_reference="at-wien:2026-0001",
        recipient_state=RECIPIENT,
        agreement_id="at-be-2026",
        purpose="civil_status_update",
        update=civil_pb2.CivilRecordUpdate(
            event_type=event_type,
            event_date=civil_date(*event_date),
            event_place=common_pb2.Place(country_code="AT", locality="Wien"),
            parties=parties,
            act_reference="W-2026/0042",
        ),
        legal_basis=common_pb2.LegalBasis(reference="GDPR art. 6(1)(e)"),
    )


def birth() -> civil_pb2.SubmitUpdateRequest:
    child = person(("Lena",), ("Huber",), born=(2026, 5, 20))
    return request(
        civil_pb2.CIVIL_EVENT_TYPE_BIRTH,
        [
            party(civil_pb2.PARTY_ROLE_SUBJECT, child),
            party(civil_pb2.PARTY_ROLE_MOTHER),
            party(civil_pb2.PARTY_ROLE_DECLARANT),
        ],
    )


def death() -> civil_pb2.SubmitUpdateRequest:
    return request(civil_pb2.CIVIL_EVENT_TYPE_DEATH, [party(civil_pb2.PARTY_ROLE_SUBJECT)])


def _couple(event_type: civil_pb2.CivilEventType.ValueType) -> civil_pb2.SubmitUpdateRequest:
    return request(
        event_type,
        [
            party(civil_pb2.PARTY_ROLE_SPOUSE),
            party(
                civil_pb2.PARTY_ROLE_SPOUSE, person(("Jean",), ("Dupont",), nationalities=["BE"])
            ),
        ],
    )


def marriage() -> civil_pb2.SubmitUpdateRequest:
    return _couple(civil_pb2.CIVIL_EVENT_TYPE_MARRIAGE)


def divorce() -> civil_pb2.SubmitUpdateRequest:
    return _couple(civil_pb2.CIVIL_EVENT_TYPE_DIVORCE)


def annulment() -> civil_pb2.SubmitUpdateRequest:
    return _couple(civil_pb2.CIVIL_EVENT_TYPE_ANNULMENT)


def name_change() -> civil_pb2.SubmitUpdateRequest:
    built = request(civil_pb2.CIVIL_EVENT_TYPE_NAME_CHANGE, [party(civil_pb2.PARTY_ROLE_SUBJECT)])
    built.update.new_name.CopyFrom(
        common_pb2.PersonName(given_names=["Anna"], family_names=["Muster-Dupont"])
    )
    return built


def _nationality(event_type: civil_pb2.CivilEventType.ValueType) -> civil_pb2.SubmitUpdateRequest:
    built = request(event_type, [party(civil_pb2.PARTY_ROLE_SUBJECT)])
    built.update.nationality = "BE"
    return built


def nationality_acquired() -> civil_pb2.SubmitUpdateRequest:
    return _nationality(civil_pb2.CIVIL_EVENT_TYPE_NATIONALITY_ACQUIRED)


def nationality_lost() -> civil_pb2.SubmitUpdateRequest:
    return _nationality(civil_pb2.CIVIL_EVENT_TYPE_NATIONALITY_LOST)


def paternity_recognition() -> civil_pb2.SubmitUpdateRequest:
    child = person(("Lena",), ("Huber",), born=(2025, 0, 0))
    return request(
        civil_pb2.CIVIL_EVENT_TYPE_PATERNITY_RECOGNITION,
        [
            party(civil_pb2.PARTY_ROLE_SUBJECT, child),
            party(civil_pb2.PARTY_ROLE_FATHER, person(("Karl",), ("Huber",))),
        ],
    )


def adoption() -> civil_pb2.SubmitUpdateRequest:
    child = person(("Mia",), (), born=(2020, 3, 0))
    return request(
        civil_pb2.CIVIL_EVENT_TYPE_ADOPTION,
        [
            party(civil_pb2.PARTY_ROLE_SUBJECT, child),
            party(civil_pb2.PARTY_ROLE_ADOPTIVE_PARENT),
            party(civil_pb2.PARTY_ROLE_ADOPTIVE_PARENT, person(("Eva",), ("Muster",))),
        ],
    )


#: A valid submission per event kind, keyed by the kind name agreements use.
BUILDERS: dict[str, Callable[[], civil_pb2.SubmitUpdateRequest]] = {
    "birth": birth,
    "death": death,
    "marriage": marriage,
    "divorce": divorce,
    "annulment": annulment,
    "name_change": name_change,
    "nationality_acquired": nationality_acquired,
    "nationality_lost": nationality_lost,
    "paternity_recognition": paternity_recognition,
    "adoption": adoption,
}
