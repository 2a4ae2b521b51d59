"""Identity confirmations as the benchmarks make them, and their raw counterpart.

BE's reference registry is seeded with made-up passports; AT's consulate asks for
confirmations of claims about them: half match, a quarter are partial (another given
name), a quarter name no document. The raw counterpart makes the same number of unary
round trips (1 KiB out, about 300 bytes back) through the relay chain.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

from bench.relay import CALL, stamped
from bench.rounds import Measured, Side
from gateway.connect import ClientIdentity, bearer, secure_channel
from pouch.v1 import common_pb2, identity_pb2, identity_pb2_grpc
from pouch_devtools.demo.deployment import Site, agreement_id_for
from pouch_devtools.reference_registry import ReferenceRegistry

PURPOSE = "emergency_travel_document"
REQUEST_BYTES = 1024


def _number(index: int) -> str:
    return f"BE{index:07d}"


def _person(index: int) -> tuple[common_pb2.PersonName, common_pb2.CivilDate]:
    name = common_pb2.PersonName(
        given_names=[f"Given{index % 97:02d}"], family_names=[f"Family{index:05d}"]
    )
    born = common_pb2.CivilDate(year=1950 + index % 50, month=1 + index % 12, day=1 + index % 28)
    return name, born


def seed(site: Site, documents: int) -> None:
    """Put ``documents`` passports in ``site``'s reference registry."""
    registry = ReferenceRegistry(site.registry_db)
    try:
        for index in range(documents):
            name, born = _person(index)
            registry.add_document(
                document_type=identity_pb2.DOCUMENT_TYPE_PASSPORT,
                number=_number(index),
                name=name,
                date_of_birth=born,
                sex=common_pb2.SEX_FEMALE,
                nationality="BE",
            )
    finally:
        registry.close()


def claim(index: int, documents: int) -> identity_pb2.IdentityClaim:
    known = index % documents
    name, born = _person(known)
    number = _number(known)
    if index % 4 == 2:  # partial: another given name
        name = common_pb2.PersonName(given_names=["Other"], family_names=name.family_names)
    elif index % 4 == 3:  # no document of that number
        number = f"ZZ{index:07d}"
    return identity_pb2.IdentityClaim(
        document_type=identity_pb2.DOCUMENT_TYPE_PASSPORT,
        document_number=number,
        name=name,
        date_of_birth=born,
        sex=common_pb2.SEX_FEMALE,
        nationality="BE",
    )


async def _timed_calls(
    one: Callable[[int], Awaitable[None]], count: int, in_flight: int
) -> tuple[float, list[float]]:
    """``count`` calls, ``in_flight`` at a time."""
    latencies: list[float] = []
    queue = iter(range(count))

    async def worker() -> None:
        for index in queue:
            started = time.perf_counter()
            await one(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - started, latencies


async def confirm(
    at: Site, count: int, in_flight: int, documents: int, answers: Counter[str] | None = None
) -> Measured:
    """``count`` confirmations through AT's local API; ``answers`` counts the results."""
    metadata = bearer(at.token(["identity:query"], now=time.time()))
    agreement_id = agreement_id_for("AT", "BE")
    async with secure_channel(at.local_target, at.client_identity()) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)

        async def one(index: int) -> None:
            request = identity_pb2.ConfirmIdentityRequest(
                partner_state="BE",
                agreement_id=agreement_id,
                purpose=PURPOSE,
                claim=claim(index, documents),
            )
            answer = await stub.ConfirmIdentity(request, metadata=metadata, timeout=60)
            if answers is not None:
                answers[identity_pb2.MatchResult.Name(answer.result)] += 1

        elapsed, latencies = await _timed_calls(one, count, in_flight)
    return Measured(count, elapsed, latencies)


async def relay_round_trips(
    target: str, identity: ClientIdentity, count: int, in_flight: int
) -> Measured:
    """``count`` unary round trips of 1 KiB through the relay chain."""
    async with secure_channel(target, identity) as channel:
        call = channel.unary_unary(CALL, request_serializer=None, response_deserializer=None)

        async def one(index: int) -> None:
            await call(stamped(REQUEST_BYTES), timeout=60)

        elapsed, latencies = await _timed_calls(one, count, in_flight)
    return Measured(count, elapsed, latencies)


def gateway_side(
    at: Site, count: int, in_flight: int, documents: int, processes: Sequence[str]
) -> Side:
    """Rounds of ``count`` confirmations through AT, after ``in_flight`` warm-up calls."""
    return Side(
        lambda: asyncio.run(confirm(at, count, in_flight, documents)),
        processes,
        prepare=lambda: asyncio.run(confirm(at, in_flight, in_flight, documents)),
    )


def relay_side(
    target: str, identity: ClientIdentity, count: int, in_flight: int, processes: Sequence[str]
) -> Side:
    """Rounds of ``count`` round trips through the relay chain, after a warm-up."""

    def calls(n: int) -> Measured:
        return asyncio.run(relay_round_trips(target, identity, n, in_flight))

    return Side(lambda: calls(count), processes, prepare=lambda: calls(in_flight))
