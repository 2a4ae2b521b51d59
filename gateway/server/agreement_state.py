"""Each agreement's state and the stable reason it is not in force, as
``AgreementService`` answers it and ``pouch_agreement_state`` shows it.

One standing per loaded version: ``active``, ``suspended`` or ``terminated`` (declared
by a party since the text was signed: the lifecycle store), or ``inactive`` with the
first reason of the activation rule (:class:`~gateway.agreements.registry.InactiveReason`)
or ``SUPERSEDED`` for a version a later one replaced. The metric has one series per
agreement id, for the version that governs it, labelled with ids, states and reason
codes only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric

from gateway.agreements.registry import AgreementRegistry, LoadedAgreement
from gateway.policy.rules import PolicySection
from gateway.store.lifecycle import AgreementLifecycleStore, LifecycleRecord

SUPERSEDED = "SUPERSEDED"


@dataclass(frozen=True)
class AgreementStanding:
    """``reason`` is a stable code ("" when active); ``detail`` says who declared a
    suspension or termination, and why, for operators."""

    loaded: LoadedAgreement[PolicySection]
    state: str
    reason: str
    detail: str
    governs: bool


def standing_of(
    loaded: LoadedAgreement[PolicySection],
    record: LifecycleRecord | None,
    governing_version: int,
) -> AgreementStanding:
    governs = loaded.version == governing_version
    if record is not None:
        status = str(record.status)
        detail = f"{status} by {record.changed_by_state}: {record.reason_code}"
        return AgreementStanding(loaded, status, status.upper(), detail, governs)
    if loaded.inactive_reason is not None:
        reason = loaded.inactive_reason.value
        return AgreementStanding(loaded, "inactive", reason, reason, governs)
    if loaded.version < governing_version:
        return AgreementStanding(loaded, "inactive", SUPERSEDED, SUPERSEDED, governs)
    return AgreementStanding(loaded, "active", "", "", governs)


def standings(
    registry: AgreementRegistry[PolicySection], lifecycle: AgreementLifecycleStore
) -> list[AgreementStanding]:
    """Blocking (reads the lifecycle store): every loaded version's standing today."""
    records = {(r.agreement_id, r.agreement_version): r for r in lifecycle.all()}
    loaded = registry.list()
    governing = {a.id: registry.get(a.id).version for a in loaded}
    return [standing_of(a, records.get((a.id, a.version)), governing[a.id]) for a in loaded]


class AgreementStateCollector:
    """``pouch_agreement_state{agreement,version,state,reason}`` = 1, read at each
    scrape, for the version that governs each agreement id."""

    def __init__(self, read: Callable[[], list[AgreementStanding]]) -> None:
        self._read = read

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for standing in self._read():
            if standing.governs:
                labels = [standing.loaded.id, str(standing.loaded.version)]
                family.add_metric([*labels, standing.state, standing.reason], 1)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "pouch_agreement_state",
            "Each agreement's state (active, suspended, terminated, inactive) for the "
            "version that governs it, with the stable reason it is not in force "
            "(empty when active); always 1.",
            labels=["agreement", "version", "state", "reason"],
        )
