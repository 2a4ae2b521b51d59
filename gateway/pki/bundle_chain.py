"""A partner's trust bundle over time: the pinned bundle and the versions its state
announced after it.

A state rotates its signing, TLS or audit keys by issuing a new bundle version under the
same CA, and renews its CA by cross-signing (:mod:`gateway.pki.ca_renewal`). The partner
takes a bundle without a restart when, and only when:

* it is a valid ``pouch.trust-bundle/v3`` bundle (:func:`load_trust_bundle`);
* it is for the same state (``BUNDLE_OTHER_STATE``);
* its CA certificate is byte for byte the CA certificate of the bundle in force, and so
  of the bundle pinned by digest in the configuration and the agreements: the pin is
  thereby a pin of the CA, extended along a chain of bundles each signed by it; or
* its CA is a new one and the bundle carries a ``ca_cross_certificate`` issued by the CA
  in force (its signature verifies with that CA's key and names it as issuer), for the
  new CA's subject and exactly its public key, a CA, valid at the moment it is taken.
  The chain then goes on from the new CA: later bundles under it are taken as usual.
  Anything else is ``BUNDLE_OTHER_CA``;
* its ``issued_at`` is later than that of the bundle in force (``BUNDLE_NOT_NEWER``), so
  an older version replayed cannot bring back a retired key.

Anything else is refused (fail closed) and the bundle in force stays.

The bundle it replaces still verifies signatures made with its keys for an overlap
window (``overlap``, from the moment of the switch), so messages and receipts signed
just before the switch are not refused; after the window its signing key is refused.
Evidence already stored was verified when it came in; the retired bundles stay listed
(:meth:`PartnerBundles.held`) for checking it again.

Usage::

    bundles = PartnerBundles({"BE": pinned_be}, overlap=timedelta(days=7))
    bundles["BE"]                      # the bundle in force
    bundles.take("BE", announced, now) # raises SuccessionRefused, or the new bundle
    verifying_bundles(bundles, "BE", now)  # in force first, then those in overlap
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from gateway.pki.bundle import BundleError, TrustBundle, load_trust_bundle
from gateway.pki.keys import as_utc, certificate_der, write_public_file

BUNDLE_INVALID = "BUNDLE_INVALID"
BUNDLE_OTHER_STATE = "BUNDLE_OTHER_STATE"
BUNDLE_OTHER_CA = "BUNDLE_OTHER_CA"
BUNDLE_NOT_NEWER = "BUNDLE_NOT_NEWER"
BUNDLE_UNKNOWN_PARTNER = "BUNDLE_UNKNOWN_PARTNER"
_TIME = "%Y-%m-%dT%H:%M:%SZ"
_FILE_TIME = "%Y%m%dT%H%M%SZ"


class SuccessionRefused(BundleError):
    """An announced bundle that may not succeed the one in force; ``reason`` is stable."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _cross_signed(in_force: TrustBundle, bundle: TrustBundle, now: datetime) -> bool:
    """Whether the CA in force certified ``bundle``'s new CA through its cross
    certificate: issued by it, for the new CA's subject and key, a CA, valid at ``now``."""
    cross = bundle.ca_cross_certificate
    if cross is None:
        return False
    try:
        cross.verify_directly_issued_by(in_force.ca_certificate)
        is_ca = cross.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    moment = as_utc(now)
    return (
        is_ca
        and cross.subject == bundle.ca_certificate.subject
        and cross.public_key() == bundle.ca_certificate.public_key()
        and cross.not_valid_before_utc <= moment <= cross.not_valid_after_utc
    )


def check_successor(in_force: TrustBundle, announced: bytes, now: datetime) -> TrustBundle:
    """The announced bundle, fully verified, if it may succeed ``in_force`` at ``now``."""
    try:
        bundle = load_trust_bundle(announced)
    except BundleError as e:
        raise SuccessionRefused(f"announced bundle refused: {e}", reason=BUNDLE_INVALID) from e
    if bundle.state != in_force.state:
        raise SuccessionRefused(
            f"announced bundle is for {bundle.state}, not {in_force.state}",
            reason=BUNDLE_OTHER_STATE,
        )
    if certificate_der(bundle.ca_certificate) != certificate_der(
        in_force.ca_certificate
    ) and not _cross_signed(in_force, bundle, now):
        raise SuccessionRefused(
            f"announced bundle of {bundle.state} is signed by another CA than the pinned "
            "one, and no cross certificate of that CA links it to the pinned one",
            reason=BUNDLE_OTHER_CA,
        )
    if bundle.issued_at <= in_force.issued_at:
        raise SuccessionRefused(
            f"announced bundle of {bundle.state} was issued at {bundle.issued_at:{_TIME}}, "
            f"not after the one in force ({in_force.issued_at:{_TIME}})",
            reason=BUNDLE_NOT_NEWER,
        )
    return bundle


@dataclass(frozen=True)
class _Predecessor:
    bundle: TrustBundle
    overlap_until: datetime


@dataclass(frozen=True)
class _Chain:
    pinned: TrustBundle
    current: TrustBundle
    predecessors: tuple[_Predecessor, ...] = ()


class PartnerBundles(Mapping[str, TrustBundle]):
    """Each partner's bundle in force, by state: a live mapping, so everything holding it
    sees a taken bundle at once. Safe to share across threads."""

    def __init__(
        self,
        pinned: Mapping[str, TrustBundle],
        *,
        overlap: timedelta,
        store: Path | None = None,
    ) -> None:
        if overlap < timedelta(0):
            raise ValueError("overlap must not be negative")
        for state, bundle in pinned.items():
            if bundle.state != state:
                raise ValueError(f"bundle for {state} is the bundle of {bundle.state}")
        self._chains = {state: _Chain(bundle, bundle) for state, bundle in pinned.items()}
        self._overlap = overlap
        self._lock = threading.Lock()
        self._store = store
        if store is not None:
            self._restore(store)

    def _restore(self, store: Path) -> None:
        """Take again, in the order they were taken, the bundles announced before a
        restart; each is checked again against the chain from the pinned bundle, so a
        file put there by hand counts no more than an announcement would."""
        for state in self._chains:
            folder = store / state
            kept = []
            for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
                try:
                    taken_at = datetime.strptime(path.name.split("-", 1)[0], _FILE_TIME)
                    data = path.read_bytes()
                    kept.append((load_trust_bundle(data).issued_at, taken_at, path, data))
                except (ValueError, OSError) as e:
                    raise SuccessionRefused(f"{path}: {e}", reason=BUNDLE_INVALID) from e
            for _, taken_at, path, data in sorted(kept):
                try:
                    self._take(state, data, taken_at.replace(tzinfo=UTC))
                except SuccessionRefused as e:
                    if e.reason == BUNDLE_NOT_NEWER:
                        continue  # the configuration pins this bundle, or a later one, now
                    raise SuccessionRefused(f"{path}: {e}", reason=e.reason) from e

    def __getitem__(self, state: str) -> TrustBundle:
        return self._chains[state].current

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._chains))

    def __len__(self) -> int:
        return len(self._chains)

    def pinned(self, state: str) -> TrustBundle:
        """The bundle the configuration and the agreements pin by digest."""
        return self._chains[state].pinned

    def take(self, state: str, announced: bytes, now: datetime) -> TrustBundle:
        """Put ``announced`` in force for ``state``; the one it replaces verifies until
        ``now`` + overlap. :class:`SuccessionRefused` leaves everything as it was.
        With a store, the bundle is written there first, so a restart keeps it."""
        with self._lock:
            return self._take(state, announced, now, keep=self._store is not None)

    def _take(
        self, state: str, announced: bytes, now: datetime, *, keep: bool = False
    ) -> TrustBundle:
        chain = self._chains.get(state)
        if chain is None:
            raise SuccessionRefused(f"no pinned bundle for {state}", reason=BUNDLE_UNKNOWN_PARTNER)
        bundle = check_successor(chain.current, announced, now)
        until = as_utc(now) + self._overlap
        if keep and self._store is not None:
            name = f"{as_utc(now):{_FILE_TIME}}-{bundle.digest.removeprefix('sha256:')}.json"
            (self._store / state).mkdir(mode=0o700, parents=True, exist_ok=True)
            write_public_file(self._store / state / name, announced)
        self._chains[state] = _Chain(
            chain.pinned, bundle, (_Predecessor(chain.current, until), *chain.predecessors)
        )
        return bundle

    def verifying(self, state: str, now: datetime) -> tuple[TrustBundle, ...]:
        """The bundles whose signing keys verify for ``state`` at ``now``: the one in
        force, then each replaced one still in its overlap window, newest first."""
        chain = self._chains[state]
        moment = as_utc(now)
        return (
            chain.current,
            *(p.bundle for p in chain.predecessors if moment < p.overlap_until),
        )

    def trusted_cas(self, state: str, now: datetime) -> tuple[x509.Certificate, ...]:
        """The CAs whose certificates speak as ``state`` at ``now`` (TLS, CRLs): those of
        the bundles that verify, so a renewed CA from the moment its bundle is taken and
        the one it replaced until the overlap ends; each once, the one in force first."""
        seen: dict[bytes, x509.Certificate] = {}
        for bundle in self.verifying(state, now):
            seen.setdefault(certificate_der(bundle.ca_certificate), bundle.ca_certificate)
        return tuple(seen.values())

    def held(self, state: str) -> tuple[TrustBundle, ...]:
        """Every bundle ever in force for ``state``, newest first, retired ones included:
        the keys stored evidence may have been signed with."""
        chain = self._chains[state]
        return (chain.current, *(p.bundle for p in chain.predecessors))


def verifying_bundles(
    bundles: Mapping[str, TrustBundle], state: str, now: datetime
) -> tuple[TrustBundle, ...]:
    """The bundles whose keys verify ``state``'s signatures at ``now``: with a
    :class:`PartnerBundles`, those in their overlap window too; else the one given."""
    if isinstance(bundles, PartnerBundles):
        return bundles.verifying(state, now)
    return (bundles[state],)
