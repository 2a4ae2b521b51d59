"""Two replicas of AT's gateway share one PostgreSQL outbox and send each message once.

Both replicas run as real processes on the same PKI and the same database (a fresh
schema, chosen through the URL's ``options=-csearch_path=...`` and dropped at the
end), on different ports; so two dispatchers claim from one outbox. Updates are
submitted through one replica only. BE's gateway and registry run on SQLite.

Needs ``POUCH_TEST_DATABASE_URL``; without it the test is skipped locally and fails
under CI (``CI=true``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from gateway.store.engine import create_engine
from pouch_devtools.demo.deployment import (
    GatewayProcess,
    RegistryProcess,
    Site,
    free_port,
    prepare_sites,
)
from tests.integration.civil_builders import (
    BulkSubmission,
    applied_in_registry,
    gateway_database,
    query_sqlite,
    update_requests,
    wait_until,
)

pytestmark = pytest.mark.postgres

DATABASE_URL_ENV = "POUCH_TEST_DATABASE_URL"
COUNT = 500
DELIVERY = {
    "backoff_initial_seconds": 0.1,
    "backoff_max_seconds": 1.0,
    "poll_interval_seconds": 0.05,
    # Small batches, so that neither dispatcher takes the whole backlog in one claim.
    "batch_size": 20,
}


@pytest.fixture
def schema_url() -> Iterator[str]:
    """A URL on a fresh, empty schema of the test server; the schema is dropped after."""
    server_url = os.environ.get(DATABASE_URL_ENV)
    if not server_url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{DATABASE_URL_ENV} is not set: under CI the PostgreSQL tests must run")
        pytest.skip(f"{DATABASE_URL_ENV} is not set; PostgreSQL tests skipped locally")
    schema = f"pouch_replicas_{secrets.token_hex(6)}"
    admin = create_engine(server_url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        try:
            yield (
                make_url(server_url)
                .update_query_dict({"options": f"-csearch_path={schema}"})
                .render_as_string(hide_password=False)
            )
        finally:
            with admin.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        admin.dispose()


def replica_of(site: Site) -> Site:
    """A second gateway of ``site``'s state: same files, same database, other ports.

    Its directory links to the first one's PKI, identity provider, agreements, keys
    and partner bundles, and holds a copy of its configuration with new listen ports.
    """
    replica = dataclasses.replace(
        site,
        root=site.root.parent / f"{site.state}-replica",
        local_port=free_port(),
        peer_port=free_port(),
        metrics_port=free_port(),
    )
    replica.root.mkdir()
    for name in ("pki", "idp", "agreements", "secrets", "partners"):
        (replica.root / name).symlink_to(site.root / name, target_is_directory=True)
    config = site.config_path.read_text(encoding="utf-8")
    for old, new in (
        (site.local_port, replica.local_port),
        (site.peer_port, replica.peer_port),
        (site.metrics_port, replica.metrics_port),
    ):
        line = f'listen = "127.0.0.1:{old}"'
        assert config.count(line) == 1, f"{line} not found once in {site.config_path}"
        config = config.replace(line, f'listen = "127.0.0.1:{new}"')
    replica.config_path.write_text(config, encoding="utf-8")
    return replica


@pytest.fixture
def processes() -> Iterator[list[GatewayProcess | RegistryProcess]]:
    started: list[GatewayProcess | RegistryProcess] = []
    try:
        yield started
    finally:
        for process in reversed(started):
            if isinstance(process, GatewayProcess):
                process.terminate()
            else:
                process.stop()


def test_two_dispatcher_processes_on_one_postgres_outbox_send_each_message_once(
    tmp_path: Path, schema_url: str, processes: list[GatewayProcess | RegistryProcess]
) -> None:
    sites = prepare_sites(
        tmp_path,
        ["AT", "BE"],
        now=datetime.now(UTC),
        agreements=[("AT", "BE")],
        delivery=DELIVERY,
        database_urls={"AT": schema_url},
    )
    at, be = sites["AT"], sites["BE"]
    first, second = GatewayProcess(at), GatewayProcess(replica_of(at))
    for process in (RegistryProcess(be), GatewayProcess(be), first, second):
        processes.append(process)
        # One at a time: the first AT replica migrates the empty schema.
        process.start()

    submission = BulkSubmission(at, update_requests("replicas", COUNT), stream_size=125)
    message_ids = asyncio.run(submission.run())
    assert len(set(message_ids.values())) == COUNT

    outbox = create_engine(schema_url)
    try:

        def outbox_rows() -> list[tuple[str, str, str | None, str | None]]:
            with outbox.connect() as conn:
                return [
                    (row[0], row[1], row[2], row[3])
                    for row in conn.exec_driver_sql(
                        "SELECT message_id, status, outcome, claimed_by FROM outbox"
                    )
                ]

        wait_until(
            lambda: sum(1 for row in outbox_rows() if row[2] == "applied") == COUNT,
            timeout_s=120,
            describe=lambda: str(Counter((row[1], row[2]) for row in outbox_rows())),
            interval_s=0.5,
        )
        rows = outbox_rows()
    finally:
        outbox.dispose()

    assert {row[0] for row in rows} == set(message_ids.values())
    assert all(row[1] == "delivered" for row in rows), Counter(row[1] for row in rows)
    # The worker that marked a message delivered is the one that held its lease.
    delivered_by = Counter((row[3] or "").split("-")[1] for row in rows)
    pids = {str(p.process.pid) for p in (first, second) if p.process is not None}
    assert set(delivered_by) == pids, f"deliveries per gateway pid: {delivered_by}"
    print(f"deliveries per AT replica (pid: count): {dict(delivered_by)}")

    in_registry = applied_in_registry(be)
    assert len(in_registry) == COUNT, f"BE's registry applied {len(in_registry)} rows"
    assert set(in_registry) == set(message_ids.values())
    (received,) = query_sqlite(gateway_database(be), "SELECT count(*) FROM inbox")[0]
    assert received == COUNT, "BE's inbox holds other than one row per message"
