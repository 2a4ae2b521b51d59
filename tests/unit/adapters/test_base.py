"""The hand-over contract: what an inbound update and a registry decision may hold."""

from __future__ import annotations

import pytest

from adapters.base import APPLIED, GENERIC_REJECTION, InboundUpdate, RegistryOutcome
from pouch.v1 import civil_pb2


def _update(message_id: str, *, sender_state: str = "FR") -> InboundUpdate:
    return InboundUpdate(
        message_id=message_id,
        sender_state=sender_state,
        agreement_id="FR-DE/civil-records",
        purpose="civil-status-update",
        update=civil_pb2.CivilRecordUpdate(event_type=civil_pb2.CIVIL_EVENT_TYPE_BIRTH),
    )


@pytest.mark.parametrize("message_id", ["../etc/passwd", "a/b", ".hidden", "", "x" * 37])
def test_message_id_that_could_escape_a_spool_directory_is_refused(message_id: str) -> None:
    with pytest.raises(ValueError, match="message_id"):
        _update(message_id)


def test_uuid_message_id_is_accepted() -> None:
    assert _update("0b8a7e9c-52f4-4d0e-9b7a-8f1f2a3b4c5d").message_id.startswith("0b8a")


def test_sender_state_must_be_a_state_code() -> None:
    with pytest.raises(ValueError, match="sender_state"):
        _update("m-1", sender_state="France")


def test_applied_outcome_carries_no_reason() -> None:
    assert RegistryOutcome(applied=True, reason_code="") == APPLIED
    with pytest.raises(ValueError, match="no reason"):
        RegistryOutcome(applied=True, reason_code="UNKNOWN_PERSON")


def test_rejection_without_reason_code_is_refused() -> None:
    with pytest.raises(ValueError, match="reason code"):
        RegistryOutcome(applied=False, reason_code="")


def test_registry_reason_that_could_carry_personal_data_becomes_generic() -> None:
    assert RegistryOutcome.rejected("no such person: Jean Dupont").reason_code == (
        GENERIC_REJECTION
    )
    assert RegistryOutcome.rejected("UNKNOWN_PERSON").reason_code == "UNKNOWN_PERSON"
