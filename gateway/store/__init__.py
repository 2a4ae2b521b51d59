"""Durable storage of the gateway: engines, schema migrations, the outbox and the inbox.

SQLite (WAL) is the embedded default, PostgreSQL the production engine shared by the
replicas of one state. The schema is only ever changed by :func:`upgrade_to_head`,
which every process calls at start. Every call into this package blocks; async code
calls it through ``asyncio.to_thread``. Database failures leave as
:class:`gateway.errors.StorageUnavailable`.
"""

from gateway.store.engine import create_engine, redact_url
from gateway.store.inbox import InboundMessage, Inbox, InboxEntry, InboxStatus
from gateway.store.migrate import current_revision, head_revision, upgrade_to_head
from gateway.store.outbox import Outbox, OutboxItem, OutboxMessage, OutboxStatus

__all__ = [
    "InboundMessage",
    "Inbox",
    "InboxEntry",
    "InboxStatus",
    "Outbox",
    "OutboxItem",
    "OutboxMessage",
    "OutboxStatus",
    "create_engine",
    "current_revision",
    "head_revision",
    "redact_url",
    "upgrade_to_head",
]
