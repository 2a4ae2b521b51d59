"""The catalogue follows the protobuf descriptors, so no crossing field goes unlisted."""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway.policy import CATALOGUES, kind_name, payload_tree, representation_payload
from gateway.policy.catalogue import identity_payload
from pouch.v1 import civil_pb2, common_pb2, identity_pb2, representation_pb2


def leaf_paths(message: Descriptor, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for field in message.fields:
        path = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
            suffix = "[]." if field.is_repeated else "."
            paths |= leaf_paths(field.message_type, path + suffix)
        else:
            paths.add(path)
    return paths


def test_every_civil_record_update_field_is_catalogued() -> None:
    assert set(CATALOGUES["civil_record"].leaves) == leaf_paths(
        civil_pb2.CivilRecordUpdate.DESCRIPTOR
    )


def test_every_identity_claim_field_is_catalogued_under_claim() -> None:
    assert set(CATALOGUES["identity_confirmation"].leaves) == leaf_paths(
        identity_pb2.IdentityClaim.DESCRIPTOR, "claim."
    )


def test_representation_catalogue_holds_only_what_crosses_between_states() -> None:
    expected = (
        leaf_paths(representation_pb2.AssistedPerson.DESCRIPTOR, "person.")
        | {"kind", "mission_country", "summary", "notes[].text"}
        | leaf_paths(representation_pb2.Attachment.DESCRIPTOR, "notes[].attachments[].")
    )
    assert set(CATALOGUES["representation"].leaves) == expected


def test_case_narrative_carries_the_category_of_a_sensitive_kind() -> None:
    catalogue = CATALOGUES["representation"]
    assert catalogue.kind_categories["medical_emergency"] == "health"
    assert catalogue.kind_categories["victim_of_trafficking"] == "victim_status"
    assert catalogue.kind_categories["detention_visit"] == "criminal_data"
    assert catalogue.is_sensitive("notes[].attachments[].content", "health")
    assert not catalogue.is_sensitive("person.name.given_names", "health")
    assert "victim_of_trafficking" in catalogue.protected_kinds


def test_kind_names_come_from_the_enums() -> None:
    assert kind_name("civil_record", civil_pb2.CIVIL_EVENT_TYPE_NAME_CHANGE) == "name_change"
    assert kind_name("identity_confirmation", "DOCUMENT_TYPE_PASSPORT") == "passport"
    assert kind_name("representation", 0) is None
    assert kind_name("representation", 999) is None


def test_payload_builders_use_proto_field_names() -> None:
    claim = identity_pb2.IdentityClaim(
        document_number="P1234567", date_of_birth=common_pb2.CivilDate(year=1990)
    )
    assert identity_payload(claim) == {
        "claim": {"document_number": "P1234567", "date_of_birth": {"year": 1990}}
    }
    assert identity_payload(identity_pb2.IdentityClaim()) == {}
    note = representation_pb2.CaseNote(note_id="n-1", author_state="BE", text="visited")
    assert representation_payload(
        kind=representation_pb2.ASSISTANCE_KIND_EVACUATION, notes=[note], summary="s"
    ) == {
        "kind": "ASSISTANCE_KIND_EVACUATION",
        "summary": "s",
        "notes": [{"text": "visited"}],
    }
    assert payload_tree(common_pb2.Place(country_code="BE")) == {"country_code": "BE"}
