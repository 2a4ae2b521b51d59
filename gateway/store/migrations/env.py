"""Alembic environment for the gateway's schema.

At run time :func:`gateway.store.migrate.upgrade_to_head` hands over its own connection
in ``config.attributes["connection"]``, already inside the transaction that holds the
migration lock; this file then only runs the migrations in it.

A developer writing a new revision (``alembic revision --autogenerate``) sets
``sqlalchemy.url`` instead; the database is opened with the gateway's own engine
settings. Timestamp columns are rendered as plain ``sa.DateTime(timezone=True)`` so
revisions never import the gateway's Python types.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection

from gateway.store.engine import create_engine
from gateway.store.tables import VERSION_TABLE, UTCDateTime, metadata


def _render_item(kind: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    if kind == "type" and isinstance(obj, UTCDateTime):
        autogen_context.imports.add("import sqlalchemy as sa")
        return "sa.DateTime(timezone=True)"
    return False


def _run_in(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run() -> None:
    config = context.config
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _run_in(given)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection given and no sqlalchemy.url configured")
    if context.is_offline_mode():
        context.configure(
            url=url,
            target_metadata=metadata,
            version_table=VERSION_TABLE,
            literal_binds=True,
            render_item=_render_item,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            _run_in(connection)
            connection.commit()
    finally:
        engine.dispose()


_run()
