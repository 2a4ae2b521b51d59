"""Several deliveries or acknowledgements to one partner in one peer call.

``DeliverBatch`` and ``AcknowledgeBatch`` carry up to :data:`MAX_ITEMS` items, each
handled exactly as its own ``Deliver`` or ``Acknowledge`` call would be, and answer
one result per item, in order: the receipt (or nothing) or the refusal, as an
``ItemRefusal`` holding the status code and reason code the single call would have
ended with. One call instead of one per item is most of what the sender saves; what
is stored, audited and signed is the same.

A partner that does not serve the batch methods (an older release), or refuses a
batch's shape, is sent the same items one call each: see :data:`gateway.errors.SEND_SINGLY`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import NoReturn, TypeVar

from gateway.errors import (
    FieldViolation,
    PouchError,
    ValidationRejected,
    unexpected_summary,
)
from pouch.v1 import peer_pb2

log = logging.getLogger(__name__)

MAX_ITEMS = 64
"""At most this many items per batch call; the receiver refuses more."""

MAX_BYTES = 1024 * 1024
"""A sender closes a batch before its items pass this size, well under the 4 MiB a
gateway accepts by default; an item larger than this goes in a batch of its own."""

T = TypeVar("T")


def require_batch(field: str, count: int) -> None:
    """:class:`ValidationRejected` naming ``field`` unless it holds 1 to MAX_ITEMS items."""
    if not 1 <= count <= MAX_ITEMS:
        raise ValidationRejected(
            [FieldViolation(field, f"must hold at least 1 and at most {MAX_ITEMS} items")],
            reason="BATCH_SIZE",
        )


def chunks(items: Sequence[T], size_of: Callable[[T], int]) -> Iterator[list[T]]:
    """``items`` in order, cut into batches of at most MAX_ITEMS items and MAX_BYTES."""
    batch: list[T] = []
    size = 0
    for item in items:
        item_size = size_of(item)
        if batch and (len(batch) == MAX_ITEMS or size + item_size > MAX_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item_size
    if batch:
        yield batch


def refusal_of(error: Exception, method: str) -> peer_pb2.ItemRefusal:
    """What one item's own call would have answered ``error`` with.

    A :class:`PouchError` keeps its code, reason and safe message; anything else is a
    bug, logged by type and location only and answered ``INTERNAL`` with nothing inside.
    """
    if not isinstance(error, PouchError):
        log.error("unexpected error in an item of %s: %s", method, unexpected_summary(error))
        error = PouchError("internal error", reason="INTERNAL")
    return peer_pb2.ItemRefusal(
        code=error.code.value[0], reason=error.reason, message=error.message
    )


async def answer_each(
    method: str, handlings: Sequence[Awaitable[T]]
) -> list[T | peer_pb2.ItemRefusal]:
    """Each item's answer, in order, the items handled together; a failed item's is its
    refusal (:func:`refusal_of`), and the other items are not affected by it."""
    answers = await asyncio.gather(*handlings, return_exceptions=True)
    results: list[T | peer_pb2.ItemRefusal] = []
    for answer in answers:
        if isinstance(answer, Exception):
            results.append(refusal_of(answer, method))
        elif isinstance(answer, BaseException):
            raise answer  # cancelled: the call is over
        else:
            results.append(answer)
    return results


async def refused(error: Exception) -> NoReturn:
    """An item already refused before its handling, for :func:`answer_each`."""
    raise error
