"""C2SP signed notes (c2sp.org/signed-note v1.0.0): text signed by one or more keys.

Format::

    <text, ending in a newline>
    <blank line>
    — <key name> <base64(4-byte big-endian key ID || signature)>
    ...

Two stages, each with its own type. :func:`parse_note` checks syntax only and
returns a :class:`Note`, nothing of which is trusted. :func:`open_note` checks the
signatures of the keys it is given and returns a :class:`VerifiedNote`; only its
``text`` may be acted on.

Guarantees of :func:`open_note` (the rules of the specification's "Signatures"):

* A signature line whose (key name, key ID) pair is not a known key is ignored,
  even if it shares the name or the ID (but not both) with a known key. It lands in
  :attr:`VerifiedNote.ignored`, which says what was *not* trusted.
* Every line of a known key is verified; one that fails rejects the whole note
  (:class:`UnverifiedNote`), so a bad signature cannot hide behind a good one.
* A note with no verified signature is rejected (:class:`UnverifiedNote`).
* Syntax is strict (:class:`MalformedNote`): UTF-8 without control characters other
  than newline, the text ends at the last blank line, key names are non-empty without
  Unicode spaces or ``+``, base64 is standard and canonical, at most
  :data:`MAX_SIGNATURES` lines and :data:`MAX_NOTE_BYTES` bytes (the specification
  asks verifiers to accept at least 16 signatures).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from gateway.errors import Rejected
from gateway.pki.note_keys import (
    ED25519,
    PUBLIC_KEY_SIZE,
    SIGNATURE_TYPE_ED25519,
    Ed25519Signer,
    note_key_id,
    verify_ed25519,
)

SIGNATURE_PREFIX = "— "  # em dash (U+2014), space
MAX_SIGNATURES = 100
MAX_NOTE_BYTES = 256 * 1024  # 16 post-quantum signatures of nearly 5 kB fit many times over
_KEY_ID_SIZE = 4


class MalformedNote(Rejected):
    """The bytes are not a signed note; nothing in them can be read."""

    reason = "NOTE_MALFORMED"
    code = grpc.StatusCode.INVALID_ARGUMENT


class UnverifiedNote(Rejected):
    """No known key vouches for the note, or a known key's signature is wrong."""

    reason = "NOTE_SIGNATURE"
    code = grpc.StatusCode.PERMISSION_DENIED


def is_valid_key_name(name: str) -> bool:
    """Non-empty, valid text, no Unicode spaces and no ``+`` (signed-note "Format")."""
    return (
        bool(name)
        and "+" not in name
        and not any(ch.isspace() for ch in name)
        and _is_note_text(name)
    )


def validate_key_name(name: str) -> str:
    if not is_valid_key_name(name):
        raise ValueError(f"invalid note key name {name!r}: need no spaces and no '+'")
    return name


def _is_note_text(text: str) -> bool:
    """UTF-8 encodable (no lone surrogates) and no control character but newline."""
    if any(ord(ch) < 0x20 and ch != "\n" for ch in text):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_canonical_base64(value: str) -> bytes:
    """Standard base64 (RFC 4648 section 4), padded; a non-canonical encoding is refused.

    Canonical only, so one signature has one spelling and a duplicate is a duplicate.
    """
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ValueError("not standard base64") from e
    if base64.b64encode(raw).decode("ascii") != value:
        raise ValueError("not canonical base64")
    return raw


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: who claims to have signed (name, key ID) and the bytes."""

    key_name: str
    key_id: int
    signature: bytes

    def __post_init__(self) -> None:
        validate_key_name(self.key_name)
        if not 0 <= self.key_id <= 0xFFFFFFFF:
            raise ValueError("a note key ID is an unsigned 32-bit integer")
        if not self.signature:
            raise ValueError("a note signature is not empty")

    @property
    def line(self) -> str:
        """The signature line, with its final newline."""
        raw = self.key_id.to_bytes(_KEY_ID_SIZE, "big") + self.signature
        return f"{SIGNATURE_PREFIX}{self.key_name} {base64.b64encode(raw).decode('ascii')}\n"


def parse_signature_line(line: str) -> NoteSignature:
    """One ``— <name> <base64>`` line, with or without its final newline."""
    if line.endswith("\n"):
        line = line[:-1]
    if "\n" in line or not line.startswith(SIGNATURE_PREFIX):
        raise MalformedNote("a note signature line starts with an em dash and a space")
    name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
    if not is_valid_key_name(name):
        raise MalformedNote("a note signature names its key without spaces or '+'")
    try:
        raw = decode_canonical_base64(encoded)
    except ValueError as e:
        raise MalformedNote(f"note signature by {name!r} is not canonical base64") from e
    if len(raw) <= _KEY_ID_SIZE:
        raise MalformedNote(f"note signature by {name!r} is too short")
    return NoteSignature(name, int.from_bytes(raw[:_KEY_ID_SIZE], "big"), raw[_KEY_ID_SIZE:])


@dataclass(frozen=True)
class Note:
    """A syntactically valid signed note. Nothing in it is trusted yet."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        if not self.text.endswith("\n") or not _is_note_text(self.text):
            raise ValueError("note text ends with a newline and has no control characters")
        if not self.signatures:
            raise ValueError("a signed note carries at least one signature")

    def serialize(self) -> str:
        return self.text + "\n" + "".join(s.line for s in self.signatures)

    def with_signatures(self, extra: Iterable[NoteSignature]) -> Note:
        """This note plus ``extra``; an existing line of the same (name, key ID) is replaced."""
        added = tuple(extra)
        replaced = {(s.key_name, s.key_id) for s in added}
        kept = tuple(s for s in self.signatures if (s.key_name, s.key_id) not in replaced)
        return Note(self.text, kept + added)


def parse_note(data: str | bytes) -> Note:
    """Split a signed note into text and signature lines; checks syntax, trusts nothing."""
    if isinstance(data, bytes):
        if len(data) > MAX_NOTE_BYTES:
            raise MalformedNote(f"a signed note is at most {MAX_NOTE_BYTES} bytes")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedNote("a signed note is UTF-8") from e
    elif len(data) > MAX_NOTE_BYTES:  # cheap bound before encoding
        raise MalformedNote(f"a signed note is at most {MAX_NOTE_BYTES} bytes")
    if not _is_note_text(data):
        raise MalformedNote("a signed note has no control characters other than newline")
    if len(data.encode("utf-8")) > MAX_NOTE_BYTES:
        raise MalformedNote(f"a signed note is at most {MAX_NOTE_BYTES} bytes")
    split = data.rfind("\n\n")
    if split < 0:
        raise MalformedNote("a signed note separates its text from its signatures by a blank line")
    text, block = data[: split + 1], data[split + 2 :]
    if not block.endswith("\n"):
        raise MalformedNote("a signed note ends with a newline-terminated signature line")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNote(f"a signed note carries at most {MAX_SIGNATURES} signatures")
    return Note(text, tuple(parse_signature_line(line) for line in lines))


_HEX_KEY_ID = re.compile(r"[0-9a-fA-F]{8}")


@dataclass(frozen=True)
class VerifierKey:
    """A public note key in the signed-note "vkey" text encoding.

    ``<name>+<8 hex digits of key ID>+base64(<signature type byte> || <public key>)``,
    as golang.org/x/mod/sumdb/note writes them: a way to show or compare a key out
    of band. Pouch takes keys from trust bundles; this encoding is for people.
    """

    key_name: str
    signature_type: int
    public_key: bytes

    def __post_init__(self) -> None:
        validate_key_name(self.key_name)
        if not 0 <= self.signature_type <= 0xFF or not self.public_key:
            raise ValueError("a verifier key has a type byte and a public key")

    @property
    def key_id(self) -> int:
        return note_key_id(self.key_name, self.signature_type, self.public_key)

    def __str__(self) -> str:
        material = base64.b64encode(bytes([self.signature_type]) + self.public_key)
        return f"{self.key_name}+{self.key_id:08x}+{material.decode('ascii')}"

    @classmethod
    def parse(cls, vkey: str) -> VerifierKey:
        """Parse a vkey; its key ID must be the one its name, type and key give."""
        name, _, rest = vkey.partition("+")
        key_id, _, material = rest.partition("+")
        if _HEX_KEY_ID.fullmatch(key_id) is None:
            raise ValueError("a verifier key is <name>+<8 hex digits>+<base64>")
        raw = decode_canonical_base64(material)
        if len(raw) < 2:
            raise ValueError("a verifier key holds a type byte and a public key")
        key = cls(name, raw[0], raw[1:])
        if key.key_id != int(key_id, 16):
            raise ValueError(f"verifier key {name!r}: key ID does not match the key")
        return key


class NoteVerifier(Protocol):
    """A known key: its name, its key ID and how to check its signatures over note text."""

    @property
    def key_name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (without the 4-byte key ID) is valid over ``text``."""
        ...


class NoteSigner(Protocol):
    @property
    def key_name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def sign(self, text: bytes) -> bytes: ...


@dataclass(frozen=True)
class Ed25519NoteVerifier:
    """A known Ed25519 note key (signature type 0x01)."""

    key_name: str
    public_key: bytes
    key_id: int = field(init=False)

    def __post_init__(self) -> None:
        validate_key_name(self.key_name)
        if len(self.public_key) != PUBLIC_KEY_SIZE:
            raise ValueError("an Ed25519 public key is 32 bytes")
        key_id = note_key_id(self.key_name, SIGNATURE_TYPE_ED25519, self.public_key)
        object.__setattr__(self, "key_id", key_id)

    @property
    def algorithm(self) -> str:
        return ED25519

    def verify(self, text: bytes, signature: bytes) -> bool:
        return verify_ed25519(self.public_key, text, signature)

    @classmethod
    def from_vkey(cls, vkey: str | VerifierKey) -> Ed25519NoteVerifier:
        key = vkey if isinstance(vkey, VerifierKey) else VerifierKey.parse(vkey)
        if key.signature_type != SIGNATURE_TYPE_ED25519:
            raise ValueError(f"verifier key {key.key_name!r} is not of type 0x01 (Ed25519)")
        return cls(key.key_name, key.public_key)

    @property
    def vkey(self) -> VerifierKey:
        return VerifierKey(self.key_name, SIGNATURE_TYPE_ED25519, self.public_key)


class Ed25519NoteSigner:
    """Signs note text with an Ed25519 key under a key name (signature type 0x01)."""

    def __init__(self, key_name: str, key: Ed25519Signer) -> None:
        self._key_name = validate_key_name(key_name)
        self._key = key
        self._key_id = note_key_id(key_name, SIGNATURE_TYPE_ED25519, key.public_key)

    @property
    def key_name(self) -> str:
        return self._key_name

    @property
    def key_id(self) -> int:
        return self._key_id

    def sign(self, text: bytes) -> bytes:
        return self._key.sign(text)

    def verifier(self) -> Ed25519NoteVerifier:
        return Ed25519NoteVerifier(self._key_name, self._key.public_key)


def signature_by(signer: NoteSigner, text: str) -> NoteSignature:
    """``signer``'s signature line over ``text`` (which must be valid note text)."""
    if not text.endswith("\n") or not _is_note_text(text):
        raise ValueError("note text ends with a newline and has no control characters")
    return NoteSignature(signer.key_name, signer.key_id, signer.sign(text.encode("utf-8")))


def sign_note(text: str, *signers: NoteSigner) -> Note:
    """A new note over ``text`` signed by every one of ``signers`` (at least one)."""
    if not signers:
        raise ValueError("a signed note needs at least one signer")
    return Note(text, tuple(signature_by(s, text) for s in signers))


@dataclass(frozen=True)
class VerifiedNote:
    """A note whose ``verified`` signatures were each checked against a known key.

    Made only by :func:`open_note`. ``ignored`` holds the lines of unknown keys,
    duplicates removed: kept so a caller can see them, never to be relied on.
    """

    text: str
    verified: tuple[NoteSignature, ...]
    ignored: tuple[NoteSignature, ...]

    def signed_by(self, verifier: NoteVerifier) -> bool:
        return any(
            s.key_name == verifier.key_name and s.key_id == verifier.key_id for s in self.verified
        )

    def signatures_of(self, verifier: NoteVerifier) -> tuple[NoteSignature, ...]:
        return tuple(
            s
            for s in self.verified
            if s.key_name == verifier.key_name and s.key_id == verifier.key_id
        )


def open_note(data: str | bytes | Note, verifiers: Sequence[NoteVerifier]) -> VerifiedNote:
    """Parse ``data`` and verify it with the known ``verifiers`` (see module docstring)."""
    known: dict[tuple[str, int], NoteVerifier] = {}
    for verifier in verifiers:
        pair = (verifier.key_name, verifier.key_id)
        if pair in known:
            # Two known keys with one name and ID: the configuration is wrong, not the note.
            raise ValueError(f"ambiguous note key {pair[0]}+{pair[1]:08x}")
        known[pair] = verifier
    note = data if isinstance(data, Note) else parse_note(data)
    text = note.text.encode("utf-8")
    verified: list[NoteSignature] = []
    ignored: list[NoteSignature] = []
    for signature in note.signatures:
        key = known.get((signature.key_name, signature.key_id))
        if key is None:
            if signature not in ignored:
                ignored.append(signature)
            continue
        if not key.verify(text, signature.signature):
            raise UnverifiedNote(
                f"signature by known key {signature.key_name}+{signature.key_id:08x} is invalid"
            )
        if not any(
            (s.key_name, s.key_id) == (signature.key_name, signature.key_id) for s in verified
        ):
            verified.append(signature)
    if not verified:
        raise UnverifiedNote("note has no signature by a known key")
    return VerifiedNote(note.text, tuple(verified), tuple(ignored))
