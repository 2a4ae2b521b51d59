"""Fixtures for the store tests: each test runs once on SQLite and once on PostgreSQL.

SQLite uses a fresh file under ``tmp_path``. PostgreSQL uses the server named by
``POUCH_TEST_DATABASE_URL``, with a freshly created schema per test (first on the
``search_path`` of every connection, dropped afterwards), so tests share nothing and run
in any order. Without that variable the PostgreSQL half is skipped locally, and fails
under CI (``CI=true``): a missing database there is a broken pipeline, not a pass.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url

from gateway.store.engine import create_engine, write_transaction
from gateway.store.inbox import InboundMessage
from gateway.store.migrate import upgrade_to_head
from gateway.store.outbox import OutboxItem

DATABASE_URL_ENV = "POUCH_TEST_DATABASE_URL"

START = datetime(2024, 11, 22, 9, 30, 15, 123456, tzinfo=UTC)


class FakeClock:
    """A clock that only moves when told to; safe to read from several threads."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


@contextmanager
def within(engine: Engine) -> Iterator[Connection]:
    """The write transaction a test calls a store's ``*_within`` methods in, as their
    production callers do; committed when the block ends without error."""
    with write_transaction(engine) as conn:
        yield conn


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of one engine, private to this test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'pouch.db'}"
        return
    server_url = _postgresql_server_url()
    schema = f"pouch_test_{secrets.token_hex(6)}"
    admin = create_engine(server_url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        yield (
            make_url(server_url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        admin.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the empty database; disposed after the test."""
    created = create_engine(database_url)
    try:
        yield created
    finally:
        created.dispose()


@pytest.fixture
def migrated_engine(engine: Engine) -> Engine:
    upgrade_to_head(engine)
    return engine


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def make_item() -> Callable[..., OutboxItem]:
    """Build an outbox item for a civil-record update from France to Germany."""

    def build(
        message_id: str,
        *,
        recipient_state: str = "DE",
        not_before: datetime | None = None,
        deadline_at: datetime = START + timedelta(days=7),
    ) -> OutboxItem:
        return OutboxItem(
            message_id=message_id,
            agreement_id="FR-DE/civil-records",
            agreement_version=3,
            exchange_type="civil_record_update",
            recipient_state=recipient_state,
            purpose="civil-status-update",
            envelope=f"signed envelope {message_id}".encode(),
            deadline_at=deadline_at,
            not_before=not_before,
        )

    return build


@pytest.fixture
def make_inbound() -> Callable[..., InboundMessage]:
    """Build a civil-record update delivered by a partner state."""

    def build(message_id: str, *, sender_state: str = "FR") -> InboundMessage:
        return InboundMessage(
            message_id=message_id,
            sender_state=sender_state,
            agreement_id="FR-DE/civil-records",
            exchange_type="civil_record_update",
            envelope=f"signed envelope {message_id}".encode(),
        )

    return build


def _postgresql_server_url() -> str:
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        return url
    if os.environ.get("CI") == "true":
        pytest.fail(f"{DATABASE_URL_ENV} is not set: under CI the PostgreSQL tests must run")
    pytest.skip(f"{DATABASE_URL_ENV} is not set; PostgreSQL tests skipped locally")
