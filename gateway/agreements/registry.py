"""Which agreements are in force, and the only way exchange code gets one.

Activation rule (fail closed). An agreement is ACTIVE only if all of these hold;
otherwise it is INACTIVE with every reason that applies, the first of which (in
this order) is :attr:`LoadedAgreement.inactive_reason`:

1. no state other than the two parties signed it (``SIGNED_BY_NON_PARTY``);
2. for each party, the gateway holds the trust bundle whose digest the agreement
   pins for it, and that bundle is the party's (``BUNDLE_DIGEST_MISMATCH``);
3. each party's signature verifies with the signing certificate of that bundle
   (``BAD_SIGNATURE``) and both parties signed (``MISSING_SIGNATURE``);
3b. an agreement with ``message_signatures: hybrid`` can be honoured at both ends:
   each party's pinned bundle names ML-DSA-44 in its ``signature_algorithms``
   (``BUNDLE_WITHOUT_ML_DSA``), and this gateway holds an ML-DSA-44 signing key
   (``NO_ML_DSA_SIGNING_KEY``; the registry is told what it signs with, and assumes
   ES256 alone unless told otherwise);
3a. the partner never showed a hashing-key fingerprint other than ours for this text
   (``HASH_KEY_MISMATCH``, see :mod:`gateway.agreements.hash_key`);
4. the declared status is ``active`` (``TERMINATED``, ``SUSPENDED``);
5. today (UTC, by the injected clock) is within [valid_from, valid_until],
   both days included (``NOT_YET_VALID``, ``EXPIRED``).

Signatures are checked when files are (re)loaded; the validity window is checked
on every lookup, so an agreement stops at midnight UTC without a reload.

Versions. The directory may hold several versions of one agreement id (each its own
file; one version twice is an error). The newest version in force governs: a version
loaded ahead of its ``valid_from`` takes over at midnight UTC of that day, without a
gap and without a reload. A partner's message names its version and digest:
:meth:`AgreementRegistry.named_for` accepts the version in force, an earlier one still
within its own window, and one superseded by the version in force (its window over),
so messages in flight at the switch stay valid; any other version is refused.

:meth:`AgreementRegistry.active_for` is the only way exchange layers obtain an
agreement: it raises :class:`~gateway.errors.AgreementRejected` unless the
agreement is known, in force, and binds this gateway's state to the partner.
A file that fails to load on :meth:`AgreementRegistry.reload` is dropped, never
kept in its previous form, so a broken edit cannot keep an old text in force; a reload
of a running gateway (``all_or_nothing``) instead keeps the whole previous set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic

from gateway.agreements.hash_key import HashKeyStanding
from gateway.agreements.loader import (
    AgreementFile,
    AgreementFileError,
    AgreementIssue,
    ExchangesT,
    load_agreement,
)
from gateway.agreements.model import Agreement, DeclaredStatus
from gateway.errors import AgreementRejected, NotFound
from gateway.pki.agreement_signature import verify_agreement_signature
from gateway.pki.bundle import CLASSICAL_SIGNING, MLDSA44, TrustBundle
from gateway.pki.identity import validate_state_code
from gateway.pki.keys import as_utc, certificate_fingerprint

AGREEMENT_SUFFIXES = frozenset({".yaml", ".yml"})


class ActivationStatus(StrEnum):
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"


class InactiveReason(StrEnum):
    """Why an agreement is not in force; declaration order is reporting precedence."""

    SIGNED_BY_NON_PARTY = "SIGNED_BY_NON_PARTY"
    BUNDLE_DIGEST_MISMATCH = "BUNDLE_DIGEST_MISMATCH"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    MISSING_SIGNATURE = "MISSING_SIGNATURE"
    BUNDLE_WITHOUT_ML_DSA = "BUNDLE_WITHOUT_ML_DSA"
    NO_ML_DSA_SIGNING_KEY = "NO_ML_DSA_SIGNING_KEY"
    HASH_KEY_MISMATCH = "HASH_KEY_MISMATCH"
    TERMINATED = "TERMINATED"
    SUSPENDED = "SUSPENDED"
    NOT_YET_VALID = "NOT_YET_VALID"
    EXPIRED = "EXPIRED"


_PRECEDENCE = {reason: rank for rank, reason in enumerate(InactiveReason)}

_EXPLANATIONS = {
    InactiveReason.SIGNED_BY_NON_PARTY: "it carries a signature by a state that is not a party",
    InactiveReason.BUNDLE_DIGEST_MISMATCH: (
        "a party's pinned trust bundle is not the one this gateway holds"
    ),
    InactiveReason.BAD_SIGNATURE: "a party's signature does not verify",
    InactiveReason.MISSING_SIGNATURE: "it is not signed by both parties",
    InactiveReason.BUNDLE_WITHOUT_ML_DSA: (
        "it asks for hybrid message signatures and a party's pinned trust bundle names "
        "no ML-DSA-44 signing key"
    ),
    InactiveReason.NO_ML_DSA_SIGNING_KEY: (
        "it asks for hybrid message signatures and this gateway holds no ML-DSA-44 "
        "signing key (signing-pq.key)"
    ),
    InactiveReason.HASH_KEY_MISMATCH: "the partner holds another hashing key for it",
    InactiveReason.TERMINATED: "it is terminated",
    InactiveReason.SUSPENDED: "it is suspended",
    InactiveReason.NOT_YET_VALID: "its validity period has not begun",
    InactiveReason.EXPIRED: "its validity period has ended",
}


@dataclass(frozen=True)
class SignatureVerdict:
    """One state's signature: ``problem`` is None when it verifies."""

    state: str
    problem: InactiveReason | None


def check_signatures(
    agreement_file: AgreementFile[Any], bundles: Iterable[TrustBundle]
) -> tuple[SignatureVerdict, ...]:
    """A verdict per party, then per non-party signer, against the given bundles."""
    agreement = agreement_file.agreement
    by_digest = {bundle.digest: bundle for bundle in bundles}
    signed = {signature.state: signature for signature in agreement.signatures}
    verdicts = []
    for party in agreement.parties:
        bundle = by_digest.get(agreement.bundles[party])
        signature = signed.get(party)
        problem: InactiveReason | None = None
        if bundle is None or bundle.state != party:
            problem = InactiveReason.BUNDLE_DIGEST_MISMATCH
        elif signature is None:
            problem = InactiveReason.MISSING_SIGNATURE
        elif (
            signature.key_id is not None
            and signature.key_id != certificate_fingerprint(bundle.signing_certificate)
        ) or not verify_agreement_signature(
            bundle.signing_certificate, agreement_file.canonical, signature.signature
        ):
            problem = InactiveReason.BAD_SIGNATURE
        verdicts.append(SignatureVerdict(party, problem))
    verdicts += [
        SignatureVerdict(state, InactiveReason.SIGNED_BY_NON_PARTY)
        for state in signed
        if state not in agreement.parties
    ]
    return tuple(verdicts)


def check_message_signatures(
    agreement_file: AgreementFile[Any],
    bundles: Iterable[TrustBundle],
    own_algorithms: Collection[str] | None = None,
) -> frozenset[InactiveReason]:
    """Why an agreement asking for hybrid message signatures cannot be honoured: a
    party's pinned bundle (among ``bundles``) without ML-DSA-44, or, for a gateway that
    signs with ``own_algorithms``, no ML-DSA-44 among them (``None``: not a gateway, as
    for ``pouch agreement verify``). Empty for a classical agreement, and for a party
    whose pinned bundle is not among ``bundles`` (that is ``BUNDLE_DIGEST_MISMATCH``)."""
    agreement = agreement_file.agreement
    if not agreement.hybrid_signatures:
        return frozenset()
    by_digest = {bundle.digest: bundle for bundle in bundles}
    reasons = set()
    for party in agreement.parties:
        bundle = by_digest.get(agreement.bundles[party])
        if bundle is not None and MLDSA44 not in bundle.signature_algorithms:
            reasons.add(InactiveReason.BUNDLE_WITHOUT_ML_DSA)
    if own_algorithms is not None and MLDSA44 not in own_algorithms:
        reasons.add(InactiveReason.NO_ML_DSA_SIGNING_KEY)
    return frozenset(reasons)


@dataclass(frozen=True)
class LoadedAgreement(Generic[ExchangesT]):
    """An agreement as this gateway holds it, and whether it is in force on ``as_of``."""

    agreement: Agreement
    exchanges: ExchangesT
    digest: str
    canonical: bytes
    source: str
    signatures: tuple[SignatureVerdict, ...]
    as_of: date
    inactive_reasons: tuple[InactiveReason, ...]

    @property
    def status(self) -> ActivationStatus:
        return ActivationStatus.INACTIVE if self.inactive_reasons else ActivationStatus.ACTIVE

    @property
    def inactive_reason(self) -> InactiveReason | None:
        return self.inactive_reasons[0] if self.inactive_reasons else None

    @property
    def id(self) -> str:
        return self.agreement.id

    @property
    def version(self) -> int:
        return self.agreement.version


def assess(
    agreement_file: AgreementFile[ExchangesT],
    signatures: tuple[SignatureVerdict, ...],
    today: date,
    *,
    hash_key_mismatch: bool = False,
    message_signature_gaps: Iterable[InactiveReason] = (),
) -> LoadedAgreement[ExchangesT]:
    """Apply the activation rule to a file whose signatures were checked;
    ``message_signature_gaps`` is what :func:`check_message_signatures` found."""
    agreement = agreement_file.agreement
    reasons = {v.problem for v in signatures if v.problem is not None}
    reasons.update(message_signature_gaps)
    if hash_key_mismatch:
        reasons.add(InactiveReason.HASH_KEY_MISMATCH)
    if agreement.status is DeclaredStatus.TERMINATED:
        reasons.add(InactiveReason.TERMINATED)
    elif agreement.status is DeclaredStatus.SUSPENDED:
        reasons.add(InactiveReason.SUSPENDED)
    if today < agreement.valid_from:
        reasons.add(InactiveReason.NOT_YET_VALID)
    if today > agreement.valid_until:
        reasons.add(InactiveReason.EXPIRED)
    return LoadedAgreement(
        agreement=agreement,
        exchanges=agreement_file.exchanges,
        digest=agreement_file.digest,
        canonical=agreement_file.canonical,
        source=agreement_file.source,
        signatures=signatures,
        as_of=today,
        inactive_reasons=tuple(sorted(reasons, key=_PRECEDENCE.__getitem__)),
    )


@dataclass(frozen=True)
class _Entry(Generic[ExchangesT]):
    file: AgreementFile[ExchangesT]
    signatures: tuple[SignatureVerdict, ...]
    message_signature_gaps: frozenset[InactiveReason]


@dataclass(frozen=True)
class AgreementChanges:
    """What a reload changed, by agreement id: new, gone, or another text under one id."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.replaced)


_Versions = tuple[_Entry[ExchangesT], ...]
"""The loaded versions of one agreement id, by ascending version."""


def _changes(
    before: Mapping[str, _Versions[Any]], after: Mapping[str, _Versions[Any]]
) -> AgreementChanges:
    def texts(versions: _Versions[Any]) -> list[tuple[str, tuple[SignatureVerdict, ...]]]:
        return [(e.file.digest, e.signatures) for e in versions]

    return AgreementChanges(
        added=tuple(sorted(after.keys() - before.keys())),
        removed=tuple(sorted(before.keys() - after.keys())),
        replaced=tuple(
            sorted(i for i in after.keys() & before.keys() if texts(after[i]) != texts(before[i]))
        ),
    )


class AgreementRegistry(Generic[ExchangesT]):
    """The agreements in one directory (``*.yaml``, ``*.yml``), checked against bundles."""

    def __init__(
        self,
        directory: Path,
        *,
        own_state: str,
        bundles: Iterable[TrustBundle],
        clock: Callable[[], datetime],
        exchanges_validator: Callable[[Any], ExchangesT],
        hash_keys: HashKeyStanding | None = None,
        own_signature_algorithms: Collection[str] = CLASSICAL_SIGNING,
    ) -> None:
        """Load every agreement; :class:`AgreementFileError` if any file is invalid.

        ``hash_keys`` records what partners showed of their hashing keys; a text found
        mismatched is inactive from then on. ``own_signature_algorithms`` is what this
        gateway's signing keys sign with (its signer's ``signature_algorithms``): an
        agreement asking for hybrid message signatures is inactive without ML-DSA-44."""
        self.hash_keys = hash_keys if hash_keys is not None else HashKeyStanding()
        self._directory = Path(directory)
        self._own_state = validate_state_code(own_state)
        self._bundles = tuple(bundles)
        self._own_algorithms = tuple(own_signature_algorithms)
        self._clock = clock
        self._validate_exchanges = exchanges_validator
        self._reload_lock = threading.Lock()
        self._entries: Mapping[str, _Versions[ExchangesT]] = {}
        self.reload()

    def _today(self) -> date:
        return as_utc(self._clock()).date()

    def reload(
        self, *, bundles: Iterable[TrustBundle] | None = None, all_or_nothing: bool = False
    ) -> AgreementChanges:
        """Re-read the directory (and optionally replace the known bundles).

        Valid files replace the previous set at once; invalid files, and every
        file sharing an agreement id with another, are dropped and reported
        together in one :class:`AgreementFileError` after the swap. With
        ``all_or_nothing`` (a reload of a running gateway), any such issue keeps the
        previous set (and bundles) in force whole and nothing is swapped.
        """
        with self._reload_lock:
            previous = self._entries
            candidate_bundles = self._bundles if bundles is None else tuple(bundles)
            issues, entries = self._read(candidate_bundles)
            if not (issues and all_or_nothing):
                self._bundles = candidate_bundles
                self._entries = entries
        if issues:
            raise AgreementFileError(issues)
        return _changes(previous, entries)

    def _read(
        self, bundles: tuple[TrustBundle, ...]
    ) -> tuple[list[AgreementIssue], dict[str, _Versions[ExchangesT]]]:
        issues: list[AgreementIssue] = []
        files: dict[str, list[AgreementFile[ExchangesT]]] = {}
        paths = sorted(
            p
            for p in self._directory.iterdir()
            if p.suffix in AGREEMENT_SUFFIXES and not p.name.startswith(".") and p.is_file()
        )
        for path in paths:
            try:
                loaded = load_agreement(path, exchanges_validator=self._validate_exchanges)
            except AgreementFileError as e:
                issues += e.issues
                continue
            files.setdefault(loaded.agreement.id, []).append(loaded)
        entries: dict[str, _Versions[ExchangesT]] = {}
        for agreement_id, same_id in files.items():
            versions = [f.agreement.version for f in same_id]
            if len(set(versions)) < len(versions):
                sources = ", ".join(f.source for f in same_id)
                issues += [
                    AgreementIssue(
                        f.source,
                        f.line_of("version"),
                        "version",
                        f"{agreement_id} version {f.agreement.version} is in {sources}",
                    )
                    for f in same_id
                ]
                continue
            entries[agreement_id] = tuple(
                _Entry(
                    f,
                    check_signatures(f, bundles),
                    check_message_signatures(f, bundles, self._own_algorithms),
                )
                for f in sorted(same_id, key=lambda f: f.agreement.version)
            )
        return issues, entries

    def _entry(self, agreement_id: str) -> _Entry[ExchangesT] | None:
        """The version that governs ``agreement_id`` today (see :meth:`active_for`)."""
        versions = self._entries.get(agreement_id)
        if not versions:
            return None
        return self._current(versions, self._today())[0]

    def _current(
        self, versions: _Versions[ExchangesT], today: date
    ) -> tuple[_Entry[ExchangesT], LoadedAgreement[ExchangesT]]:
        # The newest version in force; else the newest already begun; else the first.
        assessed = [(e, self._assess(e, today)) for e in versions]
        for entry, loaded in reversed(assessed):
            if loaded.inactive_reason is None:
                return entry, loaded
        for entry, loaded in reversed(assessed):
            if loaded.agreement.valid_from <= today:
                return entry, loaded
        return assessed[0]

    def get(self, agreement_id: str) -> LoadedAgreement[ExchangesT]:
        """The agreement and its standing today, in force or not."""
        entry = self._entry(agreement_id)
        if entry is None:
            raise NotFound(f"unknown agreement {agreement_id!r}", reason="UNKNOWN_AGREEMENT")
        return self._assess(entry, self._today())

    def _assess(self, entry: _Entry[ExchangesT], today: date) -> LoadedAgreement[ExchangesT]:
        mismatch = self.hash_keys.mismatched(entry.file.agreement.id, entry.file.digest)
        return assess(
            entry.file,
            entry.signatures,
            today,
            hash_key_mismatch=mismatch,
            message_signature_gaps=entry.message_signature_gaps,
        )

    def hybrid_signatures(self, agreement_id: str) -> bool:
        """Whether the agreement loaded as ``agreement_id`` asks for hybrid message
        signatures (in force or not; False for none loaded): what our envelopes and
        receipts under it carry, and what we require of the partner's."""
        entry = self._entry(agreement_id)
        return entry is not None and entry.file.agreement.hybrid_signatures

    def list(self) -> tuple[LoadedAgreement[ExchangesT], ...]:
        """Every loaded agreement version with its standing today, by id and version."""
        today = self._today()
        entries = self._entries
        return tuple(
            self._assess(e, today) for _, versions in sorted(entries.items()) for e in versions
        )

    def version(self, agreement_id: str, version: int) -> LoadedAgreement[ExchangesT]:
        """That version of the agreement and its standing today, in force or not."""
        for entry in self._entries.get(agreement_id, ()):
            if entry.file.agreement.version == version:
                return self._assess(entry, self._today())
        raise NotFound(
            f"unknown agreement {agreement_id!r} version {version}", reason="UNKNOWN_AGREEMENT"
        )

    def named_for(
        self,
        agreement_id: str,
        version: int,
        partner_state: str,
        *,
        clock_tolerance: timedelta = timedelta(0),
    ) -> LoadedAgreement[ExchangesT]:
        """The version a partner's message names, if it may be received: in force, or
        superseded (its window over, a later version in force), so messages made under
        it before the later version took over stay valid while in flight; or a later
        version that is in force ``clock_tolerance`` from now (a partner whose clock runs
        that much ahead switched first). Another version than those loaded is
        ``AGREEMENT_DIGEST_MISMATCH``."""
        current = self.active_for(agreement_id, partner_state)
        if current.version == version:
            return current
        for entry in self._entries.get(agreement_id, ()):
            if entry.file.agreement.version != version:
                continue
            if entry.file.agreement.parties != current.agreement.parties:
                break
            loaded = self._assess(entry, self._today())
            if version < current.version and set(loaded.inactive_reasons) <= {
                InactiveReason.EXPIRED
            }:
                return loaded
            ahead = self._assess(entry, as_utc(self._clock() + clock_tolerance).date())
            if version > current.version and ahead.inactive_reason is None:
                return ahead
            break
        raise AgreementRejected(
            f"agreement {agreement_id!r}: the partner names version {version}, this gateway "
            f"holds version {current.version} in force",
            reason="AGREEMENT_DIGEST_MISMATCH",
        )

    def ids_with(self, partner_state: str) -> frozenset[str]:
        """Ids of the agreements loaded here that ``partner_state`` is a party to."""
        return frozenset(
            loaded.id for loaded in self.list() if partner_state in loaded.agreement.parties
        )

    def active_for(self, agreement_id: str, partner_state: str) -> LoadedAgreement[ExchangesT]:
        """The agreement, if it is in force between this state and ``partner_state``:
        of its loaded versions, the newest in force today (so a new version takes over
        on its ``valid_from`` without a reload); if none is, the reason of the newest
        already begun (else of the first)."""
        versions = self._entries.get(agreement_id)
        if not versions:
            raise AgreementRejected(
                f"unknown agreement {agreement_id!r}", reason="UNKNOWN_AGREEMENT"
            )
        _, loaded = self._current(versions, self._today())
        parties = loaded.agreement.parties
        if (
            partner_state == self._own_state
            or partner_state not in parties
            or self._own_state not in parties
        ):
            raise AgreementRejected(
                f"agreement {agreement_id!r} is not between {self._own_state} and "
                f"{partner_state!r}",
                reason="NOT_A_PARTY",
            )
        if loaded.inactive_reason is not None:
            raise AgreementRejected(
                f"agreement {agreement_id!r} version {loaded.version} is not in force: "
                f"{_EXPLANATIONS[loaded.inactive_reason]}",
                reason=loaded.inactive_reason.value,
            )
        return loaded


def explain(reason: InactiveReason) -> str:
    """A sentence fragment for operators: why an agreement with ``reason`` is inactive."""
    return _EXPLANATIONS[reason]
