"""Mutual-TLS channels to a gateway's listeners, for callers, partners and tools.

A channel trusts exactly one CA (the state whose gateway it calls) and presents
exactly one client certificate. The TLS target name is checked against the
server certificate's DNS or IP names, as gRPC does for any secure channel.

gRPC's TLS offers the post-quantum hybrid key exchange X25519MLKEM768 first, so a
channel to a current gateway negotiates it. Which group a channel's connection did
negotiate cannot be read here: grpc Python gives a client call no auth context (that
is the server's alone), and no way to choose the groups offered. The partner's peer
listener counts it (``pouch_peer_key_exchange_total`` on its side).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio


@dataclass(frozen=True)
class ClientIdentity:
    """The PEM files a caller presents and trusts."""

    trusted_ca: bytes
    certificate_chain: bytes
    private_key: bytes = field(repr=False)

    @classmethod
    def from_files(
        cls, *, trusted_ca: Path, certificate: Path, private_key: Path
    ) -> ClientIdentity:
        return cls(
            trusted_ca=trusted_ca.read_bytes(),
            certificate_chain=certificate.read_bytes(),
            private_key=private_key.read_bytes(),
        )

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.trusted_ca,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


# gRPC's default reconnect backoff grows to two minutes: a partner that restarts would
# look down long after it is back. A second at most keeps retries cheap and prompt.
RECONNECT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def secure_channel(target: str, identity: ClientIdentity) -> grpc.aio.Channel:
    """An asyncio channel to ``target`` (HOST:PORT) over mutual TLS, reconnecting promptly."""
    return grpc.aio.secure_channel(target, identity.credentials(), options=RECONNECT_OPTIONS)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying a local caller's token."""
    return (("authorization", f"Bearer {token}"),)
