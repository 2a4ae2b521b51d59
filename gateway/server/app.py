"""One gateway process: its two listeners, its storage and its metrics endpoint.

Start-up loads everything it will rely on before it listens, and refuses to start
on anything doubtful: a partner bundle whose digest differs from the pinned one, a
bundle for another state than configured, a database it cannot migrate. The local
and peer listeners are separate grpc.aio servers on separate ports, each with its
own trusted CAs and its own guard; they never share an interceptor chain.

gRPC health on the local API reports the overall service ``""`` and the exchange
services whose calls write (:data:`WRITE_SERVICES`: civil records, representation,
identity) as NOT_SERVING while a storage fault refuses writes (a full, read-only, locked
or unreachable database; see :mod:`gateway.store.faults`), and as SERVING again once a
write commits, the group committer's own probe included. The agreement, audit and
gateway-information services stay SERVING: what they mostly answer is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc.aio
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.agreements.registry import LoadedAgreement
from gateway.audit.entry import Decision, EventKind
from gateway.audit.refusal_counts import recent_refusals
from gateway.audit.start_evidence import record_start
from gateway.config import Settings
from gateway.delivery.case_wire import timestamp
from gateway.delivery.partners import PARTNER_BUNDLES_DIR, Partner
from gateway.delivery.resend import DeadLetterResend
from gateway.metrics import (
    BacklogCollector,
    CrlCollector,
    GatewayMetrics,
    GroupCommitCollector,
    MetricsEndpoint,
    StorageFaultCollector,
)
from gateway.pki.bundle import TrustBundle, load_trust_bundle
from gateway.pki.bundle_chain import PartnerBundles
from gateway.pki.crl import CrlOwner, CrlWatcher
from gateway.pki.directory import StateDirectory
from gateway.pki.keys import (
    certificate_der,
    certificate_pem,
    load_certificate,
    seconds_to_expiry,
)
from gateway.pki.tls_identity import TlsIdentity
from gateway.pki.tokens import JwksWatcher, TokenVerifier
from gateway.policy.rules import PolicySection
from gateway.server import exclusive_ports as ports
from gateway.server.agreement_service import AgreementService
from gateway.server.agreement_state import AgreementStateCollector, standings
from gateway.server.audit_service import AuditService
from gateway.server.civil_service import CivilRecordService
from gateway.server.conformance import GatewayHealth, enable_reflection
from gateway.server.doctor.run import diagnose_running
from gateway.server.exchange_wiring import BackgroundLoops, ExchangeComponents, build_exchanges
from gateway.server.guard import ListenerGuard
from gateway.server.identity_service import IdentityService
from gateway.server.local_api import GatewayInfoService, LocalAuthenticator, OperatorViews
from gateway.server.peer_api import (
    PeerAuthenticator,
    PeerEndpoint,
    PeerExchanges,
    PeerRefusalEvidence,
    register_peer_service,
)
from gateway.server.reload import (
    GatewayReload,
    ReloadReport,
    ReloadSources,
    ServingCertificate,
    SigningKeySource,
)
from gateway.server.representation_service import RepresentationService
from gateway.server.startup_checks import StartupError, database_engine, migrate_existing
from gateway.server.witness_http import WitnessEndpoint, WitnessListener
from gateway.store.dead_letters import DeadLetter, dead_letters
from gateway.store.engine import redact_url
from gateway.store.migrate import current_revision
from gateway.trust.peer import CertificateIdentifier, TrustAnchor
from pouch.v1 import (
    agreement_pb2,
    agreement_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    civil_pb2,
    civil_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    representation_pb2,
    representation_pb2_grpc,
)

log = logging.getLogger(__name__)

EXPIRY_REFRESH_S = 60.0

WRITE_SERVICES = (
    "",
    civil_pb2.DESCRIPTOR.services_by_name["CivilRecordService"].full_name,
    representation_pb2.DESCRIPTOR.services_by_name["RepresentationService"].full_name,
    identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name,
)
"""The health service names that go NOT_SERVING while a storage fault refuses writes."""


def _load_partners(
    settings: Settings,
    clock: Callable[[], datetime],
    live: Callable[[], PartnerBundles | None],
) -> dict[str, Partner]:
    """The configured partners; a partner's CRL verifies against its CAs trusted now:
    those of the bundles in force (``live``, once the exchanges run), else of the
    pinned bundle and those announced before a restart (kept in the state directory)."""
    partners: dict[str, Partner] = {}
    overlap = timedelta(seconds=settings.delivery.partner_bundle_overlap_seconds)
    store = (
        Path(settings.pki.dir) / PARTNER_BUNDLES_DIR if settings.agreements is not None else None
    )
    grace = timedelta(seconds=settings.pki.crl_grace_seconds)
    for entry in settings.partners:
        try:
            bundle = load_trust_bundle(entry.bundle)
        except (OSError, ValueError) as e:
            raise StartupError(f"partner {entry.state}: trust bundle refused: {e}") from e
        if bundle.state != entry.state:
            raise StartupError(
                f"partner {entry.state}: the bundle at {entry.bundle} is for {bundle.state}"
            )
        if entry.bundle_digest is not None and bundle.digest != entry.bundle_digest:
            raise StartupError(
                f"partner {entry.state}: bundle digest {bundle.digest} differs from the "
                f"pinned {entry.bundle_digest}"
            )
        owner = CrlOwner("partner", entry.state)
        try:
            restored = PartnerBundles({entry.state: bundle}, overlap=overlap, store=store)
        except ValueError as e:
            raise StartupError(f"partner {entry.state}: announced bundle refused: {e}") from e

        def issuers(
            state: str = entry.state, restored: PartnerBundles = restored
        ) -> tuple[x509.Certificate, ...]:
            return (live() or restored).trusted_cas(state, clock())

        crl = (
            CrlWatcher(
                entry.crl, bundle.ca_certificate, owner, grace=grace, clock=clock, issuers=issuers
            )
            if entry.crl
            else None
        )
        partners[entry.state] = Partner(
            state=entry.state,
            bundle=bundle,
            endpoint=entry.endpoint or bundle.peer_endpoint,
            crl=crl,
        )
    return partners


class Gateway:
    """Everything one state's gateway runs, assembled from frozen settings."""

    def __init__(
        self, settings: Settings, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.state = settings.gateway.state
        self.pki = StateDirectory(settings.pki.dir)
        try:
            self.ca_certificate = load_certificate(self.pki.ca_cert)
            tls_certificate = load_certificate(self.pki.gateway_cert)
            # Served through dynamic credentials: a reload replaces it for new handshakes.
            self._serving = ServingCertificate(
                TlsIdentity(
                    tls_certificate,
                    certificate_pem(tls_certificate),
                    self.pki.gateway_key.read_bytes(),
                )
            )
        except (OSError, ValueError) as e:
            raise StartupError(f"pki.dir {settings.pki.dir}: cannot load the state PKI: {e}") from e
        if self.pki.state != self.state:
            raise StartupError(
                f"pki.dir holds the PKI of {self.pki.state}, but gateway.state is {self.state}"
            )
        self.exchanges: ExchangeComponents | None = None
        self.partners = _load_partners(
            settings,
            clock,
            lambda: self.exchanges.channels.bundles if self.exchanges is not None else None,
        )
        self.own_crl = CrlWatcher(
            self.pki.crl,
            self.ca_certificate,
            CrlOwner("own", self.state),
            grace=timedelta(seconds=settings.pki.crl_grace_seconds),
            clock=clock,
        )
        self.metrics = GatewayMetrics()
        self.metrics.registry.register(CrlCollector(self.crl_watchers))
        self.engine = database_engine(settings)
        self._loops: BackgroundLoops | None = None
        if settings.agreements is not None:
            try:
                own_bundle = load_trust_bundle(self.pki.bundle)
                self.exchanges = build_exchanges(
                    settings,
                    engine=self.engine,
                    pki=self.pki,
                    own_bundle=own_bundle,
                    partners=self.partners,
                    metrics=self.metrics,
                    clock=clock,
                )
                self._loops = BackgroundLoops(self.exchanges, settings)
            except (OSError, ValueError) as e:
                raise StartupError(f"agreements: cannot load: {e}") from e
            self.metrics.registry.register(
                BacklogCollector(
                    self.exchanges.outbox.backlog,
                    self.exchanges.inbox.backlog,
                    self.partners,
                    clock,
                )
            )
            self.metrics.registry.register(GroupCommitCollector(self.exchanges.group_commit.stats))
            x = self.exchanges
            self.metrics.registry.register(
                AgreementStateCollector(lambda: standings(x.registry, x.lifecycle))
            )
            self.metrics.registry.register(
                StorageFaultCollector(self.exchanges.group_commit.faults.counts)
            )
        self._local: grpc.aio.Server | None = None
        self._peer: grpc.aio.Server | None = None
        self._metrics_endpoint: MetricsEndpoint | None = None
        self._witness_http: WitnessListener | None = None
        self._health = GatewayHealth()
        self._local_services: tuple[str, ...] = ()
        self._expiry_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jwks: JwksWatcher | None = None
        self._reload: GatewayReload | None = None
        self.local_port = 0
        self.peer_port = 0
        self.witness_port = 0

    # -- assembly ---------------------------------------------------------

    def _local_server(self) -> grpc.aio.Server:
        identifier = CertificateIdentifier(
            {self.state: TrustAnchor(self.state, self.ca_certificate, self.own_crl)},
            clock=self.clock,
        )
        tokens = self.settings.tokens
        self._jwks = JwksWatcher(tokens.jwks_file)
        verifier = TokenVerifier(
            self._jwks,
            issuer=tokens.issuer,
            audience=tokens.audience,
            algorithms=frozenset(tokens.algorithms),
            leeway_s=tokens.leeway_seconds,
            clock=lambda: self.clock().timestamp(),
        )
        guard = ListenerGuard(
            "local",
            LocalAuthenticator(identifier, verifier),
            self.metrics,
            max_message_bytes=self.settings.gateway.max_message_bytes,
        )
        server = grpc.aio.server(interceptors=[guard], options=self._channel_options())
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(
            GatewayInfoService(self.describe, self._operator_views(), self._diagnostics), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        services = [
            gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        ]
        if self.exchanges is not None:
            x = self.exchanges
            civil_pb2_grpc.add_CivilRecordServiceServicer_to_server(
                CivilRecordService(x.sender, x.outbox, x.dispatcher.wake.set), server
            )
            representation_pb2_grpc.add_RepresentationServiceServicer_to_server(
                RepresentationService(
                    x.representation,
                    x.cases,
                    x.case_signal,
                    state=self.state,
                    wake=x.dispatcher.wake.set,
                ),
                server,
            )
            agreement_pb2_grpc.add_AgreementServiceServicer_to_server(
                AgreementService(x.registry, x.lifecycle, x.notices, self.reload), server
            )
            identity_pb2_grpc.add_IdentityServiceServicer_to_server(
                IdentityService(x.identity_requester), server
            )
            audit_pb2_grpc.add_AuditServiceServicer_to_server(
                AuditService(
                    audit_log=x.audit_log,
                    checkpoints=x.checkpoints,
                    agreements_with=x.registry.ids_with,
                    bundle_keys=x.bundle_keys,
                    publish=x.publisher.publish_now,
                    state=self.state,
                    witness_keys=x.witness_keys,
                ),
                server,
            )
            services += [
                audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
                civil_pb2.DESCRIPTOR.services_by_name["CivilRecordService"].full_name,
                representation_pb2.DESCRIPTOR.services_by_name["RepresentationService"].full_name,
                identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name,
                agreement_pb2.DESCRIPTOR.services_by_name["AgreementService"].full_name,
            ]
        self._local_services = enable_reflection(server, services)
        credentials = self._serving.credentials(certificate_pem(self.ca_certificate))
        self.local_port = ports.add_exclusive_port(server, self.settings, "local", credentials)
        return server

    def _peer_server(self) -> grpc.aio.Server:
        anchors = {
            p.state: TrustAnchor(
                p.state, p.bundle.ca_certificate, p.crl, self._partner_cas(p.state)
            )
            for p in self.partners.values()
        }
        identifier = CertificateIdentifier(anchors, clock=self.clock)
        evidence = PeerRefusalEvidence(self.exchanges.audit) if self.exchanges is not None else None
        guard = ListenerGuard(
            "peer",
            PeerAuthenticator(
                identifier,
                self.metrics,
                require_hybrid_key_exchange=self.settings.peer_api.require_hybrid_key_exchange,
            ),
            self.metrics,
            evidence,
            max_message_bytes=self.settings.gateway.max_message_bytes,
        )
        server = grpc.aio.server(interceptors=[guard], options=self._channel_options())
        exchanges = (
            PeerExchanges(
                self.exchanges.receiver,
                self.exchanges.outcomes,
                self.exchanges.witness,
                self.exchanges.identity_responder,
                self.exchanges.announcements,
            )
            if self.exchanges is not None
            else None
        )
        register_peer_service(server, PeerEndpoint(self.state, self.clock), exchanges)
        own = certificate_pem(self.ca_certificate)

        def roots() -> bytes:
            # With no partner yet, TLS trusts only our own CA and the guard refuses all.
            trusted = b"".join(
                certificate_pem(ca) for a in anchors.values() for ca in a.certificate_authorities()
            )
            return trusted or own

        credentials = self._serving.credentials(roots)
        self.peer_port = ports.add_exclusive_port(server, self.settings, "peer", credentials)
        return server

    @property
    def tls_certificate(self) -> x509.Certificate:
        """The TLS certificate new handshakes are served."""
        return self._serving.identity.certificate

    async def reload(self, principal: str) -> ReloadReport:
        """Re-read agreements, CRLs, the JWKS and the TLS identity (:mod:`reload
        <gateway.server.reload>`); what was refused stays as it was."""
        if self._reload is None:
            self._reload = self._reloader()
        report = await asyncio.to_thread(self._reload.run, principal=principal)
        self.refresh_expiry_metrics()
        return report

    def _reloader(self) -> GatewayReload:
        if self._jwks is None:
            raise RuntimeError("the gateway reloads once it has started")
        x = self.exchanges

        def evidence(
            agreements: Sequence[LoadedAgreement[PolicySection]], certificates: dict[str, bytes]
        ) -> None:
            assert x is not None
            record_start(x.audit, x.audit_log, agreements, certificates)

        def refusal(principal: str, reason: str) -> None:
            assert x is not None
            x.audit.record(
                EventKind.ADMIN_ACTION, Decision.REFUSED, principal=principal, reason_code=reason
            )

        sources = ReloadSources(
            state=self.state,
            ca_certificate=self.ca_certificate,
            tls_paths=(self.pki.gateway_cert, self.pki.gateway_key),
            serving=self._serving,
            jwks=self._jwks,
            crls=self.crl_watchers,
            registry=x.registry if x is not None else None,
            evidence=evidence if x is not None else None,
            refusal_evidence=refusal if x is not None else None,
            clock=self.clock,
            restart_only=tuple(
                ("partner_bundle", entry.bundle) for entry in self.settings.partners
            ),
            signing=(
                SigningKeySource(self.pki, (x.context.signer, x.receipts.signer))
                if x is not None
                else None
            ),
        )
        return GatewayReload(sources, metrics_registry=self.metrics.registry)

    def _channel_options(self) -> list[tuple[str, Any]]:
        limit = self.settings.gateway.max_message_bytes
        # grpc refuses past twice the limit on its own (RESOURCE_EXHAUSTED, before any
        # handler); between the two, the guard refuses MESSAGE_TOO_LARGE, counted and
        # audited.
        return [
            ("grpc.max_receive_message_length", 2 * limit),
            ("grpc.max_send_message_length", limit),
            ports.EXCLUSIVE,
        ]

    def _dead_letters(self, partner_state: str | None, limit: int) -> list[DeadLetter]:
        return dead_letters(
            self.engine, own_state=self.state, partner_state=partner_state, limit=limit
        )

    def _operator_views(self) -> OperatorViews | None:
        """What ``GatewayService`` reads and redoes for operators; ``None`` without
        exchanges (no outbox, inbox or dead letters)."""
        x = self.exchanges
        if x is None:
            return None
        resend = DeadLetterResend(x.context, self.engine, wake=x.dispatcher.wake.set)
        return OperatorViews(
            dead_letters=self._dead_letters,
            backlogs={"outbox": x.outbox.backlog, "inbox": x.inbox.backlog},
            refusals_since=lambda since: recent_refusals(self.engine, since=since),
            clock=self.clock,
            resend=resend.resend,
        )

    def describe(self) -> gateway_pb2.GetGatewayInfoResponse:
        return gateway_pb2.GetGatewayInfoResponse(
            state=self.state,
            partners=[
                gateway_pb2.PartnerInfo(
                    state=p.state,
                    peer_endpoint=p.endpoint,
                    bundle_digest=self._partner_bundle(p).digest,
                    ca_not_after=timestamp(
                        self._partner_bundle(p).ca_certificate.not_valid_after_utc
                    ),
                )
                for p in sorted(self.partners.values(), key=lambda p: p.state)
            ],
            schema_revision=current_revision(self.engine) or "",
            tls_certificate_not_after=timestamp(self.tls_certificate.not_valid_after_utc),
        )

    def _certificates_in_use(self) -> dict[str, bytes]:
        """DER of each certificate this gateway acts with, by role."""
        roles = {role: cert for role, (cert, _) in self.pki.key_pairs().items()}
        roles["state_ca"] = self.pki.ca_cert
        return {role: certificate_der(load_certificate(path)) for role, path in roles.items()}

    async def _diagnostics(self) -> gateway_pb2.RunDiagnosticsResponse:
        """The doctor's checks with this gateway's own clock, CRLs, agreements and
        partner channels (whose traffic gives each partner's last contact)."""
        x = self.exchanges
        diagnosis = await diagnose_running(
            self.settings,
            clock=self.clock,
            crls=self.crl_watchers(),
            agreements=x.registry if x is not None else None,
            channels=x.channels if x is not None else None,
        )
        return diagnosis.to_wire()

    def crl_watchers(self) -> list[CrlWatcher]:
        partners = [p.crl for p in self.partners.values() if p.crl is not None]
        return [self.own_crl, *partners]

    def refresh_expiry_metrics(self) -> None:
        # Staleness is logged when it starts even if no call comes to notice it.
        for crl in self.crl_watchers():
            crl.freshness()
        now = self.clock()
        gauge = self.metrics.certificate_expiry
        gauge.labels("gateway_tls", self.state).set(seconds_to_expiry(self.tls_certificate, now))
        gauge.labels("state_ca", self.state).set(seconds_to_expiry(self.ca_certificate, now))
        with contextlib.suppress(OSError, ValueError):
            signing = load_certificate(self.pki.signing_cert)
            gauge.labels("signing", self.state).set(seconds_to_expiry(signing, now))
        for p in self.partners.values():
            gauge.labels("partner_ca", p.state).set(
                seconds_to_expiry(self._partner_bundle(p).ca_certificate, now)
            )
            gauge.labels("partner_signing", p.state).set(
                seconds_to_expiry(self._partner_bundle(p).signing_certificate, now)
            )

    def _partner_cas(self, state: str) -> Callable[[], tuple[x509.Certificate, ...]] | None:
        """The partner's CAs trusted now, from the bundles in force (a CA renewed by
        cross-signing once its bundle is taken); None without exchanges: the pinned CA."""
        if self.exchanges is None:
            return None
        bundles = self.exchanges.channels.bundles
        return lambda: bundles.trusted_cas(state, self.clock())

    def _partner_bundle(self, partner: Partner) -> TrustBundle:
        """The partner's bundle in force: the last it announced, else the pinned one."""
        if self.exchanges is None:
            return partner.bundle
        return self.exchanges.channels.bundles.get(partner.state, partner.bundle)

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        # Every call in flight may wait in a blocking stage (a signature, a group commit):
        # the default pool of a few threads would queue them before they could batch.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(
                max_workers=self.settings.gateway.worker_threads, thread_name_prefix="pouch"
            )
        )
        await asyncio.to_thread(migrate_existing, self.engine, self.settings)
        try:
            self._local = self._local_server()
            self._peer = self._peer_server()
            await self._local.start()
            await self._peer.start()
            self._metrics_endpoint = ports.metrics_endpoint(self.metrics, self.settings)
            await self._start_witness_http()
        except ports.PortTaken as e:
            raise StartupError(str(e)) from e
        self.refresh_expiry_metrics()
        self._reload = self._reloader()
        self._expiry_task = asyncio.create_task(self._refresh_expiry_forever())
        if self.exchanges is not None:
            await asyncio.to_thread(self.exchanges.record_start, self._certificates_in_use())
            assert self._loops is not None
            self._loops.start()
        await self._health.serving(self._local_services)
        if self.exchanges is not None:
            self._loop = asyncio.get_running_loop()
            self.exchanges.group_commit.faults.subscribe(self._storage_fault_changed)
        log.info(
            "gateway %s serving: local API on port %d, peer API on port %d, database %s",
            self.state,
            self.local_port,
            self.peer_port,
            redact_url(self.settings.gateway.database_url),
        )

    async def _start_witness_http(self) -> None:
        section = self.settings.witness_http
        if section is None or self.exchanges is None:  # the settings require [agreements]
            return
        sock = ports.bound_socket(self.settings, "witness")
        self._witness_http = WitnessListener(
            WitnessEndpoint(self.exchanges.witness, prefix=section.prefix, metrics=self.metrics),
            certificate=self.pki.gateway_cert,
            key=self.pki.gateway_key,
        )
        try:
            await self._witness_http.start(sock)
        except (OSError, ValueError) as e:
            sock.close()
            raise StartupError(f"witness_http.listen: {section.listen}: cannot serve: {e}") from e
        self.witness_port = self._witness_http.port
        log.info("witness endpoint (c2sp.org/tlog-witness) on port %d", self.witness_port)

    def _storage_fault_changed(self, _reason: str | None) -> None:
        # Told on the committer's thread; the health servicer lives on the event loop.
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to tell
                asyncio.run_coroutine_threadsafe(self._report_write_health(), self._loop)

    async def _report_write_health(self) -> None:
        # The fault as it is now, not as notified: two notices may be handled out of order.
        assert self.exchanges is not None
        serving = self.exchanges.group_commit.faults.current() is None
        status = health_pb2.HealthCheckResponse.SERVING
        if not serving:
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        for service in WRITE_SERVICES:
            await self._health.set(service, status)

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_endpoint.port if self._metrics_endpoint else None

    async def _refresh_expiry_forever(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_REFRESH_S)
            self.refresh_expiry_metrics()

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop taking calls, let calls in flight finish within the grace period."""
        grace = self.settings.gateway.shutdown_grace_seconds if grace_s is None else grace_s
        await self._health.enter_graceful_shutdown()
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
        servers = [s for s in (self._local, self._peer) if s is not None]
        witness = [self._witness_http.stop(grace)] if self._witness_http is not None else []
        await asyncio.gather(*(s.stop(grace) for s in servers), *witness)
        if self._loops is not None:
            await self._loops.stop()
        if self._metrics_endpoint is not None:
            self._metrics_endpoint.close()
        self.engine.dispose()
        log.info("gateway %s stopped", self.state)

    async def wait_for_termination(self) -> None:
        if self._local is not None:
            await self._local.wait_for_termination()
