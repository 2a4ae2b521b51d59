"""The exchange half of a gateway: agreements, delivery and the registry handover.

Built only when the configuration has an ``[agreements]`` section; a gateway without
agreements still serves health, reflection, ``GatewayService`` and ``PeerService.Ping``.
Everything here shares the gateway's engine, clock and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
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
from gateway.audit.checkpoint import CheckpointSigner
from gateway.audit.checkpoints_store import CheckpointStore, WitnessStore
from gateway.audit.cosignature import CosignatureSigner, partner_cosigner
from gateway.audit.cosigning import CosigningRetry, CosigningWatch
from gateway.audit.entry import Decision, EventKind
from gateway.audit.log import AuditLog, GroupCommittedLog
from gateway.audit.publication import CheckpointPublisher, CheckpointWitness
from gateway.audit.recorder import AuditRecorder, payload_digest
from gateway.config import Settings
from gateway.delivery.agreement_confirmation import AgreementConfirmation
from gateway.delivery.backoff import delivery_backoff
from gateway.delivery.case_handover import CaseEventHandover, CaseEventSink
from gateway.delivery.dispatcher import Dispatcher
from gateway.delivery.handover import Acknowledger, OutcomeRecorder, RegistryHandover
from gateway.delivery.inbound_retry import InboundFailures, RetryPolicy
from gateway.delivery.partners import PartnerChannels, PartnerEndpoint
from gateway.delivery.polling import pause
from gateway.delivery.receiver import InboundReceiver
from gateway.envelope import EnvelopeSigner, EnvelopeVerifier, ReceiptSigner
from gateway.errors import unexpected_summary
from gateway.events import Event, emit
from gateway.exchanges.case_deadlines import DeadlineWatcher
from gateway.exchanges.civil import CivilRecordSender
from gateway.exchanges.identity import IdentityRequester
from gateway.exchanges.identity_answer import IdentityResponder
from gateway.exchanges.payload import encode_payload
from gateway.exchanges.representation import RepresentationDesk
from gateway.exchanges.representation_inbound import CaseInbound
from gateway.metrics import GatewayMetrics
from gateway.pki.bundle import TrustBundle
from gateway.pki.directory import StateDirectory
from gateway.pki.keys import certificate_pem
from gateway.pki.sealing import PayloadSealer, load_sealing_keys
from gateway.policy.rules import PolicySection
from gateway.server.representation_service import CaseSignal
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
class PartnerView:
    """What the exchange layer needs of a partner: its pinned bundle and endpoint."""

    bundle: TrustBundle
    endpoint: str


class Exchanges:
    """Every exchange component of one gateway, and its background loops."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine,
        pki: StateDirectory,
        own_bundle: TrustBundle,
        partners: Mapping[str, PartnerView],
        metrics: GatewayMetrics,
        clock: Callable[[], datetime],
    ) -> None:
        assert settings.agreements is not None
        state = settings.gateway.state
        delivery = settings.delivery
        deadline = timedelta(seconds=delivery.deadline_seconds)
        bundles = {state: own_bundle} | {s: p.bundle for s, p in partners.items()}
        partner_bundles = {s: p.bundle for s, p in partners.items()}
        self.registry: AgreementRegistry[PolicySection] = AgreementRegistry(
            settings.agreements.dir,
            own_state=state,
            bundles=bundles.values(),
            clock=clock,
            exchanges_validator=EXCHANGES_VALIDATOR,
        )
        self.registry.hash_keys.listen(
            lambda m: metrics.hash_key_mismatch.labels(m.agreement_id, m.partner_state).set(1)
        )
        self.lifecycle = AgreementLifecycleStore(engine, clock=clock)
        quota = QuotaLedger(engine, clock=clock)
        self.gate = AgreementGate(
            self.registry,
            self.lifecycle,
            quota,
            own_state=state,
            hash_keys_dir=settings.agreements.hash_keys_dir,
        )
        storage = settings.storage
        if storage is None:  # load_settings refuses this; a hand-built Settings may not
            raise ValueError("storage.sealing_key_file is required with [agreements]")
        sealer = PayloadSealer(
            load_sealing_keys(storage.sealing_key_file, storage.previous_sealing_key_files)
        )
        self.outbox = Outbox(engine, clock=clock, sealer=sealer)
        self.inbox = Inbox(engine, clock=clock, sealer=sealer)
        self.case_signal = CaseSignal()
        self.group_commit = GroupCommit(engine, commit_delay_s=storage.commit_delay_ms / 1000)
        self.cases = CaseStore(
            engine,
            clock=clock,
            encode_content=encode_payload,
            sealer=sealer,
            on_event=self.case_signal.fire,
            group=self.group_commit,
        )
        self._clock = clock
        self.retention = RetentionPurger(engine, self.outbox, self.inbox, clock=clock)
        self._retention_interval_s = storage.retention_interval_seconds
        self.audit_log = AuditLog(engine, clock=clock)
        self.checkpoints = CheckpointStore(engine, clock=clock)
        audit = AuditRecorder(GroupCommittedLog(self.audit_log, self.group_commit), clock=clock)
        self.audit = audit
        signer = EnvelopeSigner.from_state_directory(pki)
        receipts = ReceiptSigner.from_state_directory(pki)
        self.notices = AgreementNotices(
            engine=engine,
            state=state,
            registry=self.registry,
            lifecycle=self.lifecycle,
            outbox=self.outbox,
            inbox=self.inbox,
            signer=signer,
            clock=clock,
            audit=audit,
            delivery_deadline=deadline,
            also_purge=[self.cases.purge_payloads],
            fingerprint_of=self.gate.fingerprint_of,
        )
        self.sender = CivilRecordSender(
            state=state,
            gate=self.gate,
            signer=signer,
            outbox=self.outbox,
            clock=clock,
            audit=audit,
            delivery_deadline=deadline,
            group=self.group_commit,
        )
        verifier = EnvelopeVerifier(
            state,
            partner_bundles,
            window_s=delivery.clock_window_seconds,
            max_payload_bytes=settings.gateway.max_message_bytes,
            clock=clock,
        )
        self.representation = RepresentationDesk(
            state=state,
            gate=self.gate,
            signer=signer,
            outbox=self.outbox,
            cases=self.cases,
            clock=clock,
            delivery_deadline=deadline,
            audit=audit,
        )
        self.channels = PartnerChannels(
            {
                s: PartnerEndpoint(s, p.endpoint, certificate_pem(p.bundle.ca_certificate))
                for s, p in partners.items()
            },
            certificate_chain=pki.gateway_cert.read_bytes(),
            private_key=pki.gateway_key.read_bytes(),
        )
        self.confirmation = AgreementConfirmation(
            gate=self.gate,
            channels=self.channels,
            call_timeout_s=delivery.call_timeout_seconds,
        )
        # Set when a partner's message is stored, so the inbound loop hands it on now.
        self._inbound_wake = asyncio.Event()
        self.receiver = InboundReceiver(
            verifier=verifier,
            gate=self.gate,
            notices=self.notices,
            inbox=self.inbox,
            signer=receipts,
            clock=clock,
            audit=audit,
            group=self.group_commit,
            arrived=self._inbound_wake.set,
            confirmation=self.confirmation,
            cases=CaseInbound(
                state=state,
                gate=self.gate,
                inbox=self.inbox,
                cases=self.cases,
                clock=clock,
                audit=audit,
            ),
        )
        self.outcomes = OutcomeRecorder(
            outbox=self.outbox,
            bundles=partner_bundles,
            clock=clock,
            audit=audit,
            group=self.group_commit,
        )
        self.dispatcher = Dispatcher(
            worker_id=f"{state}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
            outbox=self.outbox,
            gate=self.gate,
            signer=signer,
            partners=self.channels,
            bundles=partner_bundles,
            settings=delivery,
            metrics=metrics,
            clock=clock,
            audit=audit,
            group=self.group_commit,
            confirmation=self.confirmation,
        )
        self.adapter: RegistryAdapter | None = (
            build_adapter(settings.registry) if settings.registry is not None else None
        )
        self.identity_queries = IdentityQueries(engine, clock=clock)
        self.identity_requester = IdentityRequester(
            state=state,
            gate=self.gate,
            signer=signer,
            verifier=verifier,
            queries=self.identity_queries,
            group=self.group_commit,
            partners=self.channels,
            clock=clock,
            audit=audit,
            cases=self.cases,
        )
        self.identity_responder = IdentityResponder(
            state=state,
            verifier=verifier,
            gate=self.gate,
            queries=self.identity_queries,
            group=self.group_commit,
            signer=signer,
            registry=self.adapter if isinstance(self.adapter, IdentitySource) else None,
            clock=clock,
            audit=audit,
        )
        retry = RetryPolicy.from_settings(delivery, clock)
        failures = InboundFailures(inbox=self.inbox, policy=retry, group=self.group_commit)
        self.handover = (
            RegistryHandover(
                inbox=self.inbox,
                adapter=self.adapter,
                batch_size=delivery.batch_size,
                audit=audit,
                group=self.group_commit,
                failures=failures,
            )
            if self.adapter is not None
            else None
        )
        self.acknowledger = Acknowledger(
            inbox=self.inbox,
            signer=receipts,
            partners=self.channels,
            clock=clock,
            batch_size=delivery.batch_size,
            call_timeout_s=delivery.call_timeout_seconds,
            group=self.group_commit,
            failures=failures,
        )
        self.deadlines = DeadlineWatcher(cases=self.cases, audit=audit, clock=clock)
        self.case_handover = (
            CaseEventHandover(
                cases=self.cases,
                adapter=self.adapter,
                batch_size=delivery.batch_size,
                retry=retry,
            )
            if isinstance(self.adapter, CaseEventSink)
            else None
        )
        self._partners = partner_bundles
        self._log_signer = CheckpointSigner.for_state(pki)
        self.publisher = CheckpointPublisher(
            audit_log=self.audit_log,
            store=self.checkpoints,
            signer=self._log_signer,
            witnesses=lambda: {s: b for s, b in partner_bundles.items() if self.agreements_with(s)},
            channels=self.channels,
            watch=CosigningWatch(
                CosigningRetry(
                    backoff=delivery_backoff(delivery),
                    deadline=deadline,
                    call_timeout_s=delivery.call_timeout_seconds,
                    clock=clock,
                ),
                metrics,
            ),
        )
        self.witness = CheckpointWitness(
            store=WitnessStore(engine, clock=clock),
            signer=CosignatureSigner.for_state(pki),
            partners=partner_bundles,
            audit=audit,
            clock=clock,
        )
        self._checkpoint_interval_s = settings.audit.checkpoint_interval_seconds
        self._poll_s = delivery.poll_interval_seconds
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def record_start(self, certificates: Mapping[str, bytes]) -> None:
        """Blocking. Evidence of what this start runs with: each agreement as loaded, and
        each key whose certificate differs from the one the log last saw for its role."""
        for loaded in self.registry.list():
            reason = loaded.inactive_reason
            self.audit.record(
                EventKind.AGREEMENT_LOADED,
                Decision.ACCEPTED if reason is None else Decision.REFUSED,
                agreement_id=loaded.id,
                agreement_version=loaded.version,
                payload=loaded.canonical,
                reason_code=None if reason is None else reason.value,
            )
            emit(
                Event.AGREEMENT_LOADED if reason is None else Event.AGREEMENT_INACTIVE,
                agreement_id=loaded.id,
                agreement_version=loaded.version,
                reason=None if reason is None else reason.value,
            )
        seen: dict[str, str | None] = {}
        after: int | None = None
        while page := self.audit_log.entries(
            event_kind=EventKind.KEY_CHANGED, after_idx=after, limit=1000
        ):
            for record in page:
                seen[record.purpose or ""] = record.document().get("payload_digest")
            after = page[-1].idx
        for role, der in sorted(certificates.items()):
            emit(
                Event.KEY_LOADED if role in {"signing", "audit"} else Event.CERTIFICATE_LOADED,
                kind=role,
            )
            if seen.get(role) != payload_digest(der):
                self.audit.record(
                    EventKind.KEY_CHANGED, Decision.RECORDED, purpose=role, payload=der
                )

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self.dispatcher.run(self._stopping), name="dispatcher"),
            asyncio.create_task(self._inbound_loop(), name="handover"),
            asyncio.create_task(self._retention_loop(), name="retention"),
            asyncio.create_task(
                self.deadlines.run(self._stopping, max(self._poll_s, 1.0)), name="case-deadlines"
            ),
            asyncio.create_task(
                self.publisher.run(self._stopping, self._checkpoint_interval_s),
                name="checkpoints",
            ),
        ]

    def bundle_keys(self) -> tuple[str, dict[str, str]]:
        """Our log's key and our partners' cosigner keys, in signed-note vkey form."""
        cosigners = {
            state: str(partner_cosigner(bundle).vkey) for state, bundle in self._partners.items()
        }
        return str(self._log_signer.verifier().vkey), cosigners

    def agreements_with(self, partner_state: str) -> frozenset[str]:
        """Ids of the agreements this state holds with ``partner_state``."""
        return frozenset(
            loaded.id
            for loaded in self.registry.list()
            if partner_state in loaded.agreement.parties
        )

    def purge_expired_payloads(self) -> PurgeReport:
        """One retention run, with each agreement's retention as the registry holds it."""
        retention_days = {
            loaded.id: loaded.agreement.retention_days for loaded in self.registry.list()
        }
        now = self._clock()
        for agreement_id, days in retention_days.items():
            self.cases.purge_finished_payloads(
                agreement_id, updated_before=now - timedelta(days=days)
            )
        return self.retention.purge_expired(retention_days)

    def _audit_purge(self, report: PurgeReport) -> None:
        purged = set(report.outbox_purged) | set(report.inbox_purged)
        for agreement_id in sorted(purged):
            if report.outbox_purged.get(agreement_id) or report.inbox_purged.get(agreement_id):
                self.audit.record(
                    EventKind.ADMIN_ACTION,
                    Decision.RECORDED,
                    agreement_id=agreement_id,
                    principal="retention",
                    reason_code="RETENTION_PURGE",
                )

    async def _retention_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                report = await asyncio.to_thread(self.purge_expired_payloads)
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
        while not self._stopping.is_set():
            # Cleared before the round looks, so a delivery during it is not missed.
            self._inbound_wake.clear()
            busy = False
            try:
                if self.handover is not None:
                    busy = await self.handover.run_once()
                busy = await self.acknowledger.run_once() or busy
                if self.case_handover is not None:
                    busy = await self.case_handover.run_once() or busy
            except Exception as e:  # one bad round must not stop the loop
                log.error("inbound round failed: %s", unexpected_summary(e))
            if not busy:
                await pause(self._stopping, self._inbound_wake, self._poll_s)

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=10)
        await self.channels.close()
        if self.adapter is not None:
            await self.adapter.close()
        await asyncio.to_thread(self.group_commit.close)
