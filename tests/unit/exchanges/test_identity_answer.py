"""The identity answer: computed from the registry's records, never disclosing them.

Each case runs the whole comparison path the responding gateway runs: the claim is
minimised by the agreement's field rules (the sender's stage), re-evaluated strictly
(the receiver's stage), the records are rendered through the same rules, compared,
and the answer built as it would be signed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.exchanges.identity_answer import render_record
from gateway.exchanges.identity_match import COMPARED_FIELDS, compare
from gateway.exchanges.name_matching import NameComparison, normalise_name
from gateway.policy import CompiledPolicy, LegalBasisFlags, PolicySection, evaluate
from gateway.policy.catalogue import identity_payload
from pouch.v1 import common_pb2, identity_pb2, registry_pb2

TODAY = date(2026, 12, 1)
KEY = b"identity-answer-test-linkage-key-32b"
NAMES = NameComparison(transliteration="icao_9303")
PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Distinctive values: long enough never to occur in a field name or enum name by chance.
NAME = st.text(alphabet="QWXZJKV", min_size=7, max_size=10)
NUMBER = st.text(alphabet="0123456789QXZ", min_size=9, max_size=9)
ACTIONS = st.sampled_from(["allow", "hash", "deny"])
DATE_ACTIONS = st.sampled_from(["allow", {"generalize": "year"}, "deny"])


def _policy(number: Any, given: Any, family: Any, born: Any) -> CompiledPolicy:
    fields = {
        "claim.document_type": "allow",
        "claim.document_number": number,
        "claim.name.given_names": given,
        "claim.name.family_names": family,
        "claim.date_of_birth": born,
        "claim.sex": "allow",
        "claim.nationality": "allow",
    }
    section = PolicySection.model_validate(
        {
            "identity_confirmation": {
                "AT->BE": {
                    "purposes": ["emergency_travel_document"],
                    "kinds": ["passport"],
                    "fields": fields,
                    "minors": {"fields": fields},
                }
            }
        }
    )
    return CompiledPolicy.compile(section, "AT->BE")


@dataclass(frozen=True)
class Person:
    number: str
    given: str
    family: str
    born: tuple[int, int, int]

    def record(self) -> registry_pb2.IdentityRecord:
        year, month, day = self.born
        return registry_pb2.IdentityRecord(
            document_type=identity_pb2.DOCUMENT_TYPE_PASSPORT,
            document_number=self.number,
            name=common_pb2.PersonName(given_names=[self.given], family_names=[self.family]),
            date_of_birth=common_pb2.CivilDate(year=year, month=month, day=day),
            sex=common_pb2.SEX_FEMALE,
            nationality="BE",
            document_status=identity_pb2.DOCUMENT_STATUS_VALID,
        )

    def claim(self) -> identity_pb2.IdentityClaim:
        record = self.record()
        claim = identity_pb2.IdentityClaim(
            document_type=record.document_type,
            document_number=record.document_number,
            date_of_birth=record.date_of_birth,
            sex=record.sex,
            nationality=record.nationality,
        )
        claim.name.given_names.extend(normalise_name(v, NAMES) for v in record.name.given_names)
        claim.name.family_names.extend(normalise_name(v, NAMES) for v in record.name.family_names)
        return claim


PERSONS = st.builds(
    Person,
    number=NUMBER,
    given=NAME,
    family=NAME,
    born=st.tuples(st.integers(1930, 2000), st.integers(1, 12), st.integers(1, 28)),
)


def _answer(
    policy: CompiledPolicy, claim: identity_pb2.IdentityClaim, records: list[Person]
) -> identity_pb2.IdentityAnswer:
    sent = evaluate(
        policy,
        exchange_type="identity_confirmation",
        purpose="emergency_travel_document",
        kind="passport",
        payload=identity_payload(claim),
        legal_basis=LegalBasisFlags(),
        today=TODAY,
        hash_key=KEY,
    )
    received = evaluate(
        policy,
        exchange_type="identity_confirmation",
        purpose="emergency_travel_document",
        kind="passport",
        payload=sent.payload,
        legal_basis=LegalBasisFlags(),
        today=TODAY,
        hash_key=KEY,
        strict_receiver=True,
    )
    candidates = [
        render_record(p.record(), policy=policy, reference=received, hash_key=KEY, names=NAMES)
        for p in records
    ]
    verdict = compare(received.payload.get("claim", {}), candidates, names=NAMES)
    return verdict.answer(request_message_id="query-1", request_digest="sha256:00")


@PROPERTY_SETTINGS
@given(
    asked=PERSONS,
    stored=st.lists(PERSONS, max_size=3),
    rules=st.tuples(ACTIONS, ACTIONS, ACTIONS, DATE_ACTIONS),
    same_person=st.booleans(),
)
def test_the_answer_never_holds_a_stored_value_absent_from_the_request(
    asked: Person, stored: list[Person], rules: tuple[Any, ...], same_person: bool
) -> None:
    if same_person:
        stored = [*stored, Person(asked.number, "QQQQQQQQQ", asked.family, asked.born)]
    claim = asked.claim()
    answer = _answer(_policy(*rules), claim, stored)

    sent = claim.SerializeToString()
    wire = answer.SerializeToString()
    for person in stored:
        record = person.record()
        values = [
            record.document_number,
            *record.name.given_names,
            *record.name.family_names,
            *(normalise_name(v, NAMES) for v in record.name.given_names),
            *(normalise_name(v, NAMES) for v in record.name.family_names),
        ]
        for value in values:
            if value.encode() not in sent:
                assert value.encode() not in wire
    claimed = {flag.field for flag in answer.fields}
    assert claimed <= set(COMPARED_FIELDS)
    assert len(claimed) == len(answer.fields)


@PROPERTY_SETTINGS
@given(person=PERSONS, rules=st.tuples(ACTIONS, ACTIONS, ACTIONS, DATE_ACTIONS))
def test_a_claim_copied_from_the_record_matches_under_any_rules_that_let_the_anchor_cross(
    person: Person, rules: tuple[Any, ...]
) -> None:
    number_rule, _, family_rule, _ = rules
    answer = _answer(_policy(*rules), person.claim(), [person])

    anchored = number_rule != "deny" or family_rule != "deny"
    expected = identity_pb2.MATCH_RESULT_MATCH if anchored else identity_pb2.MATCH_RESULT_NO_MATCH
    assert answer.result == expected


def test_a_stranger_sharing_a_birthday_is_not_a_partial_match() -> None:
    asked = Person("Q12345678", "JKVQWXZ", "ZXWQVKJ", (1980, 1, 31))
    stranger = Person("Z98765432", "QQWWXXZZ", "VVKKJJQQ", (1980, 1, 31))

    answer = _answer(_policy("hash", "allow", "allow", "allow"), asked.claim(), [stranger])

    assert answer.result == identity_pb2.MATCH_RESULT_NO_MATCH
    assert not answer.fields
    assert answer.document_status == identity_pb2.DOCUMENT_STATUS_UNKNOWN


def test_a_hashed_number_that_matches_reports_the_status_and_the_differing_name() -> None:
    asked = Person("Q12345678", "JKVQWXZ", "ZXWQVKJ", (1980, 1, 31))
    recorded = Person("Q12345678", "QQWWXXZZ", "ZXWQVKJ", (1980, 1, 31))

    answer = _answer(_policy("hash", "allow", "allow", "allow"), asked.claim(), [recorded])

    assert answer.result == identity_pb2.MATCH_RESULT_PARTIAL
    flags = {f.field: f.matched for f in answer.fields}
    assert flags == {
        "document_number": True,
        "name.family_names": True,
        "name.given_names": False,
        "date_of_birth": True,
        "sex": True,
        "nationality": True,
    }
    assert answer.document_status == identity_pb2.DOCUMENT_STATUS_VALID
