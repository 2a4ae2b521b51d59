"""Prometheus metrics of one gateway, on a registry of its own.

Labels carry only operational names (listener, service, method, status code,
reason code, certificate role, state code, stage, TLS key-exchange group); never
anything about a person. Each gateway owns its registry, so several gateways can live
in one process (tests, the demo) without colliding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.errors import unexpected_summary
from gateway.pki.crl import CrlWatcher
from gateway.store.backlog import OUTBOX_STAGES, InboxStage, StageBacklog
from gateway.store.faults import REASONS as STORAGE_FAULT_REASONS
from gateway.store.faults import FaultCounts
from gateway.store.group_commit import CommitStats

log = logging.getLogger(__name__)


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "pouch_requests",
            "gRPC requests handled, by listener, service, method and status code.",
            ["listener", "service", "method", "code"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "pouch_request_duration_seconds",
            "Time to handle a gRPC request.",
            ["listener", "service", "method"],
            registry=self.registry,
        )
        # gRPC's core ends a failed TLS handshake (no certificate, an untrusted CA, an
        # expired certificate) before any Python code runs and exposes no count of it;
        # such failures show only in its trace log (GRPC_TRACE=handshaker). So this
        # counts what the gateway itself refuses once a handshake has completed.
        self.authentication_refusals = Counter(
            "pouch_authentication_refusals",
            "Callers refused after a completed TLS handshake (certificate checks, token), "
            "by listener and reason code.",
            ["listener", "reason"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "pouch_refusals",
            "Calls refused by the gateway, by listener and stable reason code (an attack "
            "shows here by its reason: SAN_MISMATCH, REPLAY, SIGNATURE_INVALID, ...).",
            ["listener", "reason"],
            registry=self.registry,
        )
        # The share of X25519MLKEM768 is the share of partner traffic safe from "harvest
        # now, decrypt later"; a connection carrying many calls counts many times.
        self.peer_key_exchange = Counter(
            "pouch_peer_key_exchange",
            "Peer API requests by the key-exchange group their TLS connection negotiated "
            "(X25519MLKEM768: post-quantum hybrid; X25519, prime256v1: classical; unknown: "
            "none reported). Counted per request, as gRPC Python has no hook per connection.",
            ["group"],
            registry=self.registry,
        )
        self.witness_http_requests = Counter(
            "pouch_witness_http_requests",
            "Requests to the c2sp.org/tlog-witness listener by endpoint (add-checkpoint, "
            "checkpoint) and HTTP status (200; 400 malformed, 403 signature, 404 unknown "
            "log, 409 old size, 422 inconsistent, 503 storage, 500 a bug).",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "pouch_deliveries",
            "Outbox delivery attempts by partner state and result (delivered, retry, dead_letter).",
            ["partner", "result"],
            registry=self.registry,
        )
        self.dead_letters_resent = Counter(
            "pouch_dead_letters_resent",
            "Dead letters an operator put back in the outbox (ResendDeadLetter), by partner state.",
            ["partner"],
            registry=self.registry,
        )
        self.hash_key_mismatch = Gauge(
            "pouch_hash_key_mismatch",
            "1 for an agreement held out of force because the partner showed another "
            "hashing-key fingerprint (HASH_KEY_MISMATCH), by agreement and partner state.",
            ["agreement", "partner"],
            registry=self.registry,
        )
        self.audit_log_rollback = Gauge(
            "pouch_audit_log_rollback",
            "1 while this gateway's audit log is shorter than (or differs from) what the "
            "partner cosigned: the database was replaced or restored from an old backup "
            "(AUDIT_LOG_ROLLBACK); publication is refused. By partner state.",
            ["partner"],
            registry=self.registry,
        )
        self.checkpoint_cosigning = Gauge(
            "pouch_checkpoint_cosigning",
            "1 for the state cosigning of our checkpoints by each partner (by state) or "
            "external witness (by name) is in: ok, retrying (backoff), failed (deadline "
            "passed), refused (it refuses the checkpoint) or rollback.",
            ["partner", "state"],
            registry=self.registry,
        )
        self.certificate_expiry = Gauge(
            "pouch_certificate_expiry_seconds",
            "Seconds until a certificate this gateway relies on expires.",
            ["role", "state"],
            registry=self.registry,
        )
        self.partner_last_contact = Gauge(
            "pouch_partner_last_contact_seconds",
            "Unix time of the last call (delivery, acknowledgement, query, cosigning, "
            "ping…) that reached each partner's gateway, whatever it answered.",
            ["partner"],
            registry=self.registry,
        )
        self.partner_reachable = Gauge(
            "pouch_partner_reachable",
            "1 if the last call to the partner's gateway reached it, 0 if it was "
            "unavailable or gave no answer within its deadline; absent before any call.",
            ["partner"],
            registry=self.registry,
        )


def _readable() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "pouch_backlog_readable",
        "1 if the outbox and inbox backlogs were read at this scrape, else 0.",
    )


@dataclass(frozen=True)
class _Store:
    """One store's two backlog gauges: how many messages wait, and the oldest's age."""

    name: str
    waiting: str
    stages: tuple[str, ...]

    def families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        labels = ["partner", "stage"]
        stages = ", ".join(self.stages)
        return (
            GaugeMetricFamily(
                f"pouch_{self.name}_backlog_messages",
                f"{self.waiting}, by stage ({stages}).",
                labels=labels,
            ),
            GaugeMetricFamily(
                f"pouch_{self.name}_backlog_oldest_seconds",
                "Age of the oldest such message (0 if there is none), by stage.",
                labels=labels,
            ),
        )


_OUTBOX = _Store(
    "outbox",
    "Messages to a partner state not delivered yet",
    tuple(stage.value for stage in OUTBOX_STAGES),
)
_INBOX = _Store(
    "inbox",
    "Messages from a partner state not finished yet",
    tuple(stage.value for stage in InboxStage),
)

Reader = Callable[[], list[StageBacklog]]


class BacklogCollector:
    """The messages waiting at each stage, per partner state, and the age of the oldest.

    Register it on the gateway's registry (``metrics.registry.register``) with the
    outbox's and the inbox's ``backlog`` readers.

    Read on the scraping thread, never the gateway's event loop. Every partner state
    configured gets every stage, zeros included, so that an alert on a stage needs no
    special case for a partner with nothing there; a state no longer configured appears
    while it still holds messages. If the database cannot be read, the scrape still
    answers, with ``pouch_backlog_readable 0`` and no backlog figures.
    """

    def __init__(
        self, outbox: Reader, inbox: Reader, partners: Iterable[str], clock: Callable[[], datetime]
    ) -> None:
        self._readers = ((_OUTBOX, outbox), (_INBOX, inbox))
        self._partners = tuple(sorted(partners))
        self._clock = clock

    def describe(self) -> Iterator[Metric]:
        yield _readable()
        for store, _ in self._readers:
            yield from store.families()

    def collect(self) -> Iterator[Metric]:
        readable = _readable()
        try:
            backlogs = [(store, read()) for store, read in self._readers]
        except Exception as e:  # the other metrics must still be scraped
            log.warning("the backlog could not be read: %s", unexpected_summary(e))
            readable.add_metric([], 0)
            yield readable
            return
        readable.add_metric([], 1)
        yield readable
        now = self._clock()
        for store, rows in backlogs:
            yield from self._gauges(store, rows, now)

    def _gauges(
        self, store: _Store, rows: list[StageBacklog], now: datetime
    ) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        count, age = store.families()
        found = {(row.partner, row.stage): row for row in rows}
        every = {(partner, stage) for partner in self._partners for stage in store.stages}
        for partner, stage in sorted(every | found.keys()):
            row = found.get((partner, stage))
            count.add_metric([partner, stage], row.count if row else 0)
            waited = (now - row.oldest).total_seconds() if row else 0.0
            age.add_metric([partner, stage], max(waited, 0.0))
        return count, age


class GroupCommitCollector:
    """The group committer's batches, the writes in them, and the batches it delayed.

    Units over batches is the mean batch: near 1 when writes come one at a time, larger
    under load; delayed batches say how often ``[storage] commit_delay_ms`` applied.
    Read from counters the committer keeps; the database is not touched.
    """

    def __init__(self, stats: Callable[[], CommitStats]) -> None:
        self._stats = stats

    def describe(self) -> Iterator[Metric]:
        return self._families(CommitStats())

    def collect(self) -> Iterator[Metric]:
        return self._families(self._stats())

    @staticmethod
    def _families(stats: CommitStats) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "pouch_group_commit_batches",
            "Batches of writes the group committer has taken, each one transaction.",
            value=stats.batches,
        )
        yield CounterMetricFamily(
            "pouch_group_commit_units",
            "Writes (units) in those batches.",
            value=stats.units,
        )
        yield CounterMetricFamily(
            "pouch_group_commit_delayed_batches",
            "Batches that waited commit_delay_ms for more writes, under sustained load.",
            value=stats.delayed_batches,
        )


class StorageFaultCollector:
    """Storage faults the group committer met, by reason code (STORAGE_FULL,
    STORAGE_READ_ONLY, STORAGE_LOCKED, STORAGE_UNAVAILABLE): how many started, how many
    writes they refused, and which one is under way. Every reason always appears, zeros
    included. Read from counters the committer keeps; the database is not touched.
    """

    def __init__(self, counts: Callable[[], FaultCounts]) -> None:
        self._counts = counts

    def describe(self) -> Iterator[Metric]:
        return self._families(FaultCounts())

    def collect(self) -> Iterator[Metric]:
        return self._families(self._counts())

    @staticmethod
    def _families(counts: FaultCounts) -> Iterator[Metric]:
        started = CounterMetricFamily(
            "pouch_storage_faults",
            "Storage faults that started (writes refused, none committing), by reason code.",
            labels=["reason"],
        )
        refused = CounterMetricFamily(
            "pouch_storage_refused_writes",
            "Writes refused for a fault of the database itself, by reason code.",
            labels=["reason"],
        )
        under_way = GaugeMetricFamily(
            "pouch_storage_fault",
            "1 for the reason of the storage fault under way, else 0.",
            labels=["reason"],
        )
        for reason in STORAGE_FAULT_REASONS:
            started.add_metric([reason], counts.started.get(reason, 0))
            refused.add_metric([reason], counts.refused.get(reason, 0))
            under_way.add_metric([reason], int(counts.current == reason))
        yield from (started, refused, under_way)


class CrlCollector:
    """Each CRL's ``nextUpdate`` as a Unix timestamp, by role (own, partner) and state.

    An alert compares it with ``time()``: the gateway refuses that CA's certificates
    from ``nextUpdate`` plus ``[pki] crl_grace_seconds``. Read at each scrape from the
    watchers, which pick up a new file first; a CRL with no owner is not shown.
    """

    def __init__(self, watchers: Callable[[], Iterable[CrlWatcher]]) -> None:
        self._watchers = watchers

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for watcher in self._watchers():
            if watcher.owner is not None:
                next_update = watcher.current().next_update
                family.add_metric(
                    [watcher.owner.role, watcher.owner.state], next_update.timestamp()
                )
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "pouch_crl_next_update_timestamp_seconds",
            "When each CRL in force is due to be replaced (nextUpdate), in Unix seconds.",
            labels=["role", "state"],
        )


class MetricsEndpoint:
    """The HTTP endpoint Prometheus scrapes, on its own port."""

    def __init__(self, metrics: GatewayMetrics, host: str, port: int) -> None:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
        self._server: WSGIServer = server
        self._thread: Thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
