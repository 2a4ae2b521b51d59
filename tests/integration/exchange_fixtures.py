"""Builders for the agreement-enforcement and peer-envelope integration tests.

What they provide, and what they promise:

* civil-record updates that pass the sender's validation (an adult's death, a
  child's birth, an adoption), each carrying values a test can look for later;
* extra agreement texts for a prepared deployment: double-signed, signed by one
  party only, or a second, differently worded text of one agreement id, so that
  a test can give each end its own text before the gateways start;
* gateways of a prepared deployment running in this process over real TLS, with
  a spool registry adapter, so a test can read exactly what reached the registry;
* a local caller (client certificate and token) with blocking stubs, and a peer
  caller presenting another state's gateway identity;
* read-only views of a gateway's inbox and outbox, and the google.rpc details of
  a refusal.

Every helper takes what it needs as arguments; nothing here keeps state between tests.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import func, select

from adapters.settings import SpoolAdapterSettings
from adapters.spool import SpoolAdapter
from gateway.agreements.hash_key import hash_key_fingerprint
from gateway.agreements.loader import load_agreement, sign_agreement
from gateway.agreements.model import EXCHANGES_VALIDATOR
from gateway.config import load_settings
from gateway.connect import bearer
from gateway.envelope import (
    EnvelopeHeader,
    EnvelopeSigner,
    ReceiptSigner,
    envelope_digest,
    utc_millis,
)
from gateway.envelope.payload import decode_payload, encode_payload
from gateway.server.app import Gateway
from gateway.store.inbox import InboxEntry
from gateway.store.outbox import OutboxMessage
from gateway.store.tables import inbox
from pouch.v1 import (
    agreement_pb2,
    agreement_pb2_grpc,
    civil_pb2,
    civil_pb2_grpc,
    common_pb2,
    envelope_pb2,
    gateway_pb2_grpc,
    identity_pb2_grpc,
    peer_pb2,
    peer_pb2_grpc,
)
from pouch_devtools.demo.agreements import CIVIL_PURPOSE, civil_agreement_text, write_hash_key
from pouch_devtools.demo.deployment import Site, prepare_sites
from tests.integration.conftest import GatewayThread, channel_to

TIMEOUT_S = 10.0
# The dispatcher and hand-over loops poll; short intervals keep the suite fast.
P = TypeVar("P")
FAST_DELIVERY: Mapping[str, float] = {
    "backoff_initial_seconds": 0.2,
    "backoff_max_seconds": 1.0,
    "poll_interval_seconds": 0.05,
}
CIVIL_PAYLOAD_TYPE = civil_pb2.CivilRecordUpdate.DESCRIPTOR.full_name
FINAL_STATES = frozenset(
    {
        common_pb2.DELIVERY_STATE_APPLIED,
        common_pb2.DELIVERY_STATE_REJECTED,
        common_pb2.DELIVERY_STATE_DEAD_LETTERED,
    }
)

_sequence = itertools.count(1)


def unique_reference(prefix: str) -> str:
    """A client reference no other call in this run uses."""
    return f"{prefix}-{next(_sequence)}-{uuid.uuid4().hex[:8]}"


# -- civil-record updates ------------------------------------------------------


def _date(day: date) -> common_pb2.CivilDate:
    return common_pb2.CivilDate(year=day.year, month=day.month, day=day.day)


@dataclass(frozen=True)
class Traceable:
    """Values a test plants in an update to look for on the far side."""

    act_reference: str = "ACT-2026-7731-SECRET"
    event_locality: str = "Eggenberg-Quarter"
    birth_locality: str = "Hallstatt-Lahn"
    subject_identifier: str = "REG-SUBJECT-4411"
    parent_identifier: str = "REG-PARENT-9902"


def death_update(
    today: date, *, marks: Traceable = Traceable(), family_name: str = "Wouters"
) -> civil_pb2.CivilRecordUpdate:
    """An adult's death: governed by the agreement's ordinary field rules."""
    update = civil_pb2.CivilRecordUpdate(
        event_type=civil_pb2.CIVIL_EVENT_TYPE_DEATH,
        event_date=_date(today),
        event_place=common_pb2.Place(country_code="AT", locality=marks.event_locality),
        act_reference=marks.act_reference,
    )
    subject = update.parties.add(role=civil_pb2.PARTY_ROLE_SUBJECT)
    subject.person.name.given_names.append("Jan")
    subject.person.name.family_names.append(family_name)
    subject.person.date_of_birth.CopyFrom(common_pb2.CivilDate(year=1950, month=6, day=2))
    subject.person.place_of_birth.CopyFrom(
        common_pb2.Place(country_code="BE", locality=marks.birth_locality)
    )
    subject.person.nationalities.append("BE")
    subject.person.registry_identifier = marks.subject_identifier
    return update


def birth_update(today: date, *, marks: Traceable = Traceable()) -> civil_pb2.CivilRecordUpdate:
    """A child's birth: governed by the agreement's stricter rules for minors."""
    update = civil_pb2.CivilRecordUpdate(
        event_type=civil_pb2.CIVIL_EVENT_TYPE_BIRTH,
        event_date=_date(today),
        event_place=common_pb2.Place(country_code="AT", locality=marks.event_locality),
        act_reference=marks.act_reference,
    )
    child = update.parties.add(role=civil_pb2.PARTY_ROLE_SUBJECT)
    child.person.name.given_names.append("Lena")
    child.person.name.family_names.append("Peeters")
    child.person.date_of_birth.CopyFrom(_date(today))
    child.person.place_of_birth.CopyFrom(
        common_pb2.Place(country_code="AT", locality=marks.birth_locality)
    )
    child.person.nationalities.append("BE")
    child.person.registry_identifier = marks.subject_identifier
    mother = update.parties.add(role=civil_pb2.PARTY_ROLE_MOTHER)
    mother.person.name.given_names.append("Anna")
    mother.person.name.family_names.append("Peeters")
    mother.person.registry_identifier = marks.parent_identifier
    return update


def adoption_update(today: date) -> civil_pb2.CivilRecordUpdate:
    """A valid adoption: a kind the demo agreement does not list."""
    update = civil_pb2.CivilRecordUpdate(
        event_type=civil_pb2.CIVIL_EVENT_TYPE_ADOPTION,
        event_date=_date(today),
        event_place=common_pb2.Place(country_code="AT"),
    )
    child = update.parties.add(role=civil_pb2.PARTY_ROLE_SUBJECT)
    child.person.name.given_names.append("Mia")
    child.person.date_of_birth.CopyFrom(common_pb2.CivilDate(year=2015, month=1, day=9))
    parent = update.parties.add(role=civil_pb2.PARTY_ROLE_ADOPTIVE_PARENT)
    parent.person.name.family_names.append("Claes")
    return update


def submission(
    update: civil_pb2.CivilRecordUpdate,
    *,
    agreement_id: str,
    recipient_state: str,
    reference: str | None = None,
    purpose: str = CIVIL_PURPOSE,
) -> civil_pb2.SubmitUpdateRequest:
    return civil_pb2.SubmitUpdateRequest(
        client_reference=reference or unique_reference("ref"),
        recipient_state=recipient_state,
        agreement_id=agreement_id,
        purpose=purpose,
        update=update,
    )


# -- agreement files -----------------------------------------------------------


def _sign(path: Path, signers: Sequence[Site]) -> None:
    for site in signers:
        sign_agreement(
            path,
            key_path=site.pki.signing_key,
            cert_path=site.pki.signing_cert,
            exchanges_validator=EXCHANGES_VALIDATOR,
        )


def write_agreement(
    agreement_id: str,
    first: Site,
    second: Site,
    *,
    today: date,
    holders: Sequence[Site],
    signers: Sequence[Site],
    retention_days: int = 90,
    daily_quota: int = 100_000,
    message_signatures: str | None = None,
) -> Path:
    """The demo civil agreement under ``agreement_id``, signed by ``signers``, into
    each holder's agreements directory, with a hashing key shared by both parties;
    ``message_signatures`` (``classical`` or ``hybrid``) is written when given."""
    text = civil_agreement_text(
        agreement_id, first.pki, second.pki, today=today, daily_quota=daily_quota
    )
    assert "\nretention_days: 90\n" in text
    text = text.replace("\nretention_days: 90\n", f"\nretention_days: {retention_days}\n")
    if message_signatures is not None:
        text = text.replace(
            "\nonward_transfer: forbidden\n",
            f"\nonward_transfer: forbidden\nmessage_signatures: {message_signatures}\n",
        )
        assert f"\nmessage_signatures: {message_signatures}\n" in text
    staging = holders[0].agreements_dir / f"{agreement_id}.yaml"
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.write_text(text, encoding="utf-8")
    _sign(staging, signers)
    for holder in holders[1:]:
        holder.agreements_dir.mkdir(parents=True, exist_ok=True)
        (holder.agreements_dir / staging.name).write_bytes(staging.read_bytes())
    key = first.hash_keys_dir / f"{agreement_id}.key"
    if not key.exists():
        write_hash_key(agreement_id, [first.hash_keys_dir, second.hash_keys_dir])
    return staging


def agreement_digest(site: Site, agreement_id: str) -> str:
    """The digest of the text ``site`` holds for ``agreement_id``."""
    path = site.agreements_dir / f"{agreement_id}.yaml"
    return load_agreement(path, exchanges_validator=EXCHANGES_VALIDATOR).digest


def hash_key(site: Site, agreement_id: str) -> bytes:
    return bytes.fromhex((site.hash_keys_dir / f"{agreement_id}.key").read_text().strip())


# -- gateways in this process --------------------------------------------------


@dataclass(frozen=True)
class RunningGateways:
    """In-process gateways of a prepared deployment, by state."""

    sites: Mapping[str, Site]
    gateways: Mapping[str, Gateway]
    spools: Mapping[str, Path]

    def gateway(self, state: str) -> Gateway:
        return self.gateways[state]

    def spool_text(self, state: str, message_id: str) -> str | None:
        """What the registry of ``state`` received for ``message_id``, if anything."""
        path = SpoolAdapter(self.spools[state]).path_for(message_id)
        return None if path is None else path.read_text(encoding="utf-8")


@contextlib.contextmanager
def running_gateways(
    sites: Mapping[str, Site], states: Sequence[str], *, spool_root: Path
) -> Iterator[RunningGateways]:
    """Start the gateways of ``states``, each handing updates to a spool directory."""
    spools = {state: spool_root / state for state in states}
    gateways: dict[str, Gateway] = {}
    with contextlib.ExitStack() as stack:
        for state in states:
            settings = load_settings(sites[state].config_path)
            if settings.agreements is not None:
                spool = SpoolAdapterSettings(kind="spool", directory=spools[state])
                settings = settings.model_copy(update={"registry": spool})
            gateways[state] = stack.enter_context(GatewayThread(Gateway(settings)))
        yield RunningGateways(sites=sites, gateways=gateways, spools=spools)


@contextlib.contextmanager
def be_alone(root: Path, states: Sequence[str]) -> Iterator[RunningGateways]:
    """Of a deployment of ``states`` with the AT–BE agreement, only BE running here."""
    sites = prepare_sites(
        root, states, now=datetime.now(UTC), agreements=[("AT", "BE")], delivery=FAST_DELIVERY
    )
    with running_gateways(sites, ["BE"], spool_root=root / "spool") as running:
        yield running


def true_receipt(receipts: ReceiptSigner, envelope: envelope_pb2.Envelope) -> envelope_pb2.Receipt:
    """``receipts``' signed acceptance of ``envelope``, binding the digest of these bytes."""
    return receipts.sign_receipt(
        message_id=envelope.message_id,
        request_digest=envelope_digest(envelope),
        outcome=envelope_pb2.RECEIPT_OUTCOME_ACCEPTED,
        reason_code="",
        issued_at=datetime.now(UTC),
    )


class StandInPartner(peer_pb2_grpc.PeerServiceServicer):
    """A partner's ``Deliver`` and ``DeliverBatch``, both answered by :meth:`receipts_for`."""

    def receipts_for(
        self, envelopes: list[envelope_pb2.Envelope], context: grpc.ServicerContext
    ) -> list[envelope_pb2.Receipt]:
        raise NotImplementedError

    def Deliver(
        self, request: peer_pb2.DeliverRequest, context: grpc.ServicerContext
    ) -> peer_pb2.DeliverResponse:
        (receipt,) = self.receipts_for([request.envelope], context)
        return peer_pb2.DeliverResponse(receipt=receipt)

    def DeliverBatch(
        self, request: peer_pb2.DeliverBatchRequest, context: grpc.ServicerContext
    ) -> peer_pb2.DeliverBatchResponse:
        receipts = self.receipts_for(list(request.envelopes), context)
        return peer_pb2.DeliverBatchResponse(
            results=[peer_pb2.DeliveryResult(receipt=receipt) for receipt in receipts]
        )


@contextlib.contextmanager
def standing_in_for(site: Site, caller: Site, servicer: Any) -> Iterator[None]:
    """``servicer`` (a ``PeerService``) served on ``site``'s peer port with ``site``'s
    gateway certificate, taking only clients of ``caller``'s CA, as that gateway would."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    peer_pb2_grpc.add_PeerServiceServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(site.pki.gateway_key.read_bytes(), site.pki.gateway_cert.read_bytes())],
        root_certificates=caller.pki.ca_cert.read_bytes(),
        require_client_auth=True,
    )
    server.add_secure_port(site.peer_target, credentials)
    server.start()
    try:
        yield
    finally:
        server.stop(grace=None)


@dataclass(frozen=True)
class FacingPartner(Generic[P]):
    """AT's gateway running here, its operator's caller, and what stands in for BE."""

    gateway: Gateway
    caller: LocalCaller
    partner: P


@contextlib.contextmanager
def at_facing(
    root: Path,
    partner_of: Callable[[ReceiptSigner], P],
    *,
    delivery: Mapping[str, float] = FAST_DELIVERY,
) -> Iterator[FacingPartner[P]]:
    """AT's gateway in this process; in BE's place, ``partner_of(BE's receipt signer)``
    served with BE's TLS identity (:func:`standing_in_for`)."""
    sites = prepare_sites(
        root, ["AT", "BE"], now=datetime.now(UTC), agreements=[("AT", "BE")], delivery=delivery
    )
    at, be = sites["AT"], sites["BE"]
    partner = partner_of(ReceiptSigner.from_state_directory(be.pki))
    with (
        standing_in_for(be, at, partner),
        running_gateways(sites, ["AT"], spool_root=root / "spool") as running,
        LocalCaller(at, ["civil:submit"]) as caller,
    ):
        yield FacingPartner(running.gateway("AT"), caller, partner)


def inbox_entry(gateway: Gateway, message_id: str) -> InboxEntry | None:
    assert gateway.exchanges is not None
    return gateway.exchanges.inbox.get(message_id)


def inbox_size(gateway: Gateway) -> int:
    with gateway.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(inbox)).scalar_one())


def outbox_message(gateway: Gateway, message_id: str) -> OutboxMessage | None:
    assert gateway.exchanges is not None
    return gateway.exchanges.outbox.get(message_id)


def payload_tree(envelope_bytes: bytes) -> dict[str, Any]:
    """The payload tree of a stored envelope."""
    return decode_payload(envelope_pb2.Envelope.FromString(envelope_bytes).payload)


# -- callers -------------------------------------------------------------------


class LocalCaller:
    """An operator of ``site`` on its local API: client certificate plus bearer token."""

    def __init__(self, site: Site, scopes: Sequence[str]) -> None:
        self._site = site
        self._scopes = tuple(scopes)
        self._channel = channel_to(
            site.local_target,
            trusted_ca=site.pki.ca_cert.read_bytes(),
            chain=site.pki.client_cert("operator").read_bytes(),
            key=site.pki.client_key("operator").read_bytes(),
        )
        self.civil = civil_pb2_grpc.CivilRecordServiceStub(self._channel)
        self.identity = identity_pb2_grpc.IdentityServiceStub(self._channel)
        self.agreements = agreement_pb2_grpc.AgreementServiceStub(self._channel)
        self.gateway = gateway_pb2_grpc.GatewayServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> LocalCaller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer(self._site.token(self._scopes, now=time.time()))

    def submit(self, request: civil_pb2.SubmitUpdateRequest) -> str:
        answer = self.civil.SubmitUpdate(request, metadata=self.metadata, timeout=TIMEOUT_S)
        return answer.message_id

    def status(self, message_id: str) -> civil_pb2.UpdateStatus:
        request = civil_pb2.GetUpdateStatusRequest(message_id=message_id)
        return self.civil.GetUpdateStatus(request, metadata=self.metadata, timeout=TIMEOUT_S).status

    def wait_until_final(
        self, message_id: str, *, within_s: float = 15.0
    ) -> civil_pb2.UpdateStatus:
        """The update's status once applied, rejected or dead-lettered."""
        deadline = time.monotonic() + within_s
        while True:
            status = self.status(message_id)
            if status.state in FINAL_STATES or time.monotonic() > deadline:
                return status
            time.sleep(0.05)

    def summary(self, agreement_id: str) -> agreement_pb2.AgreementSummary:
        listing = self.agreements.ListAgreements(
            agreement_pb2.ListAgreementsRequest(), metadata=self.metadata, timeout=TIMEOUT_S
        )
        (found,) = [a for a in listing.agreements if a.ref.id == agreement_id]
        return found

    def wait_for_status(
        self,
        agreement_id: str,
        status: agreement_pb2.AgreementStatus.ValueType,
        *,
        within_s: float = 5.0,
    ) -> agreement_pb2.AgreementSummary:
        deadline = time.monotonic() + within_s
        while True:
            summary = self.summary(agreement_id)
            if summary.status == status or time.monotonic() > deadline:
                return summary
            time.sleep(0.05)


def stated_fingerprints(site: Site, envelopes: Sequence[envelope_pb2.Envelope]) -> dict[str, str]:
    """What ``site``'s gateway states with ``envelopes``: its hashing-key fingerprint for
    each agreement they name that it holds a key for."""
    stated: dict[str, str] = {}
    for envelope in envelopes:
        path = site.hash_keys_dir / f"{envelope.agreement.id}.key"
        if path.is_file():
            key = bytes.fromhex(path.read_text().strip())
            stated[envelope.agreement.id] = hash_key_fingerprint(key, envelope.agreement.digest)
    return stated


class PeerCaller:
    """``tls_site``'s gateway identity calling ``target_site``'s peer API, stating the
    hashing-key fingerprints ``tls_site`` holds as its gateway would."""

    def __init__(self, tls_site: Site, target_site: Site) -> None:
        self._tls_site = tls_site
        self._channel = channel_to(
            target_site.peer_target,
            trusted_ca=target_site.pki.ca_cert.read_bytes(),
            chain=tls_site.pki.gateway_cert.read_bytes(),
            key=tls_site.pki.gateway_key.read_bytes(),
        )
        self.stub = peer_pb2_grpc.PeerServiceStub(self._channel)

    def __enter__(self) -> PeerCaller:
        return self

    def __exit__(self, *exc: object) -> None:
        self._channel.close()

    def deliver(self, envelope: envelope_pb2.Envelope) -> envelope_pb2.Receipt:
        request = peer_pb2.DeliverRequest(
            envelope=envelope, hash_key_fingerprints=stated_fingerprints(self._tls_site, [envelope])
        )
        return self.stub.Deliver(request, timeout=TIMEOUT_S).receipt

    def deliver_batch(
        self, envelopes: Sequence[envelope_pb2.Envelope]
    ) -> peer_pb2.DeliverBatchResponse:
        request = peer_pb2.DeliverBatchRequest(
            envelopes=envelopes,
            hash_key_fingerprints=stated_fingerprints(self._tls_site, envelopes),
        )
        return self.stub.DeliverBatch(request, timeout=TIMEOUT_S)

    def query(self, envelope: envelope_pb2.Envelope) -> peer_pb2.QueryResponse:
        request = peer_pb2.QueryRequest(
            envelope=envelope, hash_key_fingerprints=stated_fingerprints(self._tls_site, [envelope])
        )
        return self.stub.Query(request, timeout=TIMEOUT_S)


# -- envelopes -----------------------------------------------------------------


def civil_header(
    *,
    sender: str,
    recipient: str,
    agreement_id: str,
    agreement_digest: str,
    message_id: str | None = None,
    agreement_version: int = 1,
    created_at: datetime | None = None,
) -> EnvelopeHeader:
    return EnvelopeHeader(
        message_id=message_id or str(uuid.uuid4()),
        agreement_id=agreement_id,
        agreement_version=agreement_version,
        agreement_digest=agreement_digest,
        exchange_type=common_pb2.EXCHANGE_TYPE_CIVIL_RECORD,
        purpose=CIVIL_PURPOSE,
        sender_state=sender,
        recipient_state=recipient,
        created_at=utc_millis(created_at or datetime.now(UTC)),
        payload_type=CIVIL_PAYLOAD_TYPE,
    )


def signed_envelope(
    signer: EnvelopeSigner, header: EnvelopeHeader, tree: Mapping[str, Any]
) -> envelope_pb2.Envelope:
    return signer.sign(header, encode_payload(tree))


# -- refusals ------------------------------------------------------------------


def field_violations(error: grpc.RpcError) -> list[str]:
    """The field paths named by the ``google.rpc.BadRequest`` detail of a refusal."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "refusal carries no google.rpc.Status"
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            detail.Unpack(request)
            fields += [v.field for v in request.field_violations]
    return fields
