"""Channels to partner gateways' peer APIs, one per partner, opened lazily.

Each channel trusts only that partner's CA (from its pinned trust bundle) and
presents this gateway's own TLS certificate, so the partner recognises us by our
CA exactly as we recognise it by its own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
import grpc.aio

from gateway.connect import ClientIdentity, secure_channel
from gateway.delivery.batches import SEND_SINGLY
from pouch.v1 import peer_pb2_grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartnerEndpoint:
    state: str
    target: str
    ca_pem: bytes


class PartnerChannels:
    """Opens and caches one mutual-TLS channel per partner state."""

    def __init__(
        self,
        endpoints: Mapping[str, PartnerEndpoint],
        *,
        certificate_chain: bytes,
        private_key: bytes,
    ) -> None:
        self._endpoints = dict(endpoints)
        self._chain = certificate_chain
        self._key = private_key
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, peer_pb2_grpc.PeerServiceAsyncStub] = {}
        self._no_batches: set[str] = set()  # partners whose release has no batch methods

    def peer(self, state: str) -> peer_pb2_grpc.PeerServiceAsyncStub:
        stub = self._stubs.get(state)
        if stub is None:
            endpoint = self._endpoints.get(state)
            if endpoint is None:
                raise KeyError(f"no peer endpoint configured for {state}")
            identity = ClientIdentity(
                trusted_ca=endpoint.ca_pem, certificate_chain=self._chain, private_key=self._key
            )
            channel = secure_channel(endpoint.target, identity)
            self._channels[state] = channel
            stub = self._stubs[state] = peer_pb2_grpc.PeerServiceStub(channel)
        return stub

    def takes_batches(self, state: str) -> bool:
        """Whether ``state``'s gateway is sent batch calls (until it shows it has none)."""
        return state not in self._no_batches

    def batch_failed(self, state: str, code: grpc.StatusCode) -> bool:
        """Whether the items of a batch call to ``state`` that ended with ``code`` go
        again one call each. A partner without the batch methods (``UNIMPLEMENTED``) is
        remembered, and gets single calls from then on."""
        if code == grpc.StatusCode.UNIMPLEMENTED and state not in self._no_batches:
            self._no_batches.add(state)
            log.info("partner %s takes no batches: one call per item", state)
        return code in SEND_SINGLY

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(grace=None)
        self._channels.clear()
        self._stubs.clear()
