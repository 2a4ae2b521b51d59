"""Offline verification of an audit bundle: what an auditor runs, away from the gateway.

:func:`verify_bundle` reads a ``pouch.audit-bundle/v2`` document, or a ``v1`` one
made before post-quantum keys (:mod:`gateway.audit.bundle`), and checks, with no
network and no database:

1. Format: one JSON object of that format, with exactly the known members and no
   member twice at any depth.
2. Keys: the log keys (vkeys: Ed25519 type 0x01, ML-DSA-44 type 0x06) and the cosigner
   keys (Ed25519 type 0x04, ML-DSA-44 type 0x06). An auditor passes the keys they hold
   out of band (or the trust bundles they pinned); the bundle's keys must equal them
   and only the trusted ones are used. Nothing verifies without trust: with no trusted
   log key, or no trusted cosigner key, the checks still run on the bundle's own keys
   (which shows the bundle is consistent, not whose it is) and the report fails,
   saying which key was missing. A cosigner key the bundle carries but the auditor
   does not trust is left out, with a note. A key named for another role (a witness
   key offered as a log key, or the reverse) or one key in both roles fails.
3. Checkpoint: its note is signed by the log's key of each required algorithm
   (``require``: Ed25519 and ML-DSA-44 unless told otherwise; every line of a trusted
   log key verifies), its body is a checkpoint of the bundle's origin, every line of a
   known cosigner verifies over this very checkpoint, and the required cosigners did,
   in each required algorithm: every trusted cosigner, or at least ``quorum`` of them
   when a quorum is given (and at least one in any case: else it is not published).
   Lines of unknown keys are ignored, as signed notes require.
   External witnesses (c2sp.org/tlog-witness; the bundle's optional ``witness_keys``,
   by key name) are checked the same way with the keys the auditor trusts for them
   (``trusted_witness_vkeys``): every line of such a key verifies, and each trusted
   witness cosigned in each required algorithm. ``quorum`` counts partner cosigners
   only: an external witness the auditor names is always required, since naming one
   says whose independent view the auditor relies on.
4. Entries: each decodes to a canonical v1 entry (exactly the expected fields, each
   of its kind, in RFC 8785 form); its leaf hash and inclusion proof reproduce the
   checkpoint root; indexes are unique and below the tree size; a bundle that says it
   is complete for a range misses no index of it.
5. Consistency: each earlier checkpoint bundled is signed and cosigned like the main
   one and its consistency proof to the main checkpoint verifies. Given the checkpoint
   the auditor saw at their last audit (``since``, a signed note they kept), the
   bundle must prove the log only grew from it: its checkpoint is that one, or the
   bundle carries that very checkpoint (same size, same root) with a verified
   consistency proof; a log rewritten and regrown since fails, naming the size.

Nothing raises for a bad bundle: every failed check is one line of the report naming
the entry or the signature at fault, and the report is ``ok`` only without any. Only
malformed *trusted* keys, the caller's own input, raise :class:`ValueError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from gateway.audit.bundle import ENTRIES, FORMAT, FORMAT_V1, BundleFormatError, read_members
from gateway.audit.checkpoint import (
    Checkpoint,
    MalformedCheckpoint,
    audit_key_name,
    audit_origin,
    witness_key_name,
)
from gateway.audit.cosignature import Cosignature, CosignatureVerifier, verify_cosignature
from gateway.audit.entry import ENCODING_VERSION, AuditEvent, Decision, EventKind
from gateway.audit.log_signing import LogKey, log_key_of
from gateway.audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from gateway.audit.note import MalformedNote, Note, parse_note
from gateway.errors import Rejected
from gateway.pki.note_keys import ALGORITHMS, ED25519

__all__ = ["VerificationReport", "bundle_state", "verify_bundle"]

_REQUIRED = frozenset(
    {"format", "state", "origin", "cosigner_keys", "checkpoint", "complete", "range"}
)
_LOG_KEYS = {FORMAT: "log_keys", FORMAT_V1: "log_key"}
_WITNESS_KEYS = "witness_keys"
_MEMBERS = _REQUIRED | {
    "selection",
    "consistency",
    _WITNESS_KEYS,
    ENTRIES,
    *_LOG_KEYS.values(),
}
_ENTRY_MEMBERS = frozenset({"index", "canonical", "proof"})
_STATE = re.compile(r"[A-Z]{2}")
# Canonical standard base64 of 32 bytes: 43 characters, the last with its two low bits
# clear, then one "=". A proof is checked as the concatenation of such hashes.
_HASH_CHARS = 44
_BASE64_HASHES = re.compile(r"(?:[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=)*")
_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{3})Z")
_MAX_SAFE_INTEGER = 2**53 - 1
_ENTRY_FIELDS = frozenset({"v"} | {f.name for f in fields(AuditEvent)})
_TOKEN_FIELDS = (
    "message_id",
    "agreement_id",
    "exchange_type",
    "purpose",
    "peer_state",
    "principal",
    "payload_digest",
    "reason_code",
)
_PATH_FIELDS = ("removed_paths", "transformed_paths")


@dataclass(frozen=True)
class VerificationReport:
    """What was checked and every failure; ``ok`` only if there is none."""

    format: str | None
    origin: str | None
    tree_size: int | None
    root_hash: bytes | None
    log_keys: tuple[str, ...]
    cosigner_keys: dict[str, tuple[str, ...]]
    required_algorithms: tuple[str, ...]
    log_key_trusted: bool
    """True if the auditor's log key was used; False if the bundle's own was."""
    cosigner_keys_trusted: bool
    published: bool
    cosigned_by: tuple[str, ...]
    entries: int
    entries_verified: int
    complete_range: tuple[int, int] | None
    consistent_with: tuple[int, ...]
    failures: tuple[str, ...]
    notices: tuple[str, ...]
    checkpoint_note: str | None = None
    """The bundle's checkpoint note as it came, for the auditor to keep (``--since``)."""
    witnessed_by: tuple[str, ...] = ()
    """The external witnesses whose cosignatures verified in every required algorithm."""

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def keys_trusted(self) -> bool:
        """Whether every key was the auditor's rather than taken from the bundle."""
        return self.log_key_trusted and self.cosigner_keys_trusted

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "format": self.format,
            "origin": self.origin,
            "tree_size": self.tree_size,
            "root_hash": None if self.root_hash is None else _b64(self.root_hash),
            "keys": {
                "log": list(self.log_keys),
                "log_source": "trusted" if self.log_key_trusted else "bundle",
                "cosigners": {s: list(k) for s, k in self.cosigner_keys.items()},
                "required_algorithms": list(self.required_algorithms),
                "cosigners_source": "trusted" if self.cosigner_keys_trusted else "bundle",
            },
            "published": self.published,
            "cosigned_by": list(self.cosigned_by),
            "witnessed_by": list(self.witnessed_by),
            "entries": {"total": self.entries, "verified": self.entries_verified},
            "complete_range": (
                None
                if self.complete_range is None
                else {"start": self.complete_range[0], "end": self.complete_range[1]}
            ),
            "consistent_with": list(self.consistent_with),
            "failures": list(self.failures),
            "notices": list(self.notices),
        }


def verify_bundle(
    data: bytes,
    *,
    trusted_log_vkeys: Sequence[str] | None = None,
    trusted_cosigner_vkeys: Mapping[str, Sequence[str]] | None = None,
    quorum: int | None = None,
    since: str | None = None,
    require: Collection[str] = ALGORITHMS,
    trusted_witness_vkeys: Mapping[str, Sequence[str]] | None = None,
) -> VerificationReport:
    """Check the bundle ``data`` offline; see the module docstring for what is checked.

    ``quorum``: how many of the trusted cosigners must have cosigned (default: all).
    ``since``: the checkpoint note the auditor kept from their last audit.
    ``require``: the algorithms whose signatures and cosignatures must be present
    (``Ed25519``, ``ML-DSA-44``; default both).
    ``trusted_witness_vkeys``: external witnesses' keys by witness name, each of which
    must have cosigned (whatever ``quorum`` says)."""
    required = tuple(a for a in ALGORITHMS if a in set(require))
    if not required or set(require) - set(ALGORITHMS):
        raise ValueError(f"require: one or more of {', '.join(ALGORITHMS)}")
    seen = None if since is None else _seen_checkpoint(since)
    trusted_log = None if trusted_log_vkeys is None else _trusted_log_keys(trusted_log_vkeys)
    trusted_cosigners = (
        None if trusted_cosigner_vkeys is None else _trusted_cosigners(trusted_cosigner_vkeys)
    )
    if quorum is not None and not 1 <= quorum <= len(trusted_cosigners or {}):
        raise ValueError(
            f"quorum {quorum}: from 1 to the number of trusted cosigners "
            f"({len(trusted_cosigners or {})})"
        )
    run = _Run(trusted_log, trusted_cosigners, required, quorum)
    run.trusted_witnesses = (
        None if trusted_witness_vkeys is None else _trusted_witnesses(trusted_witness_vkeys)
    )
    try:
        run.read(data)
    except BundleFormatError as e:
        run.fail(f"bundle: {e}")
    if seen is not None:
        run.check_since(seen)
    return run.report()


def _seen_checkpoint(note_text: str) -> tuple[Checkpoint, Note]:
    """The checkpoint an auditor kept, as a parsed note; ValueError if it is none."""
    try:
        note = parse_note(note_text)
        return Checkpoint.parse(note.text), note
    except (MalformedNote, MalformedCheckpoint) as e:
        raise ValueError(f"the checkpoint you kept is not a signed checkpoint: {e.message}") from e


_HEADER_OPENING = 64 * 1024
"""How much of a bundle :func:`bundle_state` reads: the exporter writes ``state``
second, after ``format``; a bundle that names it later is read as naming none."""


def bundle_state(data: bytes) -> str | None:
    """The state whose log the bundle ``data`` says it holds, read from the opening of
    its header only (a bundle can be gigabytes); ``None`` if it does not name one
    there, which leaves its log key untrusted."""
    opening = data[:_HEADER_OPENING].decode("utf-8", errors="replace")
    try:
        for name, value in read_members(opening):
            if name == "state":
                return value if isinstance(value, str) else None
            if name == ENTRIES:
                return None
    except BundleFormatError:  # cut short before the state: it was not named early
        return None
    return None


def _trusted_log_keys(vkeys: Sequence[str]) -> list[LogKey]:
    keys: list[LogKey] = []
    for vkey in vkeys:
        try:
            key = log_key_of(vkey.strip())
        except ValueError as e:
            raise ValueError(f"trusted log key: {e}") from e
        if any(k.algorithm == key.algorithm for k in keys):
            raise ValueError(f"trusted log key: two {key.algorithm} keys given")
        keys.append(key)
    return keys


def _trusted_cosigners(vkeys: Mapping[str, Sequence[str]]) -> dict[str, list[CosignatureVerifier]]:
    keys: dict[str, list[CosignatureVerifier]] = {}
    for state, state_vkeys in vkeys.items():
        if _STATE.fullmatch(state) is None:
            raise ValueError(f"trusted cosigner key: {state!r} is not a state code")
        for vkey in state_vkeys:
            try:
                key = CosignatureVerifier.from_vkey(vkey.strip())
            except ValueError as e:
                raise ValueError(f"trusted cosigner key of {state}: {e}") from e
            # A key names its state and role: another state's key, or a log key offered
            # as a witness key, is refused.
            if key.key_name != witness_key_name(state):
                raise ValueError(
                    f"trusted cosigner key of {state}: it is {key.key_name}'s key, "
                    f"not {witness_key_name(state)}'s"
                )
            if any(k.algorithm == key.algorithm for k in keys.get(state, [])):
                raise ValueError(f"trusted cosigner key of {state}: two {key.algorithm} keys")
            keys.setdefault(state, []).append(key)
    return keys


def _trusted_witnesses(
    vkeys: Mapping[str, Sequence[str]],
) -> dict[str, list[CosignatureVerifier]]:
    keys: dict[str, list[CosignatureVerifier]] = {}
    for name, name_vkeys in vkeys.items():
        for vkey in name_vkeys:
            try:
                key = CosignatureVerifier.from_vkey(vkey.strip())
            except ValueError as e:
                raise ValueError(f"trusted witness key of {name}: {e}") from e
            if key.key_name != name:
                raise ValueError(f"trusted witness key of {name}: it is {key.key_name}'s key")
            if any(k.algorithm == key.algorithm for k in keys.get(name, [])):
                raise ValueError(f"trusted witness key of {name}: two {key.algorithm} keys")
            keys.setdefault(name, []).append(key)
        if name not in keys:
            raise ValueError(f"trusted witness key of {name}: no key given")
    return keys


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _key_label(key: LogKey) -> str:
    return f"{key.key_name}+{key.key_id:08x}"


def _hashes(value: Any) -> list[bytes] | None:
    """A proof: a list of canonical base64 SHA-256 hashes, else ``None``."""
    if type(value) is not list or not all(type(h) is str for h in value):
        return None
    joined = "".join(value)
    if set(map(len, value)) - {_HASH_CHARS} or _BASE64_HASHES.fullmatch(joined) is None:
        return None
    return [binascii.a2b_base64(h) for h in value]


@dataclass(frozen=True)
class _Keys:
    """The keys checks are made with: the auditor's if given, else the bundle's."""

    log: list[LogKey]
    cosigners: dict[str, list[CosignatureVerifier]]
    witnesses: dict[str, list[CosignatureVerifier]] = field(default_factory=dict)


@dataclass(frozen=True)
class _SignedCheckpoint:
    """A checkpoint as far as it verified: parsed, signed by the log key, cosigned by whom."""

    checkpoint: Checkpoint
    signed: bool
    cosigned_by: tuple[str, ...]
    witnessed_by: tuple[str, ...] = ()


@dataclass
class _Run:
    trusted_log: list[LogKey] | None
    trusted_cosigners: dict[str, list[CosignatureVerifier]] | None
    required: tuple[str, ...]
    quorum: int | None = None
    trusted_witnesses: dict[str, list[CosignatureVerifier]] | None = None
    failures: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    header: dict[str, Any] = field(default_factory=dict)
    keys: _Keys | None = None
    main: _SignedCheckpoint | None = None
    complete_range: tuple[int, int] | None = None
    seen: set[int] = field(default_factory=set)
    entries: int = 0
    entries_verified: int = 0
    consistent_with: list[int] = field(default_factory=list)
    earlier_roots: dict[int, bytes] = field(default_factory=dict)
    prepared: bool = False

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def read(self, data: bytes) -> None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BundleFormatError("a bundle is UTF-8 JSON") from e
        pending: list[Any] | None = None
        entries_seen = False
        for name, value in read_members(text):
            if name not in _MEMBERS:
                self.fail(f"bundle: unknown member {name!r}")
            elif name != ENTRIES:
                self.header[name] = value
            elif not isinstance(value, Iterator):
                self.fail("bundle: entries is not a list")
                entries_seen = True
            elif self.header.keys() >= _REQUIRED:
                self.prepare()
                self.check_entries(value)
                entries_seen = True
            else:  # entries before the checkpoint: keep them until it is read
                pending, entries_seen = list(value), True
        self.prepare()
        if not entries_seen:
            self.fail("bundle: member 'entries' is missing")
        if pending is not None:
            self.check_entries(pending)
        self.check_complete()
        self.check_consistency(self.header.get("consistency", []))

    def prepare(self) -> None:
        if self.prepared:
            return
        self.prepared = True
        header = self.header
        for name in sorted(_REQUIRED - header.keys()):
            self.fail(f"bundle: member {name!r} is missing")
        log_member = _LOG_KEYS.get(str(header.get("format")))
        if log_member is None:
            if "format" in header:
                self.fail(f"bundle: format {header['format']!r} is not {FORMAT!r}")
            return
        for other in sorted(set(_LOG_KEYS.values()) - {log_member}):
            if other in header:
                self.fail(f"bundle: member {other!r} does not belong to {header['format']}")
        if log_member not in header:
            self.fail(f"bundle: member {log_member!r} is missing")
        state = header.get("state")
        if not isinstance(state, str) or _STATE.fullmatch(state) is None:
            self.fail(f"bundle: state {state!r} is not a state code")
            return
        if header.get("origin") != audit_origin(state):
            self.fail(f"bundle: origin {header.get('origin')!r} is not {audit_origin(state)!r}")
        self.keys = self.check_keys(header.get(log_member), header.get("cosigner_keys"))
        self.keys.witnesses.update(self.check_witness_keys(header.get(_WITNESS_KEYS)))
        self.check_one_key_one_cosigner(self.keys)
        if not isinstance(header.get("checkpoint"), str):
            self.fail("checkpoint: not a signed note")
        else:
            self.main = self.check_note(header["checkpoint"], "checkpoint")
        self.complete_range = self.check_range(header.get("complete"), header.get("range"))
        selection = header.get("selection")
        if selection is not None and not isinstance(selection, dict):
            self.fail("bundle: selection is not an object")

    def check_keys(self, log_vkeys: Any, cosigner_vkeys: Any) -> _Keys:
        log = self.bundle_log_keys(log_vkeys)
        cosigners = self.bundle_cosigner_keys(cosigner_vkeys)
        if self.trusted_log is not None:
            self.compare("log key", log, self.trusted_log)
            log = list(self.trusted_log)
        if self.trusted_cosigners is not None:
            for state in sorted(cosigners.keys() | self.trusted_cosigners.keys()):
                theirs = self.trusted_cosigners.get(state)
                if theirs is None:
                    self.notices.append(
                        f"cosigner key of {state}: in the bundle but not trusted; "
                        "its cosignatures are not counted"
                    )
                else:
                    self.compare(f"cosigner key of {state}", cosigners.get(state, []), theirs)
            cosigners = {s: list(k) for s, k in self.trusted_cosigners.items()}
        log_state = self.header.get("state")
        for key in log:
            if isinstance(log_state, str) and key.key_name != audit_key_name(log_state):
                self.fail(
                    f"log key: {key.key_name} is not {audit_key_name(log_state)}, the key that "
                    "signs this state's log (a witness key is never a log key)"
                )
        log_public = {k.public_key for k in log}
        for cosigner_state, keys in sorted(cosigners.items()):
            if any(key.public_key in log_public for key in keys):
                self.fail(
                    f"cosigner key of {cosigner_state}: the log's own key in the witness role "
                    "(one key, one role)"
                )
            for algorithm in self.required:
                if self.trusted_cosigners is not None and not any(
                    k.algorithm == algorithm for k in keys
                ):
                    self.fail(
                        f"cosigner key of {cosigner_state}: no {algorithm} key trusted, and "
                        f"{algorithm} cosignatures are required (give it, or --require)"
                    )
        if self.trusted_log is None:
            self.fail(
                "log key: none trusted; the checks used the bundle's own key, which shows "
                "the bundle is consistent, not whose it is (give --log-key or --bundle)"
            )
        if self.trusted_cosigners is None:
            self.fail(
                "cosigner keys: none trusted; the checks used the bundle's own keys, which "
                "show the bundle is consistent, not who published it (give --cosigner-key "
                "or --bundle)"
            )
        return _Keys(log, cosigners)

    def check_witness_keys(self, value: Any) -> dict[str, list[CosignatureVerifier]]:
        """The external witnesses' keys to check lines with: the trusted ones if given
        (compared with the bundle's), else the bundle's, which count for nothing."""
        ours: dict[str, list[CosignatureVerifier]] = {}
        if value is not None and not isinstance(value, dict):
            self.fail(f"bundle: {_WITNESS_KEYS} is not an object of name: vkeys")
        for name, vkeys in sorted((value or {}).items()) if isinstance(value, dict) else ():
            for vkey in vkeys if isinstance(vkeys, list) else [vkeys]:
                try:
                    if not isinstance(vkey, str):
                        raise ValueError("not a string")
                    key = CosignatureVerifier.from_vkey(vkey)
                except ValueError as e:
                    self.fail(f"witness key of {name}: {vkey!r} is not a cosignature key: {e}")
                    continue
                if key.key_name != name:
                    self.fail(f"witness key of {name}: it is {key.key_name}'s key")
                    continue
                ours.setdefault(name, []).append(key)
        if self.trusted_witnesses is None:
            return ours
        for name in sorted(ours.keys() - self.trusted_witnesses.keys()):
            self.notices.append(
                f"witness key of {name}: in the bundle but not trusted; its cosignatures "
                "are not counted"
            )
        for name, theirs in sorted(self.trusted_witnesses.items()):
            self.compare(f"witness key of {name}", ours.get(name, []), theirs)
            for algorithm in self.required:
                if not any(k.algorithm == algorithm for k in theirs):
                    self.fail(
                        f"witness key of {name}: no {algorithm} key trusted, and {algorithm} "
                        "cosignatures are required (give it, or --require)"
                    )
        log_public = {k.public_key for k in self.keys.log} if self.keys else set()
        for name, theirs in sorted(self.trusted_witnesses.items()):
            if any(k.public_key in log_public for k in theirs):
                self.fail(f"witness key of {name}: the log's own key (one key, one role)")
        return {n: list(k) for n, k in self.trusted_witnesses.items()}

    def check_one_key_one_cosigner(self, keys: _Keys) -> None:
        """No public key stands for two cosigners (partner states or external witnesses):
        an Ed25519 cosignature names no cosigner, so one line relabelled would count for
        both."""
        owners: dict[bytes, str] = {}
        parties = [(f"cosigner key of {s}", ks) for s, ks in sorted(keys.cosigners.items())]
        parties += [(f"witness key of {n}", ks) for n, ks in sorted(keys.witnesses.items())]
        for label, party_keys in parties:
            for key in party_keys:
                other = owners.setdefault(key.public_key, label)
                if other != label:
                    self.fail(
                        f"{label}: the same {key.algorithm} key as the {other} (one key, one "
                        "cosigner: a cosignature would count for both)"
                    )

    def bundle_log_keys(self, value: Any) -> list[LogKey]:
        """The log keys the bundle names: a list of vkeys (v2) or one vkey (v1)."""
        vkeys = [value] if isinstance(value, str) else value
        if not isinstance(vkeys, list) or not all(isinstance(v, str) for v in vkeys):
            self.fail("log key: not a vkey string or a list of them")
            return []
        keys: list[LogKey] = []
        for vkey in vkeys:
            try:
                key = log_key_of(vkey)
            except ValueError as e:
                self.fail(f"log key: {vkey!r} is not a log key: {e}")
                continue
            if any(k.algorithm == key.algorithm for k in keys):
                self.fail(f"log key: two {key.algorithm} keys")
                continue
            keys.append(key)
        return keys

    def bundle_cosigner_keys(self, value: Any) -> dict[str, list[CosignatureVerifier]]:
        """The cosigner keys the bundle names: ``{state: [vkey]}`` (v2), ``{state: vkey}``
        (v1)."""
        if not isinstance(value, dict):
            self.fail("cosigner keys: not an object of state: vkeys")
            return {}
        cosigners: dict[str, list[CosignatureVerifier]] = {}
        for state, vkeys in sorted(value.items()):
            if _STATE.fullmatch(state) is None:
                self.fail(f"cosigner keys: {state!r} is not a state code")
                continue
            for vkey in [vkeys] if isinstance(vkeys, str) else vkeys:
                try:
                    if not isinstance(vkey, str):
                        raise ValueError("not a string")
                    key = CosignatureVerifier.from_vkey(vkey)
                except (ValueError, TypeError) as e:
                    self.fail(f"cosigner key of {state}: {vkey!r} is not a cosignature key: {e}")
                    continue
                cosigners.setdefault(state, []).append(key)
        return cosigners

    def compare(self, what: str, ours: Sequence[LogKey], trusted: Sequence[LogKey]) -> None:
        """The bundle's keys of ``what`` against the trusted ones, algorithm by algorithm."""
        by_algorithm = {k.algorithm: k for k in ours}
        for key in trusted:
            found = by_algorithm.pop(key.algorithm, None)
            if found is None:
                self.notices.append(f"{what}: trusted {key.algorithm} key absent from the bundle")
            elif found != key:
                self.fail(
                    f"{what}: the bundle's {_key_label(found)} is not the trusted "
                    f"{key.algorithm} key {_key_label(key)}"
                )
        for algorithm in sorted(by_algorithm):
            self.notices.append(f"{what}: the bundle's {algorithm} key is not trusted; unused")

    def check_note(self, text: str, label: str) -> _SignedCheckpoint | None:
        """Check a checkpoint note's signatures; ``None`` if it is not a checkpoint note."""
        try:
            note = parse_note(text)
            checkpoint = Checkpoint.parse(note.text)
        except (MalformedNote, MalformedCheckpoint) as e:
            self.fail(f"{label}: not a signed checkpoint: {e.message}")
            return None
        assert self.keys is not None  # checked in prepare() before any note
        origin = self.header.get("origin")
        if checkpoint.origin != origin:
            self.fail(f"{label}: origin {checkpoint.origin!r} is not the bundle's {origin!r}")
        signed = self.check_log_signature(note, label)
        if checkpoint.extensions and ED25519 not in self.required:
            self.fail(
                f"{label}: carries extension lines that no required signature covers (an "
                "ML-DSA-44 cosignature signs none of them; require Ed25519)"
            )
        verified: dict[str, set[str]] = {}
        by_key = {
            (k.key_name, k.key_id): (state, k)
            for state, keys in self.keys.cosigners.items()
            for k in keys
        }
        witness_keys = {
            (k.key_name, k.key_id): (name, k)
            for name, keys in self.keys.witnesses.items()
            for k in keys
        }
        witnessed: dict[str, set[str]] = {}
        log_lines = {(k.key_name, k.key_id) for k in self.keys.log}
        for line in note.signatures:
            pair = (line.key_name, line.key_id)
            if pair in log_lines:
                continue
            if pair in witness_keys:
                name, witness_key = witness_keys[pair]
                try:
                    line_cosignature = Cosignature.from_note_signature(line)
                    verify_cosignature(checkpoint, line_cosignature, witness_key)
                except (Rejected, ValueError):
                    self.fail(
                        f"{label}: {witness_key.algorithm} cosignature by witness {name} "
                        "does not verify"
                    )
                    continue
                witnessed.setdefault(name, set()).add(witness_key.algorithm)
                continue
            known = by_key.get(pair)
            if known is None:
                self.notices.append(
                    f"{label}: ignored a signature line by unknown key "
                    f"{line.key_name}+{line.key_id:08x}"
                )
                continue
            state, key = known
            try:
                cosignature = Cosignature.from_note_signature(line)
                verify_cosignature(checkpoint, cosignature, key)
            except (Rejected, ValueError):
                self.fail(f"{label}: {key.algorithm} cosignature by {state} does not verify")
                continue
            verified.setdefault(state, set()).add(key.algorithm)
        cosigned_by = [
            state
            for state in sorted(verified)
            if all(algorithm in verified[state] for algorithm in self.required)
        ]
        for state in sorted(set(verified) - set(cosigned_by)):
            lacking = sorted(set(self.required) - verified[state])
            self.notices.append(f"{label}: {state} did not cosign with {', '.join(lacking)}")
        if not cosigned_by and verified:
            self.fail(
                f"{label}: not published: no cosigner cosigned with every required algorithm "
                f"({', '.join(self.required)})"
            )
        elif not cosigned_by:
            self.fail(f"{label}: not published: no valid cosignature")
        elif self.trusted_cosigners:
            self.check_required(label, cosigned_by)
        witnessed_by = [
            name
            for name in sorted(witnessed)
            if all(algorithm in witnessed[name] for algorithm in self.required)
        ]
        for name in sorted(self.trusted_witnesses or {}):
            if name not in witnessed_by:
                lacking = sorted(set(self.required) - witnessed.get(name, set()))
                self.fail(
                    f"{label}: not cosigned by witness {name} with {', '.join(lacking)}, "
                    "whose key is trusted"
                )
        return _SignedCheckpoint(checkpoint, signed, tuple(cosigned_by), tuple(witnessed_by))

    def check_required(self, label: str, cosigned_by: list[str]) -> None:
        """The trusted cosigners that had to cosign did: all, or ``quorum`` of them."""
        assert self.trusted_cosigners
        missing = sorted(self.trusted_cosigners.keys() - set(cosigned_by))
        if self.quorum is None:
            if missing:
                self.fail(f"{label}: not cosigned by {', '.join(missing)}, whose key is trusted")
        elif len(cosigned_by) < self.quorum:
            self.fail(
                f"{label}: cosigned by {len(cosigned_by)} of the trusted cosigners, "
                f"fewer than the quorum of {self.quorum}"
            )

    def check_log_signature(self, note: Note, label: str) -> bool:
        """The log signed ``note`` in each required algorithm, and every line of a log key
        verifies."""
        assert self.keys is not None
        if not self.keys.log:
            self.fail(f"{label}: signature not checked: no usable log key")
            return False
        body = note.text.encode("utf-8")
        ok = True
        for key in self.keys.log:
            lines = [
                s for s in note.signatures if (s.key_name, s.key_id) == (key.key_name, key.key_id)
            ]
            if not lines:
                if key.algorithm in self.required:
                    self.fail(
                        f"{label}: not signed by the {key.algorithm} log key {_key_label(key)}"
                    )
                    ok = False
            elif not all(key.verify(body, line.signature) for line in lines):
                self.fail(
                    f"{label}: signature by the {key.algorithm} log key {_key_label(key)} "
                    "does not verify"
                )
                ok = False
        for algorithm in self.required:
            if not any(k.algorithm == algorithm for k in self.keys.log):
                self.fail(
                    f"{label}: no {algorithm} log key to check the log's {algorithm} signature "
                    "with (give it, or --require)"
                )
                ok = False
        return ok

    def check_range(self, complete: Any, bounds: Any) -> tuple[int, int] | None:
        if complete is False:
            return None
        if complete is not True:
            self.fail("bundle: complete is not true or false")
            return None
        if not isinstance(bounds, dict) or bounds.keys() != {"start", "end"}:
            self.fail("bundle: a complete bundle names its range as {start, end}")
            return None
        start, end = bounds["start"], bounds["end"]
        if type(start) is not int or type(end) is not int or not 0 <= start <= end:
            self.fail("bundle: complete range is not 0 <= start <= end")
            return None
        if self.main is not None and end > self.main.checkpoint.size:
            self.fail(
                f"bundle: complete range {start}..{end - 1} goes beyond the checkpoint's "
                f"tree size {self.main.checkpoint.size}"
            )
        return start, end

    def check_entries(self, items: Iterable[Any]) -> None:
        checkpoint = None if self.main is None else self.main.checkpoint
        if checkpoint is None:
            self.fail("entries: not checked: the bundle has no readable checkpoint")
        for position, item in enumerate(items):
            self.entries += 1
            if checkpoint is not None and self.check_entry(position, item, checkpoint):
                self.entries_verified += 1

    def check_entry(self, position: int, item: Any, checkpoint: Checkpoint) -> bool:
        if not isinstance(item, dict) or item.keys() != _ENTRY_MEMBERS:
            self.fail(f"entries[{position}]: not an object of index, canonical and proof")
            return False
        index = item["index"]
        if type(index) is not int or index < 0:
            self.fail(f"entries[{position}]: index is not a non-negative integer")
            return False
        label = f"entry {index}"
        if index >= checkpoint.size:
            self.fail(f"{label}: beyond the checkpoint's tree size {checkpoint.size}")
            return False
        if index in self.seen:
            self.fail(f"{label}: appears more than once")
            return False
        self.seen.add(index)
        canonical = _canonical_bytes(item["canonical"])
        if canonical is None:
            self.fail(f"{label}: canonical is not canonical base64")
            return False
        problem = entry_problem(canonical)
        if problem is not None:
            self.fail(f"{label}: {problem}")
        if item["proof"] is None:
            self.fail(f"{label}: carries no inclusion proof")
            return False
        proof = _hashes(item["proof"])
        if proof is None:
            self.fail(f"{label}: inclusion proof is not a list of base64 SHA-256 hashes")
            return False
        if not verify_inclusion(
            leaf_hash(canonical), index, checkpoint.size, proof, checkpoint.root_hash
        ):
            self.fail(f"{label}: inclusion proof does not reproduce the checkpoint root")
            return False
        return problem is None

    def check_complete(self) -> None:
        if self.complete_range is None:
            return
        start, end = self.complete_range
        expected = start
        for index in sorted(i for i in self.seen if start <= i < end):
            if index > expected:
                self.report_missing(expected, index - 1)
            expected = index + 1
        if expected < end:
            self.report_missing(expected, end - 1)

    def report_missing(self, first: int, last: int) -> None:
        if first == last:
            self.fail(f"entry {first} missing from a complete bundle")
        else:
            self.fail(f"entries {first}..{last} missing from a complete bundle")

    def check_consistency(self, items: Any) -> None:
        if not isinstance(items, list):
            self.fail("bundle: consistency is not a list")
            return
        if self.main is None or self.keys is None:
            if items:
                self.fail("consistency: not checked: the bundle has no readable checkpoint")
            return
        later = self.main.checkpoint
        for position, item in enumerate(items):
            label = f"consistency[{position}]"
            if not isinstance(item, dict) or item.keys() != {"checkpoint", "proof"}:
                self.fail(f"{label}: not an object of checkpoint and proof")
                continue
            if not isinstance(item["checkpoint"], str):
                self.fail(f"{label}: checkpoint is not a signed note")
                continue
            label = f"earlier checkpoint {_size_of(item['checkpoint']) or f'#{position}'}"
            earlier = self.check_note(item["checkpoint"], label)
            if earlier is None:
                continue
            size = earlier.checkpoint.size
            if size > later.size:
                self.fail(f"{label}: larger than the bundled checkpoint {later.size}")
                continue
            if item["proof"] is None:
                self.fail(f"{label}: carries no consistency proof (the log gave none)")
                continue
            proof = _hashes(item["proof"])
            if proof is None:
                self.fail(f"{label}: consistency proof is not a list of base64 SHA-256 hashes")
            elif not verify_consistency(
                size, later.size, proof, earlier.checkpoint.root_hash, later.root_hash
            ):
                self.fail(
                    f"{label}: consistency proof to checkpoint {later.size} does not verify: "
                    f"the log is not an extension of what was published at {size}"
                )
            else:
                self.consistent_with.append(size)
                self.earlier_roots[size] = earlier.checkpoint.root_hash

    def check_since(self, seen: tuple[Checkpoint, Note]) -> None:
        """The log grew from the checkpoint the auditor saw, and nothing in it changed."""
        checkpoint, note = seen
        size = checkpoint.size
        label = f"since: the checkpoint you saw at size {size}"
        if self.main is None or self.keys is None:
            self.fail(f"{label}: not checked: the bundle has no readable checkpoint")
            return
        if checkpoint.origin != self.main.checkpoint.origin:
            self.fail(f"{label}: is of {checkpoint.origin!r}, not of this log")
            return
        if not self.check_log_signature(note, label):
            return
        later = self.main.checkpoint
        if size > later.size:
            self.fail(
                f"{label}: the bundle's checkpoint {later.size} is older: the log shrank "
                f"(restored or rolled back) after {later.size}"
            )
        elif size == later.size:
            if checkpoint.root_hash != later.root_hash:
                self.fail(f"{label}: the log holds other entries at {size}: it was rewritten")
        elif size not in self.earlier_roots:
            self.fail(
                f"{label}: the bundle carries no consistency proof from it (export with "
                f"since_tree_size {size})"
            )
        elif self.earlier_roots[size] != checkpoint.root_hash:
            self.fail(
                f"{label}: not an extension of it: the log was rewritten at or before "
                f"{size} and regrown"
            )
        else:
            self.notices.append(f"{label}: the log only grew from it, to {later.size}")

    def report(self) -> VerificationReport:
        main = self.main
        keys = self.keys
        return VerificationReport(
            format=self.header.get("format")
            if isinstance(self.header.get("format"), str)
            else None,
            origin=None if main is None else main.checkpoint.origin,
            tree_size=None if main is None else main.checkpoint.size,
            root_hash=None if main is None else main.checkpoint.root_hash,
            log_keys=() if keys is None else tuple(str(k.vkey) for k in keys.log),
            cosigner_keys={}
            if keys is None
            else {s: tuple(str(k.vkey) for k in ks) for s, ks in keys.cosigners.items()},
            required_algorithms=self.required,
            log_key_trusted=self.trusted_log is not None,
            cosigner_keys_trusted=self.trusted_cosigners is not None,
            published=main is not None and main.signed and bool(main.cosigned_by),
            cosigned_by=() if main is None else main.cosigned_by,
            entries=self.entries,
            entries_verified=self.entries_verified,
            complete_range=self.complete_range,
            consistent_with=tuple(self.consistent_with),
            failures=tuple(self.failures),
            notices=tuple(self.notices),
            checkpoint_note=self.header.get("checkpoint")
            if isinstance(self.header.get("checkpoint"), str)
            else None,
            witnessed_by=() if main is None else main.witnessed_by,
        )


def _size_of(text: str) -> int | None:
    """The tree size a note claims, to name it in messages (nothing verified yet)."""
    try:
        return Checkpoint.parse(parse_note(text).text).size
    except (MalformedNote, MalformedCheckpoint):
        return None


def _canonical_bytes(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == value else None


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("a field appears twice")
    return document


def entry_problem(canonical: bytes) -> str | None:
    """Why ``canonical`` is not a canonical v1 audit entry, or ``None`` if it is one."""
    try:
        document = json.loads(canonical, object_pairs_hook=_refuse_duplicates)
    except ValueError:
        return "canonical is not UTF-8 JSON without duplicate fields"
    if not isinstance(document, dict):
        return "canonical is not a JSON object"
    if document.keys() != _ENTRY_FIELDS:
        missing = sorted(_ENTRY_FIELDS - document.keys())
        extra = sorted(document.keys() - _ENTRY_FIELDS)
        return f"canonical fields differ from v1: missing {missing}, unexpected {extra}"
    version = document["v"]
    if type(version) is not int or version != ENCODING_VERSION:
        return f"canonical is encoding version {version!r}, not {ENCODING_VERSION}"
    event = _event(document)
    if isinstance(event, str):
        return event
    # Every value is now an ASCII token, a safe integer, null or a list of tokens, for
    # which RFC 8785 is exactly JSON with sorted keys and no spaces: no need for the
    # slower general encoder on a million entries.
    expected = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if event.as_document() != document or expected.encode("utf-8") != canonical:
        return "canonical is not the RFC 8785 encoding of its v1 fields"
    return None


def _event(document: dict[str, Any]) -> AuditEvent | str:
    """The event ``document`` records, or what is wrong with one of its fields."""
    moment = document["time"]
    match = _TIME.fullmatch(moment) if isinstance(moment, str) else None
    if match is None:
        return "canonical time is not YYYY-MM-DDTHH:MM:SS.mmmZ"
    for name in _TOKEN_FIELDS:
        if document[name] is not None and not isinstance(document[name], str):
            return f"canonical {name} is neither a string nor null"
    version = document["agreement_version"]
    if version is not None and (
        type(version) is not int or not -_MAX_SAFE_INTEGER <= version <= _MAX_SAFE_INTEGER
    ):
        return "canonical agreement_version is neither a safe integer nor null"
    for name in _PATH_FIELDS:
        paths = document[name]
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            return f"canonical {name} is not a list of field paths"
    try:
        year, month, day, hour, minute, second, milli = (int(part) for part in match.groups())
        return AuditEvent(
            time=datetime(year, month, day, hour, minute, second, milli * 1000, tzinfo=UTC),
            event_kind=EventKind(document["event_kind"]),
            decision=Decision(document["decision"]),
            agreement_version=version,
            removed_paths=tuple(document["removed_paths"]),
            transformed_paths=tuple(document["transformed_paths"]),
            **{name: document[name] for name in _TOKEN_FIELDS},
        )
    except ValueError as e:
        return f"canonical breaks the v1 entry rules: {e}"
