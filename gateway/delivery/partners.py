"""Channels to partner gateways' peer APIs, one per partner, opened lazily.

Each channel trusts only that partner's CAs (from its bundles in force: the pinned CA,
or a CA it renewed by cross-signing once that bundle is taken, with the replaced CA
during the overlap) and presents this gateway's own TLS certificate, so the partner
recognises us by our CA exactly as we recognise it by its own. When the CAs trusted for
a partner change, the next call opens a new channel; calls in flight finish on the old
one, closed with the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import grpc.aio

from gateway.connect import RECONNECT_OPTIONS, ClientIdentity
from gateway.delivery.partner_contact import PartnerContacts
from gateway.errors import SEND_SINGLY
from gateway.pki.bundle import TrustBundle
from gateway.pki.bundle_chain import PartnerBundles
from gateway.pki.crl import CrlWatcher
from gateway.pki.keys import certificate_pem
from pouch.v1 import peer_pb2_grpc

log = logging.getLogger(__name__)

#: How long a partner's replaced bundle still verifies after it announced a new one.
DEFAULT_BUNDLE_OVERLAP = timedelta(days=7)
#: Where, in the state directory, the bundles partners announced are kept.
PARTNER_BUNDLES_DIR = "partner-bundles"


@dataclass(frozen=True)
class Partner:
    """A partner state as this gateway holds it at run time: its pinned trust bundle,
    the address of its peer API, and its revocation list (``None``: none configured)."""

    state: str
    bundle: TrustBundle
    endpoint: str
    crl: CrlWatcher | None = None


class PartnerChannels:
    """Opens and caches one mutual-TLS channel per partner state; every call on them is
    recorded in ``contacts`` (:mod:`gateway.delivery.partner_contact`). Holds the
    partners' bundles in force (:attr:`bundles`); those partners announced are kept in
    ``bundle_store`` across restarts."""

    def __init__(
        self,
        partners: Mapping[str, Partner],
        *,
        certificate_chain: bytes,
        private_key: bytes,
        contacts: PartnerContacts | None = None,
        bundle_overlap: timedelta = DEFAULT_BUNDLE_OVERLAP,
        bundle_store: Path | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._partners = dict(partners)
        self._clock = clock
        self._roots: dict[str, bytes] = {}
        self._replaced: list[grpc.aio.Channel] = []
        self._bundles = PartnerBundles(
            {state: p.bundle for state, p in self._partners.items()},
            overlap=bundle_overlap,
            store=bundle_store,
        )
        self.contacts = contacts if contacts is not None else PartnerContacts()
        self._chain = certificate_chain
        self._key = private_key
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, peer_pb2_grpc.PeerServiceAsyncStub] = {}
        self._no_batches: set[str] = set()  # partners whose release has no batch methods

    def peer(self, state: str) -> peer_pb2_grpc.PeerServiceAsyncStub:
        partner = self._partners.get(state)
        if partner is None:
            raise KeyError(f"no peer endpoint configured for {state}")
        roots = b"".join(
            certificate_pem(ca) for ca in self._bundles.trusted_cas(state, self._clock())
        )
        stub = self._stubs.get(state)
        if stub is not None and self._roots.get(state) == roots:
            return stub
        if state in self._channels:
            log.info("partner %s: its trusted CAs changed, a new channel trusts them", state)
            self._replaced.append(self._channels.pop(state))
        identity = ClientIdentity(
            trusted_ca=roots,
            certificate_chain=self._chain,
            private_key=self._key,
        )
        channel = grpc.aio.secure_channel(
            partner.endpoint,
            identity.credentials(),
            options=RECONNECT_OPTIONS,
            interceptors=[self.contacts.interceptor(state)],
        )
        self._channels[state] = channel
        self._roots[state] = roots
        stub = self._stubs[state] = peer_pb2_grpc.PeerServiceStub(channel)
        return stub

    @property
    def states(self) -> tuple[str, ...]:
        return tuple(sorted(self._partners))

    @property
    def bundles(self) -> PartnerBundles:
        """Each partner's trust bundle in force, by state: the pinned one, or the last
        the partner announced (:mod:`gateway.delivery.bundle_announcement`). Live: a
        component holding it sees an announced bundle at once."""
        return self._bundles

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
        for channel in (*self._replaced, *self._channels.values()):
            await channel.close(grace=None)
        self._replaced.clear()
        self._channels.clear()
        self._stubs.clear()
