"""Valid civil-record updates in bulk, the client that streams them, and what to read back.

The people, places and act numbers are made up: names are drawn from short lists of
invented combinations, registry identifiers carry the run's tag, and every request has
its own client reference ``<run>:<index>``, so two runs against one gateway never
collide. Every request passes the gateway's validation and the demo agreement's
policy, and the reference registry applies each one: births name a fresh person,
deaths and marriages name nobody it has to know.

:class:`BulkSubmission` streams requests through ``CivilRecordService.SubmitUpdates``
and survives a gateway that dies mid-stream: it resumes with the same client
references, re-sending a few already acknowledged ones, and checks that a reference is
always answered with the same message id.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from gateway.connect import bearer
from pouch.v1 import civil_pb2, civil_pb2_grpc, common_pb2
from pouch_devtools.demo.agreements import CIVIL_PURPOSE
from pouch_devtools.demo.deployment import Site

EVENT_KINDS = ("birth", "death", "marriage")
_GIVEN = ("Alvina", "Bertram", "Corvina", "Dorian", "Elsbeth", "Florin", "Gundel", "Hilmar")
_FAMILY = ("Quenzer", "Vandemoortel", "Ostrowsky", "Pruvenaar", "Zellbach", "Mertelaer")
_PLACES = ("Graz", "Linz", "Innsbruck", "Salzburg", "Wien")

# Answers that mean the stream broke (the gateway died or restarted), not a refusal.
STREAM_BROKEN = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
# Already acknowledged updates sent again on resumption, to exercise idempotency.
RESENT_ON_RESUME = 5


def client_reference(run: str, index: int) -> str:
    return f"{run}:{index:06d}"


def _date(index: int, first_year: int, years: int) -> common_pb2.CivilDate:
    return common_pb2.CivilDate(
        year=first_year + index % years, month=1 + index % 12, day=1 + index % 28
    )


def _person(index: int, *, born: common_pb2.CivilDate, identifier: str = "") -> civil_pb2.Person:
    return civil_pb2.Person(
        name=common_pb2.PersonName(
            given_names=[_GIVEN[index % len(_GIVEN)]],
            family_names=[_FAMILY[index % len(_FAMILY)]],
        ),
        date_of_birth=born,
        nationalities=["BE"],
        registry_identifier=identifier,
    )


def _update(
    kind: str, run: str, index: int, parties: Sequence[civil_pb2.Party]
) -> civil_pb2.CivilRecordUpdate:
    return civil_pb2.CivilRecordUpdate(
        event_type=civil_pb2.CivilEventType.Value(f"CIVIL_EVENT_TYPE_{kind.upper()}"),
        event_date=_date(index, 2020, 5),
        event_place=common_pb2.Place(country_code="AT", locality=_PLACES[index % len(_PLACES)]),
        parties=parties,
        act_reference=f"T-{run}-{index:06d}",
    )


def birth(run: str, index: int) -> civil_pb2.CivilRecordUpdate:
    child = _person(index, born=_date(index, 2020, 5), identifier=f"BE-{run}-{index:06d}")
    mother = _person(index + 1, born=_date(index, 1985, 10))
    return _update(
        "birth",
        run,
        index,
        [
            civil_pb2.Party(role=civil_pb2.PARTY_ROLE_SUBJECT, person=child),
            civil_pb2.Party(role=civil_pb2.PARTY_ROLE_MOTHER, person=mother),
        ],
    )


def death(run: str, index: int) -> civil_pb2.CivilRecordUpdate:
    # No registry identifier: the registry records it for a clerk to match.
    deceased = _person(index, born=_date(index, 1930, 40))
    return _update(
        "death", run, index, [civil_pb2.Party(role=civil_pb2.PARTY_ROLE_SUBJECT, person=deceased)]
    )


def marriage(run: str, index: int) -> civil_pb2.CivilRecordUpdate:
    spouses = [
        civil_pb2.Party(
            role=civil_pb2.PARTY_ROLE_SPOUSE, person=_person(i, born=_date(i, 1970, 30))
        )
        for i in (index, index + 3)
    ]
    return _update("marriage", run, index, spouses)


_BUILDERS: dict[str, Callable[[str, int], civil_pb2.CivilRecordUpdate]] = {
    "birth": birth,
    "death": death,
    "marriage": marriage,
}


def update_request(
    run: str,
    index: int,
    *,
    recipient_state: str = "BE",
    agreement_id: str = "at-be-civil",
) -> civil_pb2.SubmitUpdateRequest:
    """The ``index``-th request of ``run``: births, deaths and marriages in turn."""
    kind = EVENT_KINDS[index % len(EVENT_KINDS)]
    return civil_pb2.SubmitUpdateRequest(
        client_reference=client_reference(run, index),
        recipient_state=recipient_state,
        agreement_id=agreement_id,
        purpose=CIVIL_PURPOSE,
        update=_BUILDERS[kind](run, index),
    )


def update_requests(run: str, count: int) -> list[civil_pb2.SubmitUpdateRequest]:
    return [update_request(run, index) for index in range(count)]


class BulkSubmission:
    """Streams requests to a gateway's local API, ``stream_size`` per stream.

    At most ``parallel`` streams are open at once. A stream that breaks is reopened
    until no update has been acknowledged for ``patience_s``; then the last error is
    raised. ``acknowledged`` may be read from another thread to follow progress.
    """

    def __init__(
        self,
        site: Site,
        requests: Sequence[civil_pb2.SubmitUpdateRequest],
        *,
        stream_size: int,
        parallel: int = 1,
        patience_s: float = 60.0,
        target: str | None = None,
    ) -> None:
        self._site = site
        self._requests = list(requests)
        self._stream_size = stream_size
        self._parallel = parallel
        self._patience_s = patience_s
        self._target = target or site.local_target
        self.message_ids: dict[str, str] = {}
        self.resumptions = 0
        self.first_answer_at: float | None = None
        self.last_answer_at: float | None = None

    @property
    def acknowledged(self) -> int:
        return len(self.message_ids)

    async def run(self) -> dict[str, str]:
        """Submit everything; client reference to message id, one per request."""
        gate = asyncio.Semaphore(self._parallel)
        chunks = [
            self._requests[start : start + self._stream_size]
            for start in range(0, len(self._requests), self._stream_size)
        ]

        async def one(chunk: list[civil_pb2.SubmitUpdateRequest]) -> None:
            async with gate:
                await self._stream(chunk)

        await asyncio.gather(*(one(chunk) for chunk in chunks))
        return dict(self.message_ids)

    async def _stream(self, chunk: list[civil_pb2.SubmitUpdateRequest]) -> None:
        position = {r.client_reference: i for i, r in enumerate(chunk)}
        done = 0
        progress_at = time.monotonic()
        while done < len(chunk):
            start = max(0, done - RESENT_ON_RESUME)
            try:
                async with grpc.aio.secure_channel(
                    self._target, self._site.client_identity().credentials()
                ) as channel:
                    stub = civil_pb2_grpc.CivilRecordServiceStub(channel)
                    call = stub.SubmitUpdates(
                        (civil_pb2.SubmitUpdatesRequest(update=r) for r in chunk[start:]),
                        metadata=bearer(self._site.token(["civil:submit"], now=time.time())),
                        timeout=300,
                    )
                    async for answer in call:
                        self._record(answer)
                        done = max(done, position[answer.client_reference] + 1)
                        progress_at = time.monotonic()
            except grpc.aio.AioRpcError as e:
                if e.code() not in STREAM_BROKEN:
                    raise
                if time.monotonic() - progress_at > self._patience_s:
                    raise AssertionError(
                        f"no update acknowledged for {self._patience_s:.0f} s; last error "
                        f"{e.code().name}: {e.details()}"
                    ) from e
                self.resumptions += 1
                await asyncio.sleep(0.2)

    def _record(self, answer: civil_pb2.SubmitUpdatesResponse) -> None:
        reference = answer.client_reference
        if answer.error_reason:
            raise AssertionError(
                f"{reference} refused: {answer.error_reason}: {answer.error_message}"
            )
        earlier = self.message_ids.setdefault(reference, answer.message_id)
        if earlier != answer.message_id:
            raise AssertionError(
                f"{reference} answered with {answer.message_id} after {earlier}: "
                "a resubmission created a second message"
            )
        now = time.monotonic()
        self.first_answer_at = self.first_answer_at or now
        self.last_answer_at = now


def gateway_database(site: Site) -> Path:
    """Where a demo site's gateway keeps its SQLite database."""
    return site.root / "data" / "pouch.db"


def query_sqlite(db: Path, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Read from a database another process is writing (WAL), without writing to it."""
    connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        return connection.execute(sql, tuple(parameters)).fetchall()
    finally:
        connection.close()


def applied_in_registry(site: Site) -> list[str]:
    """Message ids in the reference registry's ``applied_updates``, one per row."""
    if not site.registry_db.exists():
        return []
    rows = query_sqlite(site.registry_db, "SELECT message_id FROM applied_updates")
    return [row[0] for row in rows]


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout_s: float,
    describe: Callable[[], str],
    interval_s: float = 0.25,
) -> float:
    """Poll ``condition`` until it holds; seconds waited. Fails with ``describe()``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not reached within {timeout_s:.0f} s: {describe()}")
        time.sleep(interval_s)
    return time.monotonic() - started
