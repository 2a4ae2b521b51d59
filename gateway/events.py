"""Exchange events: one structured log line per stage, and the two formats they are written in.

An operator follows a message through the gateways by these lines alone. Each is an
:class:`Event` emitted through :func:`emit`, on the ``pouch.events`` logger, with fixed
fields: message id, agreement id and version, partner state, exchange type, reason
code, and the request id of the call it belongs to.

Guarantees:

* an event line holds identifiers, states, counts and reason codes only. :func:`emit`
  takes no free text; a reason that is not a reason code (upper-case letters, digits,
  ``_``) is written as ``UNREADABLE_REASON``, so that no value of a person concerned
  can reach a line through it;
* the request id is the one the local caller gave in ``x-request-id`` when it is
  printable ASCII of at most 128 characters (:func:`request_id_from`), else a new one;
  the guard puts it in :data:`REQUEST_ID` for the duration of the call, and every event
  emitted in that call (and in the worker threads it hands work to) carries it. Work
  no call started (the dispatcher, hand-over, acknowledgements) carries none;
* :class:`JsonFormatter` writes one JSON object per line for every record, event or
  not; :class:`TextFormatter` writes ``key=value`` pairs after the event name. Neither
  writes a traceback: an exception is named by its type only.

Usage::

    configure_logging(log_format="json", level="INFO")
    token = REQUEST_ID.set(request_id_from(metadata))
    emit(Event.SUBMITTED, message_id=mid, agreement_id="at-be", agreement_version=1,
         partner="BE", exchange_type="civil_record")
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import uuid
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "REQUEST_ID",
    "Event",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "emit",
    "request_id_from",
]

EVENT_LOGGER = "pouch.events"
REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID = 128
MAX_LISTED_IDS = 20
"""A line lists at most this many message ids, and says how many there were."""

REQUEST_ID: ContextVar[str | None] = ContextVar("pouch_request_id", default=None)
"""The request id of the call under way, if any."""

_REASON = re.compile(r"[A-Z0-9_]{1,128}")
_IDENTIFIER = re.compile(r"[A-Za-z0-9._:@/+=-]{1,200}")

_log = logging.getLogger(EVENT_LOGGER)


class Event(StrEnum):
    """The stages and happenings an event line names."""

    SUBMITTED = "submitted"  # a local caller's message is in the outbox
    SENT = "sent"  # the partner signed for our message
    DELIVERED = "delivered"  # a partner's message is in our inbox
    RECEIPTED = "receipted"  # the partner registry's signed decision on our message
    HANDED_OVER = "handed_over"  # a partner's message given to our registry
    APPLIED = "applied"  # our registry applied it
    REJECTED = "rejected"  # our registry rejected it (reason)
    ACKNOWLEDGED = "acknowledged"  # the partner took our registry's decision
    ANSWERED = "answered"  # an identity confirmation answered
    CASE_EVENT = "case_event"  # a representation case moved (kind: the transition)
    CASE_EVENT_HANDED_OVER = "case_event_handed_over"  # the case system heard of it
    REFUSED = "refused"  # a request or message refused (reason)
    RETRY_SCHEDULED = "retry_scheduled"  # a failed attempt, tried again later (DEBUG)
    DEAD_LETTERED = "dead_lettered"  # given up on (reason)
    DEAD_LETTER_RESENT = "dead_letter_resent"  # an operator put it back in the outbox
    AGREEMENT_LOADED = "agreement_loaded"
    AGREEMENT_INACTIVE = "agreement_inactive"
    AGREEMENT_SUSPENDED = "agreement_suspended"
    AGREEMENT_RESUMED = "agreement_resumed"
    AGREEMENT_TERMINATED = "agreement_terminated"
    KEY_LOADED = "key_loaded"
    CERTIFICATE_LOADED = "certificate_loaded"
    CRL_RELOADED = "crl_reloaded"
    RELOADED = "reloaded"  # a reload of the running gateway: what changed, what was refused
    CHECKPOINT_SIGNED = "checkpoint_signed"
    CHECKPOINT_COSIGNED = "checkpoint_cosigned"
    CHECKPOINT_REFUSED = "checkpoint_refused"
    DEPENDENCY_FAILING = "dependency_failing"
    DEPENDENCY_STILL_FAILING = "dependency_still_failing"
    DEPENDENCY_RECOVERED = "dependency_recovered"


_WARNING_EVENTS = frozenset(
    {Event.DEAD_LETTERED, Event.DEPENDENCY_FAILING, Event.DEPENDENCY_STILL_FAILING}
)
_DEBUG_EVENTS = frozenset({Event.RETRY_SCHEDULED})


def emit(
    event: Event,
    *,
    message_id: str | None = None,
    agreement_id: str | None = None,
    agreement_version: int | None = None,
    partner: str | None = None,
    exchange_type: str | None = None,
    reason: str | None = None,
    kind: str | None = None,
    by: str | None = None,
    case_id: str | None = None,
    dependency: str | None = None,
    count: int | None = None,
    attempts: int | None = None,
    seconds: float | None = None,
    message_ids: Iterable[str] | None = None,
    request_id: str | None = None,
    changed: Iterable[str] | None = None,
    refused: Iterable[str] | None = None,
) -> None:
    """Write one event line (INFO; dead letters and failing dependencies WARNING,
    retries DEBUG). ``by`` is ``own`` or ``partner``: whose act an agreement event is.
    ``changed`` and ``refused`` name what a reload took in and what it kept out.
    ``request_id`` is that of the call a later stage continues (kept with the message);
    by default, the call under way's."""
    level = (
        logging.WARNING
        if event in _WARNING_EVENTS
        else logging.DEBUG
        if event in _DEBUG_EVENTS
        else logging.INFO
    )
    if not _log.isEnabledFor(level):
        return
    fields: dict[str, Any] = {
        "event": event.value,
        "request_id": _identifier(request_id) or REQUEST_ID.get(),
        "message_id": _identifier(message_id),
        "agreement_id": _identifier(agreement_id),
        "agreement_version": agreement_version,
        "partner": _identifier(partner),
        "exchange_type": _identifier(exchange_type),
        "reason": _reason(reason),
        "kind": _identifier(kind),
        "by": _identifier(by),
        "case_id": _identifier(case_id),
        "dependency": _identifier(dependency),
        "count": count,
        "attempts": attempts,
        "seconds": None if seconds is None else round(seconds, 3),
    }
    if message_ids is not None:
        listed = sorted({m for m in message_ids if _IDENTIFIER.fullmatch(m)})
        fields["message_ids"] = listed[:MAX_LISTED_IDS]
        fields["message_ids_total"] = len(listed)
    for name, listed_names in (("changed", changed), ("refused", refused)):
        if listed_names is not None:
            fields[name] = sorted({_identifier(n) or "" for n in listed_names} - {""})
    present = {k: v for k, v in fields.items() if v is not None}
    _log.log(level, event.value, extra={"pouch_event": present})


def _reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    return reason if _REASON.fullmatch(reason) else "UNREADABLE_REASON"


def _identifier(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    return value if _IDENTIFIER.fullmatch(value) else "UNREADABLE_IDENTIFIER"


def request_id_from(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The caller's ``x-request-id`` if it is printable ASCII of 1 to 128 characters,
    else a new one."""
    for key, value in metadata or ():
        if key.lower() == REQUEST_ID_HEADER and isinstance(value, str):
            if 0 < len(value) <= MAX_REQUEST_ID and all(" " <= c <= "~" for c in value):
                return value
            break
    return uuid.uuid4().hex


def _time(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event_fields(record: logging.LogRecord) -> dict[str, Any] | None:
    fields = getattr(record, "pouch_event", None)
    return fields if isinstance(fields, dict) else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, then the event's fields or the
    record's message; an exception by its type name only."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
        }
        fields = _event_fields(record)
        if fields is not None:
            line.update(fields)
        else:
            line["message"] = record.getMessage()
            request_id = REQUEST_ID.get()
            if request_id is not None:
                line["request_id"] = request_id
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = record.exc_info[0].__name__
        return json.dumps(line, ensure_ascii=True, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``; an event's message is its name and ``key=value``
    pairs; an exception by its type name only."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _event_fields(record)
        if fields is not None:
            pairs = " ".join(
                f"{k}={','.join(v) if isinstance(v, list) else v}"
                for k, v in fields.items()
                if k != "event"
            )
            message = f"{fields['event']} {pairs}".rstrip()
        else:
            message = record.getMessage()
        line = f"{_time(record)} {record.levelname} {record.name}: {message}"
        if record.exc_info and record.exc_info[0] is not None:
            line += f" [{record.exc_info[0].__name__}]"
        return line


FORMATTERS: dict[str, type[logging.Formatter]] = {"text": TextFormatter, "json": JsonFormatter}


def configure_logging(*, log_format: str, level: str) -> None:
    """Root logging to stderr in ``log_format`` at ``level``. gRPC's C core writes only
    errors unless the operator chose otherwise (``GRPC_VERBOSITY``): its own lines are
    not events and would drown them."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FORMATTERS[log_format]())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries' own lines stay at WARNING even at DEBUG: SQLAlchemy's INFO and DEBUG
    # lines quote statement parameters, which hold the people's data.
    for library in ("grpc", "asyncio", "sqlalchemy", "alembic", "urllib3"):
        logging.getLogger(library).setLevel(logging.WARNING)
