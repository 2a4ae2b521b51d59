"""Identity confirmations between two live gateways, each with its own reference registry.

AT's consulate asks BE to confirm documents. Both gateways run in this process over
real TLS; each registry is a reference registry served over mutual TLS on its own
event loop, seeded with documents, and able to be made slow. The demo agreement hashes
the document number, so BE's registry is searched by date of birth and BE's gateway
compares the number as a keyed hash.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import grpc.aio
import pytest
from sqlalchemy import select

from gateway.config import load_settings
from gateway.connect import bearer
from gateway.envelope import EnvelopeHeader, EnvelopeSigner, utc_millis
from gateway.envelope.payload import encode_payload
from gateway.exchanges.identity_wire import CLAIM_PAYLOAD_TYPE
from gateway.server.app import Gateway
from gateway.store.tables import audit_entries, identity_queries
from pouch.v1 import (
    common_pb2,
    envelope_pb2,
    identity_pb2,
    identity_pb2_grpc,
    peer_pb2,
    peer_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    representation_pb2,
    representation_pb2_grpc,
)
from pouch_devtools.demo.deployment import Site, agreement_id_for, prepare_sites
from pouch_devtools.reference_registry import ReferenceRegistry
from tests.integration.conftest import GatewayThread, assert_safe_message, channel_to, error_reason
from tests.integration.exchange_fixtures import stated_fingerprints

AT_BE = agreement_id_for("AT", "BE")
PURPOSE = "emergency_travel_document"
TIMEOUT_S = 15.0
# ICAO Doc 9303 part 4's specimen passport, issued here by BE instead of Utopia.
SPECIMEN_NUMBER = "L898902C3"
SPECIMEN_MRZ = (
    "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<\nL898902C36UTO7408122F1204159ZE184226B<<<<<10"
)


class SlowableRegistry(ReferenceRegistry):
    """The reference registry, whose lookups a test can hold back."""

    lookup_delay_s = 0.0

    async def LookupIdentity(
        self,
        request: registry_pb2.LookupIdentityRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> registry_pb2.LookupIdentityResponse:
        if self.lookup_delay_s:
            await asyncio.sleep(self.lookup_delay_s)
        return await super().LookupIdentity(request, context)


class RegistryThread:
    """A site's registry served over mutual TLS from its own event loop."""

    def __init__(self, site: Site) -> None:
        self.registry = SlowableRegistry(site.registry_db)
        self._site = site
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: grpc.aio.Server | None = None

    async def _start(self) -> None:
        d = self._site.registry_dir
        credentials = grpc.ssl_server_credentials(
            [((d / "server.key").read_bytes(), (d / "server.crt").read_bytes())],
            root_certificates=self._site.pki.ca_cert.read_bytes(),
            require_client_auth=True,
        )
        self._server = grpc.aio.server()
        registry_pb2_grpc.add_RegistryServiceServicer_to_server(self.registry, self._server)
        self._server.add_secure_port(f"127.0.0.1:{self._site.registry_port}", credentials)
        await self._server.start()

    def __enter__(self) -> SlowableRegistry:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self.registry

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            server = self._server
            asyncio.run_coroutine_threadsafe(server.stop(None), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self.registry.close()


class Deployment:
    def __init__(self, sites: dict[str, Site], gateways: dict[str, Gateway]) -> None:
        self.sites = sites
        self.gateways = gateways
        self.registries: dict[str, SlowableRegistry] = {}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """AT and BE with their registries, shared by the module's tests (made once: 0.5 s to
    set up, plus two gateways' and two registries' stop, for each of 14 tests if it were
    per test).

    Sharing is safe: the registries' documents are seeded once and only read; every test
    asserts on the answer to its own synchronous confirmation. The registry delay one
    test sets is restored in its ``finally``; the count of AT's identity queries the MRZ
    test compares is written only by calls made synchronously in a test, never after
    one has returned. The audit-log check asserts that no recorded value is in any
    entry, which other tests' traffic can only make stricter.
    """
    root = tmp_path_factory.mktemp("identity")
    sites = prepare_sites(root, ["AT", "BE"], now=datetime.now(UTC), agreements=[("AT", "BE")])
    gateways: dict[str, Gateway] = {}
    with RegistryThread(sites["AT"]) as at_registry, RegistryThread(sites["BE"]) as be_registry:
        _seed(be_registry)
        for state in ("AT", "BE"):
            gateways[state] = Gateway(load_settings(sites[state].config_path))
        with GatewayThread(gateways["AT"]), GatewayThread(gateways["BE"]):
            running = Deployment(sites, gateways)
            running.registries = {"AT": at_registry, "BE": be_registry}
            yield running


def _seed(registry: ReferenceRegistry) -> None:
    documents = [
        (SPECIMEN_NUMBER, ["Anna", "Maria"], ["Eriksson"], (1974, 8, 12), common_pb2.SEX_FEMALE),
        ("BE1234567", ["Jürgen"], ["Müller"], (1980, 1, 31), common_pb2.SEX_MALE),
        ("BE7654321", ["Sofie"], ["Peeters"], (1990, 5, 20), common_pb2.SEX_FEMALE),
    ]
    for number, given, family, (year, month, day), sex in documents:
        registry.add_document(
            document_type=identity_pb2.DOCUMENT_TYPE_PASSPORT,
            number=number,
            name=common_pb2.PersonName(given_names=given, family_names=family),
            date_of_birth=common_pb2.CivilDate(year=year, month=month, day=day),
            sex=sex,
            nationality="BE",
            status=identity_pb2.DOCUMENT_STATUS_LOST_OR_STOLEN
            if number == "BE7654321"
            else identity_pb2.DOCUMENT_STATUS_VALID,
        )


def _stub(site: Site) -> tuple[grpc.Channel, identity_pb2_grpc.IdentityServiceStub]:
    channel = channel_to(
        site.local_target,
        trusted_ca=site.pki.ca_cert.read_bytes(),
        chain=site.pki.client_cert("operator").read_bytes(),
        key=site.pki.client_key("operator").read_bytes(),
    )
    return channel, identity_pb2_grpc.IdentityServiceStub(channel)


def _confirm(
    site: Site,
    claim: identity_pb2.IdentityClaim,
    *,
    purpose: str = PURPOSE,
    timeout_s: float = TIMEOUT_S,
    scopes: tuple[str, ...] = ("identity:query",),
) -> identity_pb2.ConfirmIdentityResponse:
    channel, stub = _stub(site)
    try:
        request = identity_pb2.ConfirmIdentityRequest(
            partner_state="BE", agreement_id=AT_BE, purpose=purpose, claim=claim
        )
        metadata = bearer(site.token(scopes, now=time.time()))
        return stub.ConfirmIdentity(request, metadata=metadata, timeout=timeout_s)
    finally:
        channel.close()


def _claim(
    number: str = "BE1234567",
    given: tuple[str, ...] = ("Jürgen",),
    family: tuple[str, ...] = ("Müller",),
    born: tuple[int, int, int] = (1980, 1, 31),
    sex: common_pb2.Sex.ValueType = common_pb2.SEX_MALE,
) -> identity_pb2.IdentityClaim:
    year, month, day = born
    return identity_pb2.IdentityClaim(
        document_type=identity_pb2.DOCUMENT_TYPE_PASSPORT,
        document_number=number,
        name=common_pb2.PersonName(given_names=list(given), family_names=list(family)),
        date_of_birth=common_pb2.CivilDate(year=year, month=month, day=day),
        sex=sex,
        nationality="BE",
    )


def _flags(answer: identity_pb2.ConfirmIdentityResponse) -> dict[str, bool]:
    return {flag.field: flag.matched for flag in answer.fields}


def test_every_claimed_field_agreeing_is_a_match_with_the_document_status(
    deployment: Deployment,
) -> None:
    answer = _confirm(deployment.sites["AT"], _claim())

    assert answer.result == identity_pb2.MATCH_RESULT_MATCH
    assert answer.document_status == identity_pb2.DOCUMENT_STATUS_VALID
    assert set(_flags(answer).values()) == {True}
    assert set(_flags(answer)) >= {"document_number", "name.family_names", "date_of_birth"}


def test_names_compare_after_the_agreements_transliteration(deployment: Deployment) -> None:
    transliterated = _claim(given=("JUERGEN",), family=("MUELLER",))

    answer = _confirm(deployment.sites["AT"], transliterated)

    assert answer.result == identity_pb2.MATCH_RESULT_MATCH


def test_a_differing_given_name_is_a_partial_match_flagging_only_that_field(
    deployment: Deployment,
) -> None:
    answer = _confirm(deployment.sites["AT"], _claim(given=("Hans",)))

    assert answer.result == identity_pb2.MATCH_RESULT_PARTIAL
    flags = _flags(answer)
    assert flags.pop("name.given_names") is False
    assert set(flags.values()) == {True}


def test_an_unknown_document_is_no_match_and_says_nothing_of_other_documents(
    deployment: Deployment,
) -> None:
    # Same birthday and names as a known document, another number: not that document.
    answer = _confirm(deployment.sites["AT"], _claim(number="ZZ0000000"))

    assert answer.result == identity_pb2.MATCH_RESULT_NO_MATCH
    assert answer.document_status == identity_pb2.DOCUMENT_STATUS_UNKNOWN
    assert not answer.fields


def test_a_document_reported_lost_is_reported_as_such(deployment: Deployment) -> None:
    claim = _claim(
        number="BE7654321",
        given=("Sofie",),
        family=("Peeters",),
        born=(1990, 5, 20),
        sex=common_pb2.SEX_FEMALE,
    )

    answer = _confirm(deployment.sites["AT"], claim)

    assert answer.result == identity_pb2.MATCH_RESULT_MATCH
    assert answer.document_status == identity_pb2.DOCUMENT_STATUS_LOST_OR_STOLEN


def test_an_mrz_alone_is_enough_to_ask(deployment: Deployment) -> None:
    claim = identity_pb2.IdentityClaim(
        document_type=identity_pb2.DOCUMENT_TYPE_PASSPORT, mrz=SPECIMEN_MRZ
    )

    answer = _confirm(deployment.sites["AT"], claim)

    assert answer.result == identity_pb2.MATCH_RESULT_MATCH
    assert _flags(answer)["document_number"] is True


def test_an_mrz_with_a_wrong_check_digit_is_refused_before_anything_is_sent(
    deployment: Deployment,
) -> None:
    broken = SPECIMEN_MRZ.replace("L898902C36", "L898902C35")
    claim = identity_pb2.IdentityClaim(
        document_type=identity_pb2.DOCUMENT_TYPE_PASSPORT, mrz=broken
    )
    before = _query_count(deployment.gateways["AT"])

    with pytest.raises(grpc.RpcError) as refused:
        _confirm(deployment.sites["AT"], claim)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "claim.mrz" in (refused.value.details() or "")
    assert "L898902C" not in (refused.value.details() or "")
    assert _query_count(deployment.gateways["AT"]) == before


def test_a_purpose_the_agreement_does_not_list_is_refused(deployment: Deployment) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        _confirm(deployment.sites["AT"], _claim(), purpose="law_enforcement")

    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(refused.value) == "PURPOSE_NOT_AGREED"
    assert_safe_message(refused.value)


def test_a_caller_without_the_scope_is_refused(deployment: Deployment) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        _confirm(deployment.sites["AT"], _claim(), scopes=("civil:submit",))

    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_registry_that_does_not_answer_in_time_is_deadline_exceeded_not_a_guess(
    deployment: Deployment,
) -> None:
    registry = deployment.registries["BE"]
    registry.lookup_delay_s = 3.0
    try:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as late:
            _confirm(deployment.sites["AT"], _claim(), timeout_s=1.5)
        waited = time.monotonic() - started
    finally:
        registry.lookup_delay_s = 0.0

    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert waited < 3.0


def test_a_replayed_query_is_refused(deployment: Deployment) -> None:
    at, be = deployment.sites["AT"], deployment.sites["BE"]
    envelope = _query_envelope(deployment, at)
    channel = channel_to(
        be.peer_target,
        trusted_ca=be.pki.ca_cert.read_bytes(),
        chain=at.pki.gateway_cert.read_bytes(),
        key=at.pki.gateway_key.read_bytes(),
    )
    try:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        request = peer_pb2.QueryRequest(
            envelope=envelope, hash_key_fingerprints=stated_fingerprints(at, [envelope])
        )
        first = stub.Query(request, timeout=TIMEOUT_S)
        with pytest.raises(grpc.RpcError) as replayed:
            stub.Query(request, timeout=TIMEOUT_S)
    finally:
        channel.close()

    assert first.answer.payload_type == "pouch.v1.IdentityAnswer"
    assert replayed.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(replayed.value) == "REPLAY"


def test_neither_answers_nor_audit_entries_hold_a_recorded_value(deployment: Deployment) -> None:
    # The claim names the known person with another given name; the recorded one must
    # not come back, and no name or number may reach either side's audit log.
    answer = _confirm(deployment.sites["AT"], _claim(given=("Hans",)))

    assert b"JUERGEN" not in answer.SerializeToString().upper()
    for gateway in deployment.gateways.values():
        with gateway.engine.connect() as conn:
            stored = b"".join(conn.execute(select(audit_entries.c.canonical)).scalars())
        for value in ("JÜRGEN", "Jürgen", "JUERGEN", "Müller", "MUELLER", "BE1234567", "HANS"):
            assert value.encode() not in stored


def _query_count(gateway: Gateway) -> int:
    with gateway.engine.connect() as conn:
        return len(conn.execute(select(identity_queries.c.message_id)).all())


def _query_envelope(deployment: Deployment, at: Site) -> envelope_pb2.Envelope:
    """A fresh query signed by AT's key, as AT's gateway would send it."""
    gateway = deployment.gateways["AT"]
    assert gateway.exchanges is not None
    agreement = gateway.exchanges.gate.in_force(AT_BE, "BE")
    signer = EnvelopeSigner.from_state_directory(at.pki)
    header = EnvelopeHeader(
        message_id=str(uuid.uuid4()),
        agreement_id=agreement.id,
        agreement_version=agreement.version,
        agreement_digest=agreement.digest,
        exchange_type=common_pb2.EXCHANGE_TYPE_IDENTITY_CONFIRMATION,
        purpose=PURPOSE,
        sender_state="AT",
        recipient_state="BE",
        created_at=utc_millis(datetime.now(UTC)),
        payload_type=CLAIM_PAYLOAD_TYPE,
    )
    born = {"year": 1980, "month": 1, "day": 31}
    tree = {"claim": {"document_type": "DOCUMENT_TYPE_PASSPORT", "date_of_birth": born}}
    return signer.sign(header, encode_payload(tree))


def _request_case(site: Site) -> str:
    channel = channel_to(
        site.local_target,
        trusted_ca=site.pki.ca_cert.read_bytes(),
        chain=site.pki.client_cert("operator").read_bytes(),
        key=site.pki.client_key("operator").read_bytes(),
    )
    try:
        stub = representation_pb2_grpc.RepresentationServiceStub(channel)
        request = representation_pb2.RequestAssistanceRequest(
            client_reference=f"identity-case-{uuid.uuid4().hex[:8]}",
            representing_state="BE",
            mission_country="CV",
            agreement_id=AT_BE,
            purpose="consular_assistance",
            kind=representation_pb2.ASSISTANCE_KIND_LOST_DOCUMENTS,
            person=representation_pb2.AssistedPerson(
                name=common_pb2.PersonName(given_names=["Jürgen"], family_names=["Müller"]),
                date_of_birth=common_pb2.CivilDate(year=1980, month=1, day=31),
                nationality="AT",
            ),
            summary="Passport lost; an emergency travel document is needed.",
        )
        metadata = bearer(site.token(["representation:request"], now=time.time()))
        answer = stub.RequestAssistance(request, metadata=metadata, timeout=TIMEOUT_S)
        return answer.case.case_id
    finally:
        channel.close()


def _case(site: Site, case_id: str) -> representation_pb2.RepresentationCase:
    channel = channel_to(
        site.local_target,
        trusted_ca=site.pki.ca_cert.read_bytes(),
        chain=site.pki.client_cert("operator").read_bytes(),
        key=site.pki.client_key("operator").read_bytes(),
    )
    try:
        stub = representation_pb2_grpc.RepresentationServiceStub(channel)
        metadata = bearer(site.token(["representation:request"], now=time.time()))
        request = representation_pb2.GetCaseRequest(case_id=case_id)
        return stub.GetCase(request, metadata=metadata, timeout=TIMEOUT_S).case
    finally:
        channel.close()


def test_a_confirmation_made_for_a_case_is_linked_to_it(deployment: Deployment) -> None:
    at = deployment.sites["AT"]
    case_id = _request_case(at)

    answer = _confirm_for_case(at, _claim(), case_id)

    assert answer.result == identity_pb2.MATCH_RESULT_MATCH
    assert list(_case(at, case_id).identity_confirmations) == [answer.message_id]


def test_a_confirmation_for_a_case_this_state_does_not_hold_is_refused(
    deployment: Deployment,
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        _confirm_for_case(deployment.sites["AT"], _claim(), "no-such-case")

    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


def _confirm_for_case(
    site: Site, claim: identity_pb2.IdentityClaim, case_id: str
) -> identity_pb2.ConfirmIdentityResponse:
    channel, stub = _stub(site)
    try:
        request = identity_pb2.ConfirmIdentityRequest(
            partner_state="BE", agreement_id=AT_BE, purpose=PURPOSE, claim=claim, case_id=case_id
        )
        metadata = bearer(site.token(["identity:query"], now=time.time()))
        return stub.ConfirmIdentity(request, metadata=metadata, timeout=TIMEOUT_S)
    finally:
        channel.close()
