"""Sealing stored payloads: AES-256-GCM encryption at rest, bound to the row that holds it.

Guarantees:

* A sealed value is ``0x01 || key id (8 bytes) || nonce (12 bytes) || ciphertext+tag``.
  The key id is the first 8 bytes of a SHA-256 over the key (with a fixed label), so
  it names the key without revealing it. The nonce is 96 random bits, fresh for every
  value; rotate the key well before it has sealed 2^32 values (NIST SP 800-38D's bound
  for random nonces).
* The associated data is the header (version and key id) followed by the identity of
  the row the value belongs to, such as ``outbox:<message id>``. A value copied to
  another row, or from one table to the other, fails to open exactly like a tampered
  one: :class:`SealingError`, never a wrong plaintext.
* :class:`PayloadSealer` seals with its current key only and opens with the current key
  or any previous one, so a key can be rotated without re-encrypting stored rows. A key
  id it does not hold is refused by name (``unknown key id``), before any decryption.
* Key files hold exactly 32 random bytes as hex (64 characters, one optional trailing
  newline). :func:`generate_sealing_key` writes one with mode 0600 from creation and
  never overwrites an existing key: losing the old key loses every row sealed with it.

Error messages name files and key ids, never key material or plaintext.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.pki.keys import write_secret_file

__all__ = [
    "KEY_BYTES",
    "SEALED_VERSION",
    "PayloadSealer",
    "SealingError",
    "SealingKeys",
    "generate_sealing_key",
    "load_sealing_keys",
    "sealing_key_id",
]

SEALED_VERSION = 0x01
KEY_BYTES = 32
KEY_ID_BYTES = 8
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER_BYTES = 1 + KEY_ID_BYTES
_KEY_ID_LABEL = b"pouch payload sealing key id\x00"
_KEY_TEXT = re.compile(rf"[0-9a-fA-F]{{{2 * KEY_BYTES}}}\n?")


class SealingError(ValueError):
    """A sealed value cannot be opened: malformed, unknown key, tampered or misplaced."""


def sealing_key_id(key: bytes) -> bytes:
    """The 8-byte id that names ``key`` in every value sealed with it."""
    return hashlib.sha256(_KEY_ID_LABEL + key).digest()[:KEY_ID_BYTES]


@dataclass(frozen=True)
class SealingKeys:
    """The key new values are sealed with, and older keys still accepted for opening."""

    current: bytes = field(repr=False)
    previous: tuple[bytes, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        for key in (self.current, *self.previous):
            if len(key) != KEY_BYTES:
                raise ValueError(f"a sealing key must be {KEY_BYTES} bytes")

    def __repr__(self) -> str:
        ids = ", ".join(sealing_key_id(k).hex() for k in (self.current, *self.previous))
        return f"SealingKeys(ids=[{ids}])"


class PayloadSealer:
    """Seals payloads with the current key; opens them with the current or a previous key."""

    def __init__(self, keys: SealingKeys) -> None:
        self._current_id = sealing_key_id(keys.current)
        self._current = AESGCM(keys.current)
        self._by_id: dict[bytes, AESGCM] = {self._current_id: self._current}
        for key in dict.fromkeys(keys.previous):
            if key == keys.current:
                continue  # listed twice, harmlessly
            key_id = sealing_key_id(key)
            if key_id in self._by_id:
                raise ValueError(f"two different sealing keys share the key id {key_id.hex()}")
            self._by_id[key_id] = AESGCM(key)

    @property
    def current_key_id(self) -> bytes:
        """The id of the key :meth:`seal` uses."""
        return self._current_id

    def seal(self, plain: bytes, *, aad: str) -> bytes:
        """Encrypt ``plain`` for the row named by ``aad`` (such as ``outbox:<message id>``)."""
        header = bytes([SEALED_VERSION]) + self._current_id
        nonce = secrets.token_bytes(NONCE_BYTES)
        return header + nonce + self._current.encrypt(nonce, plain, header + aad.encode())

    def open(self, sealed: bytes, *, aad: str) -> bytes:
        """The plaintext of ``sealed``, if it was sealed for the row named by ``aad``.

        :class:`SealingError` if the value is malformed, names a key this sealer does
        not hold, or fails authentication (tampered, or sealed for another row).
        """
        if len(sealed) < _HEADER_BYTES + NONCE_BYTES + TAG_BYTES:
            raise SealingError("sealed value is truncated")
        if sealed[0] != SEALED_VERSION:
            raise SealingError(f"sealed value has unknown format version {sealed[0]}")
        header = sealed[:_HEADER_BYTES]
        key_id = header[1:]
        cipher = self._by_id.get(key_id)
        if cipher is None:
            raise SealingError(f"sealed value uses unknown key id {key_id.hex()}")
        nonce = sealed[_HEADER_BYTES : _HEADER_BYTES + NONCE_BYTES]
        try:
            return cipher.decrypt(
                nonce, sealed[_HEADER_BYTES + NONCE_BYTES :], header + aad.encode()
            )
        except InvalidTag as e:
            raise SealingError(
                f"sealed value failed authentication under key id {key_id.hex()}: "
                "tampered, or sealed for another row"
            ) from e


def load_sealing_keys(current: Path, previous: Iterable[Path] = ()) -> SealingKeys:
    """Read the current key file and the previous ones; :class:`ValueError` names a bad file."""
    return SealingKeys(_read_key(Path(current)), tuple(_read_key(Path(p)) for p in previous))


def generate_sealing_key(path: Path) -> bytes:
    """Write a fresh key to ``path`` (mode 0600, atomically) and return its id.

    An existing file is never replaced (:class:`FileExistsError`).
    """
    key = secrets.token_bytes(KEY_BYTES)
    write_secret_file(Path(path), (key.hex() + "\n").encode("ascii"))
    return sealing_key_id(key)


def _read_key(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read sealing key ({type(e).__name__})") from e
    if not _KEY_TEXT.fullmatch(text):
        raise ValueError(f"{path}: a sealing key file holds {KEY_BYTES} random bytes as hex")
    return bytes.fromhex(text)
