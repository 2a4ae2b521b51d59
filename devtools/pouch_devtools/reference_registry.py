"""A reference national registry, for the demo and the tests: ``RegistryService`` on SQLite.

It behaves as a small real registry would:

* ``ApplyCivilUpdate`` applies each message id exactly once: the check and the change
  share one ``BEGIN IMMEDIATE`` transaction, and a message id already in
  ``applied_updates`` is answered ``DUPLICATE`` without touching anything. Births add
  a person, deaths and name changes update one; a death or name change naming a
  ``registry_identifier`` the registry does not know is rejected ``UNKNOWN_PERSON``
  (an update that names nobody is recorded as applied, for a clerk to match). A
  rejection changes nothing, so the same message may be applied later.
* ``ApplyCivilUpdates`` applies up to 64 updates, in order, each as above, in one
  transaction (a rejected one rolls back to its own savepoint), and answers once the
  transaction is committed.
* ``LookupIdentity`` answers from the ``documents`` table, seeded with
  :meth:`ReferenceRegistry.add_document`: by document number, or by date of birth
  when the number crossed only as a keyed hash (at most 20 candidates).
* ``NotifyCaseEvent`` stores each case event.

Run as a process: ``python -m pouch_devtools.reference_registry --db PATH --listen HOST:PORT
[--tls-cert PEM --tls-key PEM [--client-ca PEM]]`` prints ``reference registry ready on
PORT`` once it serves. Without TLS it listens on loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf.json_format import MessageToJson
from sqlalchemy import (
    CHAR,
    Column,
    Connection,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    bindparam,
    func,
    insert,
    select,
    update,
)

from gateway.store.engine import create_engine, read_transaction, write_transaction
from gateway.store.prepared import Prepared
from gateway.store.tables import UTCDateTime
from pouch.v1 import civil_pb2, common_pb2, identity_pb2, registry_pb2, registry_pb2_grpc

UNKNOWN_PERSON = "UNKNOWN_PERSON"
MAX_CANDIDATES = 20
MAX_UPDATES = 64
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "[::1]"})

metadata = MetaData()
applied_updates = Table(
    "applied_updates",
    metadata,
    Column("message_id", String(36), primary_key=True),
    Column("sender_state", CHAR(2), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("applied_at", UTCDateTime, nullable=False),
)
persons = Table(
    "persons",
    metadata,
    Column("registry_identifier", String(64), primary_key=True),
    Column("given_names", Text, nullable=False),
    Column("family_names", Text, nullable=False),
    Column("date_of_birth", String(10), nullable=False),
    Column("sex", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("date_of_death", String(10), nullable=True),
    Column("updated_by", String(36), nullable=True),
)
documents = Table(
    "documents",
    metadata,
    Column("document_type", String(64), nullable=False),
    Column("number", String(64), nullable=False),
    Column("given_names", Text, nullable=False),
    Column("family_names", Text, nullable=False),
    Column("date_of_birth", String(10), nullable=False),
    Column("sex", String(32), nullable=False),
    Column("nationality", CHAR(2), nullable=False),
    Column("status", String(64), nullable=False),
    PrimaryKeyConstraint("document_type", "number"),
)
case_events = Table(
    "case_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_kind", String(64), nullable=False),
    Column("case_id", String(64), nullable=False),
    Column("case_json", Text, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
)


_APPLIED = Prepared(
    select(applied_updates.c.message_id).where(
        applied_updates.c.message_id == bindparam("message_id")
    )
)
_RECORD_APPLIED = Prepared(insert(applied_updates), columns=applied_updates.c.keys())
_PERSON_STATUS = Prepared(
    select(persons.c.status).where(persons.c.registry_identifier == bindparam("identifier"))
)
_INSERT_PERSON = Prepared(insert(persons), columns=persons.c.keys())
_CANDIDATE = select(
    documents.c.number,
    documents.c.given_names,
    documents.c.family_names,
    documents.c.date_of_birth,
    documents.c.sex,
    documents.c.nationality,
    documents.c.status,
)
_OF_TYPE = documents.c.document_type == bindparam("document_type")
_BY_NUMBER = Prepared(
    _CANDIDATE.where(_OF_TYPE, documents.c.number == bindparam("number"))
    .order_by(documents.c.number)
    .limit(MAX_CANDIDATES)
)
_BY_BIRTH = Prepared(
    _CANDIDATE.where(_OF_TYPE, documents.c.date_of_birth.like(bindparam("born")))
    .order_by(documents.c.number)
    .limit(MAX_CANDIDATES)
)


def _malformed(request: registry_pb2.ApplyCivilUpdateRequest) -> bool:
    """Whether ``request`` lacks a message id of at most 36 characters or a sender."""
    return not request.message_id or len(request.message_id) > 36 or not request.sender_state


@dataclass(frozen=True)
class RegisteredPerson:
    registry_identifier: str
    given_names: tuple[str, ...]
    family_names: tuple[str, ...]
    date_of_birth: str
    status: str
    date_of_death: str | None


class _Refusal(Exception):
    def __init__(self, reason_code: str) -> None:
        super().__init__(reason_code)
        self.reason_code = reason_code


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _date(value: common_pb2.CivilDate) -> str:
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"


def _civil_date(text: str) -> common_pb2.CivilDate:
    year, month, day = (int(part) for part in text.split("-"))
    return common_pb2.CivilDate(year=year, month=month, day=day)


def _names(values: Sequence[str]) -> str:
    return json.dumps(list(values), ensure_ascii=False)


class ReferenceRegistry(registry_pb2_grpc.RegistryServiceServicer):
    """The registry's store and its ``RegistryService``; store calls block."""

    def __init__(self, db_path: Path, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self._engine = create_engine(f"sqlite:///{Path(db_path).resolve()}")
        self._clock = clock
        with write_transaction(self._engine) as conn:
            metadata.create_all(conn)
        # Look-ups are the hot path of identity confirmations: one reader thread with one
        # connection of its own, never a transaction left open (WAL: writers go on).
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="registry-reader")
        self._reader_conn: Connection | None = None
        # Updates arrive one at a time, in order: one writer thread applies them.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="registry-writer")

    def close(self) -> None:
        self._reader.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        if self._reader_conn is not None:
            self._reader_conn.close()
        self._engine.dispose()

    # --- the service -------------------------------------------------------------

    async def ApplyCivilUpdate(
        self,
        request: registry_pb2.ApplyCivilUpdateRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> registry_pb2.ApplyCivilUpdateResponse:
        if _malformed(request):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "message_id and sender_state")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self.apply_update, request)

    async def ApplyCivilUpdates(
        self,
        request: registry_pb2.ApplyCivilUpdatesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> registry_pb2.ApplyCivilUpdatesResponse:
        if not 1 <= len(request.updates) <= MAX_UPDATES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"updates: 1 to {MAX_UPDATES} per call"
            )
        for index, item in enumerate(request.updates):
            if _malformed(item):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"updates[{index}]: message_id and sender_state",
                )
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self._writer, self.apply_updates, request.updates)
        return registry_pb2.ApplyCivilUpdatesResponse(results=results)

    async def LookupIdentity(
        self,
        request: registry_pb2.LookupIdentityRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> registry_pb2.LookupIdentityResponse:
        if not request.document_number and not request.date_of_birth.year:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "document_number or date_of_birth is required"
            )
        loop = asyncio.get_running_loop()
        records = await loop.run_in_executor(self._reader, self.search_documents, request)
        return registry_pb2.LookupIdentityResponse(records=records)

    async def NotifyCaseEvent(
        self,
        request: registry_pb2.NotifyCaseEventRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> registry_pb2.NotifyCaseEventResponse:
        if not request.event_kind or not request.case.case_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "event_kind and case_id")
        await asyncio.to_thread(self.record_case_event, request)
        return registry_pb2.NotifyCaseEventResponse()

    # --- the store ---------------------------------------------------------------

    def apply_update(
        self, request: registry_pb2.ApplyCivilUpdateRequest
    ) -> registry_pb2.ApplyCivilUpdateResponse:
        """Apply ``request`` unless its message id was applied before."""
        return self.apply_updates([request])[0]

    def apply_updates(
        self, requests: Sequence[registry_pb2.ApplyCivilUpdateRequest]
    ) -> list[registry_pb2.ApplyCivilUpdateResponse]:
        """Apply each of ``requests`` in order, unless its message id was applied before,
        in one transaction; a rejected one leaves nothing of itself."""
        with write_transaction(self._engine) as conn:
            return [self._apply_within(conn, request) for request in requests]

    def _apply_within(
        self, conn: Connection, request: registry_pb2.ApplyCivilUpdateRequest
    ) -> registry_pb2.ApplyCivilUpdateResponse:
        if _APPLIED.rows(conn, {"message_id": request.message_id}):
            return registry_pb2.ApplyCivilUpdateResponse(
                outcome=registry_pb2.APPLY_OUTCOME_DUPLICATE
            )
        try:
            with conn.begin_nested():
                self._apply_event(conn, request.message_id, request.update)
                _RECORD_APPLIED.execute(
                    conn,
                    {
                        "message_id": request.message_id,
                        "sender_state": request.sender_state,
                        "event_type": civil_pb2.CivilEventType.Name(request.update.event_type),
                        "applied_at": self._clock(),
                    },
                )
        except _Refusal as refusal:
            return registry_pb2.ApplyCivilUpdateResponse(
                outcome=registry_pb2.APPLY_OUTCOME_REJECTED, reason_code=refusal.reason_code
            )
        return registry_pb2.ApplyCivilUpdateResponse(outcome=registry_pb2.APPLY_OUTCOME_APPLIED)

    def _apply_event(
        self, conn: Connection, message_id: str, event: civil_pb2.CivilRecordUpdate
    ) -> None:
        subject = next(
            (p.person for p in event.parties if p.role == civil_pb2.PARTY_ROLE_SUBJECT), None
        )
        identifier = subject.registry_identifier if subject is not None else ""
        found = _PERSON_STATUS.rows(conn, {"identifier": identifier}) if identifier else []
        known = found[0][0] if found else None
        kind = event.event_type
        if kind == civil_pb2.CIVIL_EVENT_TYPE_UNSPECIFIED:
            raise _Refusal("EVENT_TYPE_UNSPECIFIED")
        if kind == civil_pb2.CIVIL_EVENT_TYPE_BIRTH:
            if subject is None:
                raise _Refusal("SUBJECT_MISSING")
            if known is not None:
                raise _Refusal("PERSON_ALREADY_REGISTERED")
            born = subject.date_of_birth if subject.HasField("date_of_birth") else event.event_date
            self._insert_person(
                conn,
                identifier or f"P{secrets.token_hex(8).upper()}",
                subject.name,
                born,
                subject.sex,
                updated_by=message_id,
            )
            return
        if kind not in (civil_pb2.CIVIL_EVENT_TYPE_DEATH, civil_pb2.CIVIL_EVENT_TYPE_NAME_CHANGE):
            return
        if not identifier:
            return
        if known is None:
            raise _Refusal(UNKNOWN_PERSON)
        change: dict[str, str] = {"updated_by": message_id}
        if kind == civil_pb2.CIVIL_EVENT_TYPE_DEATH:
            if known == "deceased":
                raise _Refusal("PERSON_ALREADY_DECEASED")
            change.update(status="deceased", date_of_death=_date(event.event_date))
        else:
            if not event.new_name.family_names and not event.new_name.given_names:
                raise _Refusal("NEW_NAME_MISSING")
            change.update(
                given_names=_names(event.new_name.given_names),
                family_names=_names(event.new_name.family_names),
            )
        conn.execute(
            update(persons).where(persons.c.registry_identifier == identifier).values(**change)
        )

    def _insert_person(
        self,
        conn: Connection,
        identifier: str,
        name: common_pb2.PersonName,
        date_of_birth: common_pb2.CivilDate,
        sex: common_pb2.Sex.ValueType,
        *,
        updated_by: str | None,
    ) -> None:
        _INSERT_PERSON.execute(
            conn,
            {
                "registry_identifier": identifier,
                "given_names": _names(name.given_names),
                "family_names": _names(name.family_names),
                "date_of_birth": _date(date_of_birth),
                "sex": common_pb2.Sex.Name(sex),
                "status": "living",
                "date_of_death": None,
                "updated_by": updated_by,
            },
        )

    def add_person(
        self,
        *,
        registry_identifier: str,
        name: common_pb2.PersonName,
        date_of_birth: common_pb2.CivilDate,
        sex: common_pb2.Sex.ValueType = common_pb2.SEX_UNSPECIFIED,
    ) -> None:
        """Seed a living person the registry already knows."""
        with write_transaction(self._engine) as conn:
            self._insert_person(
                conn, registry_identifier, name, date_of_birth, sex, updated_by=None
            )

    def find_person(self, registry_identifier: str) -> RegisteredPerson | None:
        query = select(persons).where(persons.c.registry_identifier == registry_identifier)
        with read_transaction(self._engine) as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return RegisteredPerson(
            registry_identifier=row.registry_identifier,
            given_names=tuple(json.loads(row.given_names)),
            family_names=tuple(json.loads(row.family_names)),
            date_of_birth=row.date_of_birth,
            status=row.status,
            date_of_death=row.date_of_death,
        )

    def add_document(
        self,
        *,
        document_type: identity_pb2.DocumentType.ValueType,
        number: str,
        name: common_pb2.PersonName,
        date_of_birth: common_pb2.CivilDate,
        sex: common_pb2.Sex.ValueType,
        nationality: str,
        status: identity_pb2.DocumentStatus.ValueType = identity_pb2.DOCUMENT_STATUS_VALID,
    ) -> None:
        """Seed one identity document for ``LookupIdentity``."""
        with write_transaction(self._engine) as conn:
            conn.execute(
                insert(documents).values(
                    document_type=identity_pb2.DocumentType.Name(document_type),
                    number=number,
                    given_names=_names(name.given_names),
                    family_names=_names(name.family_names),
                    date_of_birth=_date(date_of_birth),
                    sex=common_pb2.Sex.Name(sex),
                    nationality=nationality,
                    status=identity_pb2.DocumentStatus.Name(status),
                )
            )

    def search_documents(
        self, request: registry_pb2.LookupIdentityRequest
    ) -> list[registry_pb2.IdentityRecord]:
        """Documents of the requested type by number or, without one, by date of birth.

        The date of birth may be known only to the year or month (an agreement that
        generalises it); names are left to the gateway, which compares them itself.
        """
        parameters = {"document_type": identity_pb2.DocumentType.Name(request.document_type)}
        if request.document_number:
            parameters["number"] = request.document_number
            statement = _BY_NUMBER
        else:
            born = request.date_of_birth
            prefix = f"{born.year:04d}" + (f"-{born.month:02d}" if born.month else "")
            if born.month and born.day:
                prefix += f"-{born.day:02d}"
            parameters["born"] = prefix + "%"  # digits and dashes: nothing to escape
            statement = _BY_BIRTH
        if self._reader_conn is None or self._reader_conn.invalidated:
            self._reader_conn = self._engine.connect()
        rows = statement.rows(self._reader_conn, parameters)
        return [
            registry_pb2.IdentityRecord(
                document_type=request.document_type,
                document_number=number,
                name=common_pb2.PersonName(
                    given_names=json.loads(given_names), family_names=json.loads(family_names)
                ),
                date_of_birth=_civil_date(born),
                sex=common_pb2.Sex.Value(sex),
                nationality=nationality,
                document_status=identity_pb2.DocumentStatus.Value(status),
            )
            for number, given_names, family_names, born, sex, nationality, status in rows
        ]

    def record_case_event(self, request: registry_pb2.NotifyCaseEventRequest) -> None:
        with write_transaction(self._engine) as conn:
            conn.execute(
                insert(case_events).values(
                    event_kind=request.event_kind,
                    case_id=request.case.case_id,
                    case_json=MessageToJson(request.case, preserving_proto_field_name=True),
                    received_at=self._clock(),
                )
            )

    def case_event_kinds(self, case_id: str) -> list[str]:
        query = (
            select(case_events.c.event_kind)
            .where(case_events.c.case_id == case_id)
            .order_by(case_events.c.id)
        )
        with read_transaction(self._engine) as conn:
            return list(conn.execute(query).scalars())

    def count_applied(self) -> int:
        with read_transaction(self._engine) as conn:
            return int(conn.execute(select(func.count()).select_from(applied_updates)).scalar_one())


def count_applied(db_path: Path) -> int:
    """How many updates the registry in ``db_path`` has applied, read from outside it."""
    connection = sqlite3.connect(f"{Path(db_path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        (count,) = connection.execute("SELECT count(*) FROM applied_updates").fetchone()
        return int(count)
    finally:
        connection.close()


@dataclass(frozen=True)
class ServedRegistry:
    """A running reference registry and the port it is bound to."""

    server: grpc.aio.Server
    port: int
    registry: ReferenceRegistry

    async def stop(self, grace: float | None = None) -> None:
        await self.server.stop(grace)
        self.registry.close()


async def start_reference_registry(
    db_path: Path, listen: str, *, server_credentials: grpc.ServerCredentials | None = None
) -> ServedRegistry:
    """Serve a reference registry on ``listen`` (port 0 picks a free port)."""
    host, _, port_text = listen.rpartition(":")
    if not host or not port_text.isdigit():
        raise ValueError(f"listen must be HOST:PORT, not {listen!r}")
    if server_credentials is None and host not in _LOOPBACK:
        raise ValueError(f"refusing to serve without TLS on {host}: use a loopback address")
    registry = ReferenceRegistry(db_path)
    server = grpc.aio.server()
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(registry, server)
    if server_credentials is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, server_credentials)
    await server.start()
    return ServedRegistry(server=server, port=port, registry=registry)


async def serve_reference_registry(
    db_path: Path, listen: str, *, server_credentials: grpc.ServerCredentials | None = None
) -> grpc.aio.Server:
    """Start serving and return the server; see :func:`start_reference_registry` for the port."""
    served = await start_reference_registry(db_path, listen, server_credentials=server_credentials)
    return served.server


def _credentials(args: argparse.Namespace) -> grpc.ServerCredentials | None:
    if args.tls_cert is None and args.tls_key is None:
        if args.client_ca is not None:
            raise SystemExit("--client-ca needs --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise SystemExit("--tls-cert and --tls-key go together")
    client_ca = args.client_ca.read_bytes() if args.client_ca is not None else None
    return grpc.ssl_server_credentials(
        [(args.tls_key.read_bytes(), args.tls_cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


async def _run(args: argparse.Namespace) -> None:
    served = await start_reference_registry(
        args.db, args.listen, server_credentials=_credentials(args)
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    print(f"reference registry ready on {served.port}", flush=True)
    await stopping.wait()
    await served.stop(grace=1.0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pouch_devtools.reference_registry")
    parser.add_argument("--db", type=Path, required=True, help="SQLite file of the registry")
    parser.add_argument("--listen", required=True, help="HOST:PORT; port 0 picks a free one")
    parser.add_argument("--tls-cert", type=Path, help="server certificate chain (PEM)")
    parser.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    parser.add_argument("--client-ca", type=Path, help="require client certificates from it")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_run(args))
    except ValueError as e:
        raise SystemExit(str(e)) from None


if __name__ == "__main__":
    main()
