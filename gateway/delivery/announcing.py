"""Announcing this state's next trust bundle to every partner (``pouch pki announce``).

Each partner is called with ``PeerService.AnnounceBundle`` over mutual TLS, trusting
only that partner's CA and presenting this gateway's TLS identity, concurrently. A
partner that cannot be reached (``UNAVAILABLE``, a deadline, a refused connection) is
tried again with the delivery backoff until the announcement's deadline; a partner
that refuses the bundle (its reason code: ``BUNDLE_OTHER_CA``, ``BUNDLE_NOT_NEWER``…)
is not asked again, since the same bundle would be refused the same way.

Usage::

    outcomes = await announce_bundle(bundle_bytes, targets, identity, backoff=...,
                                     deadline_s=600, call_timeout_s=10)
    all(o.taken for o in outcomes.values())
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
import grpc.aio

from gateway.connect import RECONNECT_OPTIONS, ClientIdentity
from gateway.delivery.backoff import Backoff
from gateway.errors import status_details
from pouch.v1 import peer_pb2, peer_pb2_grpc

_RETRIED = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN}
)


@dataclass(frozen=True)
class AnnouncementTarget:
    """A partner's peer API and the CA certificate (PEM) it is trusted by."""

    state: str
    endpoint: str
    trusted_ca: bytes


@dataclass(frozen=True)
class AnnouncementOutcome:
    """``digest``: the partner took the bundle; else ``reason`` says why not
    (its refusal's reason code, or ``UNREACHABLE`` once the deadline passed)."""

    state: str
    attempts: int
    digest: str = ""
    reason: str = ""

    @property
    def taken(self) -> bool:
        return bool(self.digest)


async def _announce_one(
    bundle: bytes,
    target: AnnouncementTarget,
    own: ClientIdentity,
    *,
    backoff: Backoff,
    deadline: float,
    call_timeout_s: float,
    rng: random.Random,
) -> AnnouncementOutcome:
    identity = ClientIdentity(
        trusted_ca=target.trusted_ca,
        certificate_chain=own.certificate_chain,
        private_key=own.private_key,
    )
    loop = asyncio.get_running_loop()
    attempts = 0
    async with grpc.aio.secure_channel(
        target.endpoint, identity.credentials(), options=RECONNECT_OPTIONS
    ) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        while True:
            attempts += 1
            timeout = max(0.1, min(call_timeout_s, deadline - loop.time()))
            try:
                answer = await stub.AnnounceBundle(
                    peer_pb2.AnnounceBundleRequest(bundle=bundle), timeout=timeout
                )
                return AnnouncementOutcome(target.state, attempts, digest=answer.bundle_digest)
            except grpc.aio.AioRpcError as e:
                if e.code() not in _RETRIED:
                    reason = status_details(e).reason or e.code().name
                    return AnnouncementOutcome(target.state, attempts, reason=reason)
            wait = backoff.delay_s(attempts, rng)
            if loop.time() + wait >= deadline:
                return AnnouncementOutcome(target.state, attempts, reason="UNREACHABLE")
            await asyncio.sleep(wait)


async def announce_bundle(
    bundle: bytes,
    targets: Mapping[str, AnnouncementTarget],
    own: ClientIdentity,
    *,
    backoff: Backoff,
    deadline_s: float,
    call_timeout_s: float,
    rng: random.Random | None = None,
) -> dict[str, AnnouncementOutcome]:
    """Each partner's answer to ``bundle`` (a bundle file), by state."""
    deadline = asyncio.get_running_loop().time() + deadline_s
    chance = rng if rng is not None else random.SystemRandom()
    outcomes = await asyncio.gather(
        *(
            _announce_one(
                bundle,
                target,
                own,
                backoff=backoff,
                deadline=deadline,
                call_timeout_s=call_timeout_s,
                rng=chance,
            )
            for target in targets.values()
        )
    )
    return {o.state: o for o in outcomes}
