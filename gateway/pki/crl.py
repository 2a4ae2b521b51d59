"""Certificate revocation lists: issuing them, and trusting only verified ones.

Guarantees:

* A :class:`RevocationList` only exists for a CRL whose issuer name and signature
  match the CA certificate it was checked against; a CRL from another CA (another
  state) raises :class:`ValueError`.
* :func:`revoke` is idempotent and writes atomically: readers see the old CRL or
  the new one, never half a file; each re-signed CRL carries a higher CRL number.
* :class:`CrlWatcher` applies a new CRL file without a restart when the file
  changes, and never lets a bad file weaken revocation: a file that fails
  verification, or one older (lower CRL number) than the list in force, is
  ignored and the last good list stays in force. Only the first load may fail.
* A CRL is honoured only while fresh: once its ``nextUpdate`` has passed, it is in
  force for ``grace`` more (the issuer may be late publishing), and after that
  :meth:`CrlWatcher.in_force` raises :class:`CrlStale` until a fresh CRL is loaded
  from the same file; no restart is needed. Revocation data nobody vouches for any
  more cannot tell a revoked certificate from a good one, so it admits nobody. A
  CRL without ``nextUpdate`` (which RFC 5280 requires) is refused at load.
* Each change of freshness is logged once, at WARNING, whoever notices it first (a
  call or the gateway's periodic check): the start of the grace, the start of the
  refusals, and the fresh CRL that ends them. Never once per call.

``CRL_STALE`` is UNAVAILABLE, not UNAUTHENTICATED: the caller's certificate may well
be good, and nothing the caller can change will help; the same call succeeds once an
operator (or the partner) publishes a fresh CRL. That is :class:`Unavailable`'s
meaning, and it makes callers retry with backoff (a partner's dispatcher keeps the
messages) instead of treating the refusal as final.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.errors import Unavailable
from gateway.events import Event, emit
from gateway.pki.authority import StateAuthority
from gateway.pki.directory import StateDirectory
from gateway.pki.keys import as_utc, write_public_file

_log = logging.getLogger(__name__)

NEXT_UPDATE_DAYS = 7
DEFAULT_GRACE = timedelta(hours=24)


class Freshness(enum.Enum):
    """Where a CRL stands against its ``nextUpdate`` and the grace after it."""

    FRESH = "fresh"
    IN_GRACE = "in_grace"
    STALE = "stale"


class CrlStale(Unavailable):
    """A CRL past its ``nextUpdate`` and the grace after it: nobody is admitted."""

    reason = "CRL_STALE"


def build_crl(
    authority: StateAuthority,
    revoked: Iterable[tuple[int, datetime]],
    *,
    now: datetime,
    next_update_days: int = NEXT_UPDATE_DAYS,
    crl_number: int = 1,
) -> x509.CertificateRevocationList:
    """A CRL signed by ``authority`` listing each ``(serial, revoked_at)`` once."""
    now = as_utc(now)
    if next_update_days <= 0:
        raise ValueError("next_update_days must be positive")
    ca_ski = authority.ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.ca_cert.subject)
        .last_update(now)
        .next_update(now + timedelta(days=next_update_days))
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
            critical=False,
        )
    )
    seen: set[int] = set()
    for serial, revoked_at in revoked:
        if serial <= 0:
            raise ValueError(f"invalid certificate serial {serial}: must be positive")
        if serial in seen:
            continue
        seen.add(serial)
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(as_utc(revoked_at))
            .build()
        )
    return builder.sign(authority.ca_key, hashes.SHA256())


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


@dataclass(frozen=True)
class RevocationList:
    """The revoked serials of one CA, from a CRL verified against that CA."""

    issuer: x509.Name
    serials: frozenset[int]
    crl_number: int
    last_update: datetime
    next_update: datetime

    @classmethod
    def verify(
        cls, crl: x509.CertificateRevocationList, issuer: x509.Certificate
    ) -> RevocationList:
        """Check ``crl`` was issued and signed by ``issuer``; :class:`ValueError` if not."""
        if crl.issuer != issuer.subject:
            raise ValueError(
                f"CRL issued by {crl.issuer.rfc4514_string()!r}, "
                f"not by the expected CA {issuer.subject.rfc4514_string()!r}"
            )
        public_key = issuer.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise ValueError("a state CA key must be ECDSA P-256")
        try:
            valid = crl.is_signature_valid(public_key)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            valid = False
        if not valid:
            raise ValueError(
                f"CRL signature does not verify with the CA {issuer.subject.rfc4514_string()!r}"
            )
        if crl.next_update_utc is None:
            raise ValueError("CRL has no nextUpdate, so nothing says how long it holds")
        return cls(
            issuer=issuer.subject,
            serials=frozenset(entry.serial_number for entry in crl),
            crl_number=_crl_number(crl),
            last_update=crl.last_update_utc,
            next_update=crl.next_update_utc,
        )

    @classmethod
    def from_pem(cls, data: bytes, issuer: x509.Certificate) -> RevocationList:
        try:
            crl = x509.load_pem_x509_crl(data)
        except ValueError as e:
            raise ValueError("not a PEM CRL") from e
        return cls.verify(crl, issuer)

    @classmethod
    def load(cls, path: Path, issuer: x509.Certificate) -> RevocationList:
        try:
            return cls.from_pem(Path(path).read_bytes(), issuer)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    def is_revoked(self, serial: int) -> bool:
        return serial in self.serials

    def is_stale(self, now: datetime) -> bool:
        """True once ``nextUpdate`` has passed: the issuer should have published a newer CRL."""
        return as_utc(now) >= self.next_update

    def freshness(self, now: datetime, grace: timedelta) -> Freshness:
        now = as_utc(now)
        if now < self.next_update:
            return Freshness.FRESH
        if now < self.next_update + grace:
            return Freshness.IN_GRACE
        return Freshness.STALE


def _load_verified_crl(
    directory: StateDirectory, authority: StateAuthority
) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_pem_x509_crl(directory.crl.read_bytes())
    except ValueError as e:
        raise ValueError(f"{directory.crl}: not a PEM CRL") from e
    try:
        RevocationList.verify(crl, authority.ca_cert)
    except ValueError as e:
        raise ValueError(f"{directory.crl}: {e}") from e
    return crl


def revoke(state_dir: Path, serial: int, *, now: datetime, ca_key: Path | None = None) -> None:
    """Add ``serial`` to the state's CRL and re-sign it; revoking twice changes nothing.
    ``ca_key`` names the CA key when it is kept outside the state directory."""
    if serial <= 0:
        raise ValueError(f"invalid certificate serial {serial}: must be positive")
    directory = StateDirectory(Path(state_dir))
    authority = StateAuthority.load(directory.root, ca_key=ca_key)
    crl = _load_verified_crl(directory, authority)
    if crl.get_revoked_certificate_by_serial_number(serial) is not None:
        return
    entries = [(entry.serial_number, entry.revocation_date_utc) for entry in crl]
    entries.append((serial, as_utc(now)))
    new = build_crl(authority, entries, now=now, crl_number=_crl_number(crl) + 1)
    write_public_file(directory.crl, crl_pem(new))


def refresh_crl(
    state_dir: Path,
    *,
    now: datetime,
    next_update_days: int = NEXT_UPDATE_DAYS,
    ca_key: Path | None = None,
) -> None:
    """Re-sign the state's CRL with the same entries and a new ``nextUpdate``."""
    directory = StateDirectory(Path(state_dir))
    authority = StateAuthority.load(directory.root, ca_key=ca_key)
    crl = _load_verified_crl(directory, authority)
    entries = [(entry.serial_number, entry.revocation_date_utc) for entry in crl]
    new = build_crl(
        authority,
        entries,
        now=now,
        next_update_days=next_update_days,
        crl_number=_crl_number(crl) + 1,
    )
    write_public_file(directory.crl, crl_pem(new))


_FileVersion = tuple[int, int, int, int]


def _file_version(path: Path) -> _FileVersion | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size)


@dataclass(frozen=True)
class CrlOwner:
    """Whose CRL a watcher holds, as logs and metrics name it: ``own`` or ``partner``,
    and the state code."""

    role: str
    state: str

    def __str__(self) -> str:
        return f"{self.role} CRL of {self.state}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CrlWatcher:
    """The current revocation list of one CA, re-read whenever its file changes.

    The first load happens in the constructor and raises if the file is missing or
    does not verify: a gateway must not start without revocation data. Thread-safe.
    :meth:`in_force` is what identity checks use: the list, or :class:`CrlStale`.
    """

    def __init__(
        self,
        path: Path,
        issuer: x509.Certificate,
        owner: CrlOwner | None = None,
        *,
        grace: timedelta = DEFAULT_GRACE,
        clock: Callable[[], datetime] = _utc_now,
        issuers: Callable[[], Sequence[x509.Certificate]] | None = None,
    ) -> None:
        """``issuers``, when given, names the CAs a CRL may be signed by, asked at each
        read (a partner's CA renewed by cross-signing, and the one it replaced during
        the overlap); otherwise ``issuer`` alone."""
        if grace < timedelta(0):
            raise ValueError("the CRL grace must not be negative")
        self._path = Path(path)
        self._issuers = issuers if issuers is not None else lambda: (issuer,)
        self._owner = owner
        self._grace = grace
        self._clock = clock
        self._lock = threading.Lock()
        version = _file_version(self._path)
        self._current = self._load()
        self._seen = version
        # Assumed fresh until assessed, so that starting on a stale CRL is reported.
        self._freshness = Freshness.FRESH
        self._freshness_lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def owner(self) -> CrlOwner | None:
        return self._owner

    def current(self) -> RevocationList:
        version = _file_version(self._path)
        if version is None or version == self._seen:
            return self._current
        with self._lock:
            if version != self._seen:
                self._reload(version)
            return self._current

    def in_force(self) -> RevocationList:
        """The list to check certificates against; :class:`CrlStale` once it is past
        its ``nextUpdate`` and the grace, until a fresh CRL is put in the file."""
        revocations = self.current()
        if self._assess(revocations) is Freshness.STALE:
            raise CrlStale(
                f"the {self._name} held by this gateway is past its nextUpdate; calls are "
                "refused until a fresh CRL is loaded"
            )
        return revocations

    def freshness(self) -> Freshness:
        """Where the list in force stands now; reports a change as a call would."""
        return self._assess(self.current())

    @property
    def _name(self) -> str:
        return str(self._owner) if self._owner is not None else f"CRL at {self._path}"

    def _assess(self, revocations: RevocationList) -> Freshness:
        freshness = revocations.freshness(self._clock(), self._grace)
        if freshness is not self._freshness:
            with self._freshness_lock:
                if freshness is not self._freshness:
                    self._report(freshness, revocations)
                    self._freshness = freshness
        return freshness

    def _report(self, freshness: Freshness, revocations: RevocationList) -> None:
        due = revocations.next_update.isoformat()
        grace_ends = (revocations.next_update + self._grace).isoformat()
        if freshness is Freshness.IN_GRACE:
            _log.warning(
                "the %s passed its nextUpdate at %s: it stays in force until %s, then "
                "callers are refused with CRL_STALE until a fresh CRL is loaded from %s",
                self._name,
                due,
                grace_ends,
                self._path,
            )
        elif freshness is Freshness.STALE:
            _log.warning(
                "the %s passed its nextUpdate at %s and its grace ended at %s: callers "
                "are refused with CRL_STALE until a fresh CRL is loaded from %s",
                self._name,
                due,
                grace_ends,
                self._path,
            )
        else:
            _log.warning(
                "a fresh %s is in force (CRL number %d, nextUpdate %s): the %s is over",
                self._name,
                revocations.crl_number,
                due,
                "refusal" if self._freshness is Freshness.STALE else "grace",
            )

    def reload_now(self) -> bool:
        """Read the file now (a reload of the gateway); True if another list is in force.
        A file that does not verify, or older than the list in force (by CRL number),
        raises :class:`ValueError` naming the file and the rule, and changes nothing."""
        with self._lock:
            version = _file_version(self._path)
            self._seen = version
            try:
                candidate = self._load()
            except OSError as e:
                raise ValueError(f"{self._path}: cannot read: {e.strerror}") from e
            if candidate.crl_number < self._current.crl_number:
                raise ValueError(
                    f"{self._path}: CRL number {candidate.crl_number} is older than "
                    f"{self._current.crl_number} in force"
                )
            changed = candidate.crl_number != self._current.crl_number
            if changed:
                self._install(candidate)
            return changed

    def _load(self) -> RevocationList:
        """The file's list, verified against the first CA that signed it."""
        refusal: ValueError | None = None
        for issuer in self._issuers():
            try:
                return RevocationList.load(self._path, issuer)
            except ValueError as e:
                refusal = refusal or e
        raise refusal or ValueError(f"{self._path}: no CA to verify it against")

    def _reload(self, version: _FileVersion) -> None:
        # Remember the version even on failure, so a bad file is reported once.
        self._seen = version
        try:
            candidate = self._load()
        except (OSError, ValueError) as e:
            _log.warning("keeping the previous CRL: %s", e)
            return
        if candidate.crl_number < self._current.crl_number:
            _log.warning(
                "keeping the previous CRL: %s has CRL number %d, older than %d in force",
                self._path,
                candidate.crl_number,
                self._current.crl_number,
            )
            return
        self._install(candidate)

    def _install(self, candidate: RevocationList) -> None:
        self._current = candidate
        emit(
            Event.CRL_RELOADED,
            partner=self._owner.state if self._owner else None,
            by=self._owner.role if self._owner else None,
        )
