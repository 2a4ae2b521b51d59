"""Channels to partner gateways' peer APIs, one per partner, opened lazily.

Each channel trusts only that partner's CA (from its pinned trust bundle) and
presents this gateway's own TLS certificate, so the partner recognises us by our
CA exactly as we recognise it by its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc
import grpc.aio

from gateway.connect import ClientIdentity, secure_channel
from pouch.v1 import peer_pb2_grpc


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

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(grace=None)
        self._channels.clear()
        self._stubs.clear()
