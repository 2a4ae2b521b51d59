"""Representation-case transitions through both gateways, end to end.

Before a round (not timed), AT's consulate opens ``cases`` cases asking BE's mission
for help, and the round waits until BE holds every one. Timed: BE's consulate moves
each case ACKNOWLEDGED -> ACCEPTED -> IN_PROGRESS -> COMPLETED through BE's local API,
``in_flight`` cases at a time (a case's steps one after the other); each step is signed
by BE, sent through its outbox and applied by AT. The round's time runs from the
first call to the last step applied at AT (``case_events.occurred_at``); latency is
per step, from BE's caller making the call to AT applying it. A call the gateway
answers UNAVAILABLE (its database busy) is retried, as a caller should, and counted.

The raw counterpart is the same number of unary round trips through the relay chain,
as many in flight.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import grpc
import grpc.aio

from bench.rounds import Measured
from gateway.connect import bearer, secure_channel
from pouch.v1 import common_pb2, representation_pb2, representation_pb2_grpc
from pouch_devtools.demo.agreements import REPRESENTATION_PURPOSE
from pouch_devtools.demo.deployment import Site, agreement_id_for
from tests.integration.civil_builders import gateway_database, query_sqlite, wait_until

STEPS = (
    representation_pb2.CASE_STATE_ACKNOWLEDGED,
    representation_pb2.CASE_STATE_ACCEPTED,
    representation_pb2.CASE_STATE_IN_PROGRESS,
    representation_pb2.CASE_STATE_COMPLETED,
)
_STORED = {
    representation_pb2.CASE_STATE_ACKNOWLEDGED: "acknowledged",
    representation_pb2.CASE_STATE_ACCEPTED: "accepted",
    representation_pb2.CASE_STATE_IN_PROGRESS: "in_progress",
    representation_pb2.CASE_STATE_COMPLETED: "completed",
}
MISSION_COUNTRY = "CV"
RETRIES = 20
RETRY_PAUSE_S = 0.05  # times the attempt's number


def _request(run: str, index: int) -> representation_pb2.RequestAssistanceRequest:
    return representation_pb2.RequestAssistanceRequest(
        client_reference=f"{run}:{index:06d}",
        representing_state="BE",
        mission_country=MISSION_COUNTRY,
        agreement_id=agreement_id_for("AT", "BE"),
        purpose=REPRESENTATION_PURPOSE,
        kind=representation_pb2.ASSISTANCE_KIND_LOST_DOCUMENTS,
        person=representation_pb2.AssistedPerson(
            name=common_pb2.PersonName(given_names=["Claire"], family_names=[f"Example{index}"]),
            date_of_birth=common_pb2.CivilDate(year=1988, month=6, day=2),
            nationality="AT",
            location=common_pb2.Place(country_code=MISSION_COUNTRY, locality="Praia"),
            contact="+238 000 00 00 (hotel reception)",
        ),
        summary="Passport and identity card lost; needs an emergency travel document.",
    )


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _rows_at(site: Site, sql: str, case_ids: set[str]) -> list[tuple[object, ...]]:
    return [row for row in query_sqlite(gateway_database(site), sql) if row[0] in case_ids]


async def _open_cases(at: Site, run: str, cases: int, in_flight: int) -> list[str]:
    metadata = bearer(at.token(["representation:request"], now=time.time()))
    gate = asyncio.Semaphore(in_flight)
    async with secure_channel(at.local_target, at.client_identity()) as channel:
        stub = representation_pb2_grpc.RepresentationServiceStub(channel)

        async def one(index: int) -> str:
            async with gate:
                answer = await stub.RequestAssistance(
                    _request(run, index), metadata=metadata, timeout=60
                )
                return str(answer.case.case_id)

        return list(await asyncio.gather(*(one(i) for i in range(cases))))


async def _transition(
    stub: representation_pb2_grpc.RepresentationServiceAsyncStub,
    request: representation_pb2.TransitionCaseRequest,
    metadata: tuple[tuple[str, str], ...],
) -> int:
    """Make the call, again while the gateway answers UNAVAILABLE (it stored nothing
    then); how many times it was made again."""
    again = 0
    while True:
        try:
            await stub.TransitionCase(request, metadata=metadata, timeout=60)
            return again
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or again == RETRIES:
                raise
        again += 1
        await asyncio.sleep(RETRY_PAUSE_S * again)


async def _move_cases(
    be: Site, case_ids: list[str], in_flight: int
) -> tuple[float, dict[tuple[str, str], float], int]:
    metadata = bearer(be.token(["representation:act"], now=time.time()))
    called: dict[tuple[str, str], float] = {}
    retried = 0
    queue = iter(case_ids)
    async with secure_channel(be.local_target, be.client_identity()) as channel:
        stub = representation_pb2_grpc.RepresentationServiceStub(channel)

        async def worker() -> None:
            nonlocal retried
            for case_id in queue:
                for step in STEPS:
                    called[(case_id, _STORED[step])] = time.time()
                    request = representation_pb2.TransitionCaseRequest(
                        case_id=case_id, target_state=step
                    )
                    retried += await _transition(stub, request, metadata)

        started = time.time()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return started, called, retried


class CaseRounds:
    """Each round's cases are opened by :meth:`prepare` and moved by :meth:`run`."""

    def __init__(self, at: Site, be: Site, cases: int, in_flight: int) -> None:
        self._at, self._be = at, be
        self._cases, self._in_flight = cases, in_flight
        self._case_ids: list[str] = []

    def prepare(self, run: str) -> None:
        """Open this round's cases at AT and wait until BE holds every one."""
        self._case_ids = asyncio.run(_open_cases(self._at, run, self._cases, self._in_flight))
        wanted = set(self._case_ids)
        held_sql = "SELECT case_id FROM representation_cases"
        wait_until(
            lambda: len(_rows_at(self._be, held_sql, wanted)) == len(wanted),
            timeout_s=120,
            describe=lambda: f"{len(_rows_at(self._be, held_sql, wanted))} cases at BE",
            interval_s=0.1,
        )

    def run(self) -> Measured:
        at, case_ids = self._at, self._case_ids
        wanted = set(case_ids)
        started, called, retried = asyncio.run(_move_cases(self._be, case_ids, self._in_flight))
        done_sql = "SELECT case_id FROM representation_cases WHERE state = 'completed'"
        wait_until(
            lambda: len(_rows_at(at, done_sql, wanted)) == len(wanted),
            timeout_s=max(120.0, len(wanted)),
            describe=lambda: f"{len(_rows_at(at, done_sql, wanted))} completed at AT",
            interval_s=0.1,
        )
        applied = {
            (str(case_id), str(state)): _epoch(str(at_time))
            for case_id, state, at_time in _rows_at(
                at,
                "SELECT case_id, state, occurred_at FROM case_events WHERE actor_state = 'BE'",
                wanted,
            )
        }
        latencies = [applied[key] - called[key] for key in called if key in applied]
        return Measured(len(called), max(applied.values()) - started, latencies, retried)
