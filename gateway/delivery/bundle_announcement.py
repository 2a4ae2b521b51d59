"""A partner's announcement of its new trust bundle (``PeerService.AnnounceBundle``).

A partner that rotated a key sends the new version of its bundle, signed by its state
CA, over the peer API. The caller is already the TLS-authenticated partner (its
certificate chains to the CA pinned for it); the bundle is then taken only as
:func:`~gateway.pki.bundle_chain.check_successor` allows (same state, the CA
certificate in force or a renewed CA it cross-signed, issued later), and every component
holding the
partner's bundles (envelope and receipt verification, cosignature checks, the channels)
sees it at once through the live :class:`~gateway.pki.bundle_chain.PartnerBundles`.

Each decision is one audit entry: ``KEY_CHANGED`` (purpose ``partner_bundle``, the
bundle file's digest as payload digest) when taken, a refusal with its reason code
(``BUNDLE_INVALID``, ``BUNDLE_OTHER_STATE``, ``BUNDLE_OTHER_CA``, ``BUNDLE_NOT_NEWER``)
otherwise, and the bundle in force stays. The announcement of the bundle already in
force is answered as taken, so a partner whose answer was lost may send it again.

Usage::

    announcements = BundleAnnouncements(channels.bundles, audit, clock=clock)
    digest = announcements.receive("BE", bundle_file_bytes)   # blocking: in a thread
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from gateway.audit.entry import Decision, EventKind
from gateway.audit.recorder import AuditRecorder
from gateway.errors import AuthenticationRejected, Rejected
from gateway.pki.bundle import BundleError, load_trust_bundle
from gateway.pki.bundle_chain import (
    BUNDLE_NOT_NEWER,
    PartnerBundles,
    SuccessionRefused,
)

log = logging.getLogger(__name__)

MAX_BUNDLE_BYTES = 64 * 1024
EXCHANGE_TYPE = "bundle_announcement"
AUDIT_PURPOSE = "partner_bundle"


class BundleRefused(AuthenticationRejected):
    """An announced bundle not signed by the partner's pinned CA, or not its own."""


class BundleNotNewer(Rejected):
    """An announced bundle no later than the one in force (an old version replayed)."""

    reason = BUNDLE_NOT_NEWER


class BundleAnnouncements:
    """Takes partners' announced bundles into ``bundles``, auditing each decision."""

    def __init__(
        self,
        bundles: PartnerBundles,
        audit: AuditRecorder,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self._bundles = bundles
        self._audit = audit
        self._clock = clock

    def receive(self, peer_state: str, data: bytes) -> str:
        """Blocking. The digest of ``peer_state``'s bundle in force once ``data`` (a
        bundle file) is taken; :class:`BundleRefused` or :class:`BundleNotNewer` if not."""
        if peer_state in self._bundles and self._already_in_force(peer_state, data):
            return self._bundles[peer_state].digest
        try:
            if len(data) > MAX_BUNDLE_BYTES:
                raise SuccessionRefused(
                    f"announced bundle is over {MAX_BUNDLE_BYTES} bytes", reason="BUNDLE_INVALID"
                )
            bundle = self._bundles.take(peer_state, data, self._clock())
        except SuccessionRefused as e:
            error: Rejected = (
                BundleNotNewer(str(e))
                if e.reason == BUNDLE_NOT_NEWER
                else BundleRefused(str(e), reason=e.reason)
            )
            log.warning("bundle announced by %s refused: %s", peer_state, e)
            self._audit.refused(error, exchange_type=EXCHANGE_TYPE, peer_state=peer_state)
            raise error from e
        self._audit.record(
            EventKind.KEY_CHANGED,
            Decision.RECORDED,
            purpose=AUDIT_PURPOSE,
            peer_state=peer_state,
            payload=bundle.canonical_body(),
        )
        log.info("bundle of %s taken: %s issued %s", peer_state, bundle.digest, bundle.issued_at)
        return bundle.digest

    def _already_in_force(self, peer_state: str, data: bytes) -> bool:
        if len(data) > MAX_BUNDLE_BYTES:
            return False
        try:
            return load_trust_bundle(data).digest == self._bundles[peer_state].digest
        except BundleError:
            return False
