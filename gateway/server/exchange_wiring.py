"""The exchange half of a gateway: agreements, delivery and the registry handover.

Built only when the configuration has an ``[agreements]`` section; a gateway without
agreements still serves health, reflection, ``GatewayService`` and ``PeerService.Ping``.
:func:`build_exchanges` assembles the components once, as one frozen
:class:`ExchangeComponents`; :class:`BackgroundLoops` owns the loops that run beside the
listeners (delivery, hand-over, retention, case deadlines, checkpoints). Everything here
shares the gateway's engine, clock and metrics through one :class:`ExchangeContext`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from adapters.base import IdentitySource, RegistryAdapter
from adapters.factory import build_adapter
from gateway.agreements.gate import AgreementGate
from gateway.agreements.model import EXCHANGES_VALIDATOR
from gateway.agreements.notices import AgreementNotices
from gateway.agreements.registry import AgreementRegistry
from gateway.audit.checkpoints_store import CheckpointStore, WitnessStore
from gateway.audit.cosignature import partner_cosigners, witness_signers
from gateway.audit.cosigning import CosigningRetry, CosigningWatch
from gateway.audit.entry import Decision, EventKind
from gateway.audit.external_witness import ExternalWitness, WitnessClient, configured_witnesses
from gateway.audit.log import AuditLog, GroupCommittedLog
from gateway.audit.log_signing import CheckpointSigner
from gateway.audit.publication import CheckpointPublisher, CheckpointWitness
from gateway.audit.recorder import AuditRecorder
from gateway.audit.start_evidence import record_start
from gateway.config import Settings
from gateway.delivery.agreement_confirmation import AgreementConfirmation
from gateway.delivery.backoff import delivery_backoff
from gateway.delivery.bundle_announcement import BundleAnnouncements
from gateway.delivery.case_handover import CaseEventHandover, CaseEventSink
from gateway.delivery.context import ExchangeContext
from gateway.delivery.dispatcher import Dispatcher
from gateway.delivery.handover import Acknowledger, OutcomeRecorder, RegistryHandover
from gateway.delivery.inbound_retry import InboundFailures, RetryPolicy
from gateway.delivery.partner_contact import PartnerContacts
from gateway.delivery.partners import PARTNER_BUNDLES_DIR, Partner, PartnerChannels
from gateway.delivery.polling import pause
from gateway.delivery.receipts import AgreementReceipts
from gateway.delivery.receiver import InboundReceiver, InboundRoutes
from gateway.envelope import EnvelopeSigner, EnvelopeVerifier, ReceiptSigner
from gateway.envelope.payload import encode_payload
from gateway.errors import unexpected_summary
from gateway.exchanges.case_deadlines import DeadlineWatcher
from gateway.exchanges.civil import CivilRecordSender
from gateway.exchanges.civil_inbound import CivilInbound
from gateway.exchanges.identity import IdentityRequester
from gateway.exchanges.identity_answer import IdentityResponder
from gateway.exchanges.representation import RepresentationDesk
from gateway.exchanges.representation_inbound import CaseInbound
from gateway.metrics import GatewayMetrics
from gateway.pki.bundle import TrustBundle
from gateway.pki.directory import StateDirectory
from gateway.pki.rotation import retired_bundles
from gateway.pki.sealing import PayloadSealer, load_sealing_keys
from gateway.policy.rules import PolicySection
from gateway.server.representation_service import CaseSignal
from gateway.server.startup_checks import StartupError
from gateway.store.cases import CaseStore
from gateway.store.group_commit import GroupCommit
from gateway.store.identity_queries import IdentityQueries
from gateway.store.inbox import Inbox
from gateway.store.lifecycle import AgreementLifecycleStore
from gateway.store.outbox import Outbox
from gateway.store.quota import QuotaLedger
from gateway.store.retention import PurgeReport, RetentionPurger

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExchangeComponents:
    """Every exchange component of one gateway, built once by :func:`build_exchanges`."""

    context: ExchangeContext
    registry: AgreementRegistry[PolicySection]
    lifecycle: AgreementLifecycleStore
    outbox: Outbox
    inbox: Inbox
    cases: CaseStore
    case_signal: CaseSignal
    identity_queries: IdentityQueries
    audit_log: AuditLog
    checkpoints: CheckpointStore
    retention: RetentionPurger
    channels: PartnerChannels
    confirmation: AgreementConfirmation
    notices: AgreementNotices
    sender: CivilRecordSender
    representation: RepresentationDesk
    receiver: InboundReceiver
    outcomes: OutcomeRecorder
    dispatcher: Dispatcher
    identity_requester: IdentityRequester
    identity_responder: IdentityResponder
    adapter: RegistryAdapter | None
    handover: RegistryHandover | None
    acknowledger: Acknowledger
    deadlines: DeadlineWatcher
    case_handover: CaseEventHandover | None
    log_signer: CheckpointSigner
    external_witnesses: tuple[ExternalWitness, ...]
    publisher: CheckpointPublisher
    witness: CheckpointWitness
    inbound_wake: asyncio.Event
    announcements: BundleAnnouncements
    receipts: AgreementReceipts

    @property
    def gate(self) -> AgreementGate:
        return self.context.gate

    @property
    def audit(self) -> AuditRecorder:
        return self.context.audit

    @property
    def group_commit(self) -> GroupCommit:
        return self.context.group

    def record_start(self, certificates: Mapping[str, bytes]) -> None:
        """Blocking. The start's evidence (:func:`~gateway.audit.start_evidence.record_start`)."""
        record_start(self.audit, self.audit_log, self.registry.list(), certificates)

    def bundle_keys(self) -> tuple[list[str], dict[str, list[str]]]:
        """Our log's keys and our partners' cosigner keys (Ed25519, then ML-DSA-44), in
        signed-note vkey form."""
        cosigners = {
            state: [str(key.vkey) for key in partner_cosigners(bundle)]
            for state, bundle in self.channels.bundles.items()
        }
        return [str(key.vkey) for key in self.log_signer.verifiers()], cosigners

    def witness_keys(self) -> dict[str, list[str]]:
        """Each external witness's cosigner keys, as configured, by its name."""
        return {w.name: w.vkeys for w in self.external_witnesses}

    def purge_expired_payloads(self) -> PurgeReport:
        """One retention run, with each agreement's retention as the registry holds it."""
        return self.retention.purge_expired(
            {loaded.id: loaded.agreement.retention_days for loaded in self.registry.list()}
        )


def build_exchanges(
    settings: Settings,
    *,
    engine: Engine,
    pki: StateDirectory,
    own_bundle: TrustBundle,
    partners: Mapping[str, Partner],
    metrics: GatewayMetrics,
    clock: Callable[[], datetime],
) -> ExchangeComponents:
    """Every exchange component of the gateway ``settings`` describe, each built once."""
    assert settings.agreements is not None
    state = settings.gateway.state
    delivery = settings.delivery
    storage = settings.storage
    if storage is None:  # load_settings refuses this; a hand-built Settings may not
        raise ValueError("storage.sealing_key_file is required with [agreements]")
    # Our earlier bundle versions too: agreements signed before a key rotation pin them.
    bundles = [own_bundle, *retired_bundles(pki), *(p.bundle for p in partners.values())]
    signer = EnvelopeSigner.from_state_directory(pki)
    registry: AgreementRegistry[PolicySection] = AgreementRegistry(
        settings.agreements.dir,
        own_state=state,
        bundles=bundles,
        clock=clock,
        exchanges_validator=EXCHANGES_VALIDATOR,
        # A hybrid agreement is in force only where there is an ML-DSA-44 key to sign with.
        own_signature_algorithms=signer.signature_algorithms,
    )
    registry.hash_keys.listen(
        lambda m: metrics.hash_key_mismatch.labels(m.agreement_id, m.partner_state).set(1)
    )
    lifecycle = AgreementLifecycleStore(engine, clock=clock)
    gate = AgreementGate(
        registry,
        lifecycle,
        QuotaLedger(engine, clock=clock),
        own_state=state,
        hash_keys_dir=settings.agreements.hash_keys_dir,
        clock_tolerance=timedelta(seconds=delivery.clock_window_seconds),
    )
    sealer = PayloadSealer(
        load_sealing_keys(storage.sealing_key_file, storage.previous_sealing_key_files)
    )
    group = GroupCommit(engine, commit_delay_s=storage.commit_delay_ms / 1000)
    audit_log = AuditLog(engine, clock=clock)
    context = ExchangeContext(
        state=state,
        gate=gate,
        signer=signer,
        clock=clock,
        audit=AuditRecorder(GroupCommittedLog(audit_log, group), clock=clock),
        group=group,
        metrics=metrics,
        delivery=delivery,
    )
    outbox = Outbox(engine, clock=clock, sealer=sealer)
    inbox = Inbox(engine, clock=clock, sealer=sealer)
    case_signal = CaseSignal()
    cases = CaseStore(
        engine,
        clock=clock,
        encode_content=encode_payload,
        sealer=sealer,
        on_event=case_signal.fire,
        group=group,
    )
    retention = RetentionPurger(engine, outbox, inbox, cases, clock=clock)
    receipts = AgreementReceipts(
        ReceiptSigner.from_state_directory(pki), registry.hybrid_signatures
    )
    channels = PartnerChannels(
        partners,
        certificate_chain=pki.gateway_cert.read_bytes(),
        private_key=pki.gateway_key.read_bytes(),
        contacts=PartnerContacts(metrics, clock=clock),
        bundle_store=pki.root / PARTNER_BUNDLES_DIR,
        bundle_overlap=timedelta(seconds=delivery.partner_bundle_overlap_seconds),
        clock=clock,
    )
    confirmation = AgreementConfirmation(
        gate=gate, channels=channels, call_timeout_s=delivery.call_timeout_seconds
    )
    verifier = EnvelopeVerifier(
        state,
        channels.bundles,
        window_s=delivery.clock_window_seconds,
        max_payload_bytes=settings.gateway.max_message_bytes,
        clock=clock,
    )
    notices = AgreementNotices(context, engine, outbox, retention.purge_agreement)
    # Set when a partner's message is stored, so the inbound loop hands it on now.
    inbound_wake = asyncio.Event()
    adapter = build_adapter(settings.registry) if settings.registry is not None else None
    identity_queries = IdentityQueries(engine, clock=clock)
    retry = RetryPolicy.from_settings(delivery, clock)
    failures = InboundFailures(inbox=inbox, policy=retry, group=group)
    log_signer = CheckpointSigner.for_state(pki)
    try:
        external = configured_witnesses(settings.audit.witnesses)
    except ValueError as e:
        raise StartupError(str(e)) from e
    return ExchangeComponents(
        context=context,
        registry=registry,
        lifecycle=lifecycle,
        outbox=outbox,
        inbox=inbox,
        cases=cases,
        case_signal=case_signal,
        identity_queries=identity_queries,
        audit_log=audit_log,
        checkpoints=(checkpoints := CheckpointStore(engine, clock=clock)),
        retention=retention,
        channels=channels,
        confirmation=confirmation,
        notices=notices,
        sender=CivilRecordSender(context, outbox),
        representation=RepresentationDesk(context, outbox, cases),
        receiver=InboundReceiver(
            context,
            verifier,
            receipts,
            inbox,
            InboundRoutes(
                notices=notices,
                civil=CivilInbound(context, inbox),
                cases=CaseInbound(context, inbox, cases),
                confirmation=confirmation,
                arrived=inbound_wake.set,
            ),
        ),
        outcomes=OutcomeRecorder(context, outbox, channels.bundles),
        dispatcher=Dispatcher(context, outbox, channels, confirmation),
        identity_requester=IdentityRequester(context, verifier, identity_queries, channels, cases),
        identity_responder=IdentityResponder(
            context,
            verifier,
            identity_queries,
            adapter if isinstance(adapter, IdentitySource) else None,
        ),
        adapter=adapter,
        handover=(
            RegistryHandover(context, inbox, adapter, failures) if adapter is not None else None
        ),
        acknowledger=Acknowledger(failures, receipts, channels, delivery, clock),
        deadlines=DeadlineWatcher(cases=cases, audit=context.audit, clock=clock),
        case_handover=(
            CaseEventHandover(
                cases=cases, adapter=adapter, batch_size=delivery.batch_size, retry=retry
            )
            if isinstance(adapter, CaseEventSink)
            else None
        ),
        log_signer=log_signer,
        external_witnesses=external,
        publisher=CheckpointPublisher(
            audit_log=audit_log,
            store=checkpoints,
            signer=log_signer,
            witnesses=lambda: {s: b for s, b in channels.bundles.items() if registry.ids_with(s)},
            channels=channels,
            watch=CosigningWatch(
                CosigningRetry(
                    backoff=delivery_backoff(delivery),
                    deadline=context.delivery_deadline,
                    call_timeout_s=delivery.call_timeout_seconds,
                    clock=clock,
                ),
                metrics,
            ),
            external=[WitnessClient(w, timeout_s=delivery.call_timeout_seconds) for w in external],
        ),
        witness=CheckpointWitness(
            store=WitnessStore(engine, clock=clock),
            signers=witness_signers(pki),
            partners=channels.bundles,
            audit=context.audit,
            clock=clock,
        ),
        inbound_wake=inbound_wake,
        announcements=BundleAnnouncements(channels.bundles, context.audit, clock=clock),
        receipts=receipts,
    )


class BackgroundLoops:
    """The loops that run beside the listeners, started and stopped together."""

    def __init__(self, components: ExchangeComponents, settings: Settings) -> None:
        self._x = components
        assert settings.storage is not None  # build_exchanges refused a gateway without it
        self._retention_interval_s = settings.storage.retention_interval_seconds
        self._checkpoint_interval_s = settings.audit.checkpoint_interval_seconds
        self._poll_s = settings.delivery.poll_interval_seconds
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        x = self._x
        self._stopping = asyncio.Event()
        self._tasks = [
            asyncio.create_task(x.dispatcher.run(self._stopping), name="dispatcher"),
            asyncio.create_task(self._inbound_loop(), name="handover"),
            asyncio.create_task(self._retention_loop(), name="retention"),
            asyncio.create_task(
                x.deadlines.run(self._stopping, max(self._poll_s, 1.0)), name="case-deadlines"
            ),
            asyncio.create_task(
                x.publisher.run(self._stopping, self._checkpoint_interval_s),
                name="checkpoints",
            ),
        ]

    def _audit_purge(self, report: PurgeReport) -> None:
        for agreement_id in report.agreements():
            self._x.audit.record(
                EventKind.ADMIN_ACTION,
                Decision.RECORDED,
                agreement_id=agreement_id,
                principal="retention",
                reason_code="RETENTION_PURGE",
            )

    async def _retention_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                report = await asyncio.to_thread(self._x.purge_expired_payloads)
            except Exception as e:  # one bad run must not stop the loop
                log.error("retention run failed: %s", unexpected_summary(e))
            else:
                if report.total:
                    log.info("retention purged %d stored payloads", report.total)
                    await asyncio.to_thread(self._audit_purge, report)
                if report.without_retention:
                    log.warning(
                        "payloads kept under agreements with no known retention: %s",
                        ", ".join(report.without_retention),
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._retention_interval_s)

    async def _inbound_loop(self) -> None:
        x = self._x
        while not self._stopping.is_set():
            # Cleared before the round looks, so a delivery during it is not missed.
            x.inbound_wake.clear()
            busy = False
            try:
                if x.handover is not None:
                    busy = await x.handover.run_once()
                busy = await x.acknowledger.run_once() or busy
                if x.case_handover is not None:
                    busy = await x.case_handover.run_once() or busy
            except Exception as e:  # one bad round must not stop the loop
                log.error("inbound round failed: %s", unexpected_summary(e))
            if not busy:
                await pause(self._stopping, x.inbound_wake, self._poll_s)

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=10)
        await self._x.channels.close()
        await self._x.publisher.aclose()
        if self._x.adapter is not None:
            await self._x.adapter.close()
        await asyncio.to_thread(self._x.group_commit.close)
