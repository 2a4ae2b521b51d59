"""An agreement's hashing key, shown equal on both sides without revealing it.

Both parties hash fields under ``hash`` rules with one key they hold for the agreement;
a partner holding another key makes tokens that never link, and nothing in a single
exchange shows it. So each side derives :func:`hash_key_fingerprint`, an HMAC-SHA256
keyed with the hashing key over a fixed label and the agreement's digest, and shows it
to the other. It is one-way (it says nothing of the key) and bound to one text of one
agreement (the same key under another text gives another fingerprint). Before any
agreement text exists, :func:`hash_key_id` names a key the same one-way, for the two
operators to compare once it is handed over; :func:`generate_hash_key` makes one
(``pouch keys hash-key``).

:class:`HashKeyStanding` keeps, per agreement text (id and digest), whether the partner
showed the same fingerprint (confirmed) or another (mismatched). A mismatch holds for
the life of the process: the registry reports the agreement inactive with
``HASH_KEY_MISMATCH`` and refuses it in both directions, until the operators install
the same key and restart. It is logged once per agreement text, and each listener (a
metric, telling the partner) is called once. Usage::

    standing = HashKeyStanding()
    own = hash_key_fingerprint(key, loaded.digest)
    standing.compare(loaded.id, loaded.version, loaded.digest, "BE", own=own, stated=theirs)
    # HashKeyMismatch if they differ; from then on standing.mismatched(id, digest)
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import AgreementRejected
from gateway.pki.keys import write_secret_file

log = logging.getLogger(__name__)

HASH_KEY_MISMATCH = "HASH_KEY_MISMATCH"
FINGERPRINT_LABEL = b"pouch hash-key fingerprint v1"
FINGERPRINT_HEX_LENGTH = 64
NEW_KEY_BYTES = 32
_KEY_ID_LABEL = b"pouch hash-key id v1\x00"
_KEY_TEXT = re.compile(r"(?:[0-9a-fA-F]{2}){32,}")


def hash_key_id(hash_key: bytes) -> str:
    """``sha256:`` and 32 hex digits naming a hashing key without revealing it, bound to no
    agreement: what the two operators read to each other after handing the key over."""
    return "sha256:" + hashlib.sha256(_KEY_ID_LABEL + hash_key).hexdigest()[:32]


def parse_hash_key(text: str) -> bytes:
    """A hashing key file's text: 32 or more bytes as hex, surrounding whitespace aside."""
    stripped = text.strip()
    if _KEY_TEXT.fullmatch(stripped) is None:
        raise ValueError(f"a hashing key is {NEW_KEY_BYTES} or more random bytes written as hex")
    return bytes.fromhex(stripped)


def generate_hash_key(path: Path) -> str:
    """Write a fresh hashing key to ``path`` (mode 0600 from creation, atomically, never
    over an existing file) and return its :func:`hash_key_id`."""
    key = secrets.token_bytes(NEW_KEY_BYTES)
    write_secret_file(Path(path), (key.hex() + "\n").encode("ascii"), overwrite=False)
    return hash_key_id(key)


def hash_key_fingerprint(hash_key: bytes, agreement_digest: str) -> str:
    """Hex HMAC-SHA256(hash_key, label || 0x00 || agreement digest)."""
    if not hash_key:
        raise ValueError("a hashing key is never empty")
    if not agreement_digest:
        raise ValueError("a fingerprint is bound to an agreement digest")
    message = FINGERPRINT_LABEL + b"\x00" + agreement_digest.encode("ascii")
    return hmac.new(hash_key, message, hashlib.sha256).hexdigest()


class HashKeyMismatch(AgreementRejected):
    """The partner holds another hashing key for this agreement."""

    reason = HASH_KEY_MISMATCH


@dataclass(frozen=True)
class Mismatch:
    """A mismatch found for one agreement text with one partner.

    ``partner_knows`` is true when the partner found it first (it refused our
    fingerprint, or answered with its own): nobody needs to tell it.
    """

    agreement_id: str
    agreement_version: int
    digest: str
    partner_state: str
    partner_knows: bool


MismatchListener = Callable[[Mismatch], None]


class HashKeyStanding:
    """Which agreement texts were confirmed with the partner, and which mismatched.

    Thread-safe: the receiver, the dispatcher and notices (on worker threads) share it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._confirmed: set[tuple[str, str]] = set()
        self._mismatched: dict[tuple[str, str], Mismatch] = {}
        self._listeners: list[MismatchListener] = []

    def listen(self, listener: MismatchListener) -> None:
        """Call ``listener`` once for each mismatch recorded from now on."""
        with self._lock:
            self._listeners.append(listener)

    def confirmed(self, agreement_id: str, digest: str) -> bool:
        with self._lock:
            return (agreement_id, digest) in self._confirmed

    def mismatched(self, agreement_id: str, digest: str) -> bool:
        with self._lock:
            return (agreement_id, digest) in self._mismatched

    def compare(
        self,
        agreement_id: str,
        version: int,
        digest: str,
        partner_state: str,
        *,
        own: str,
        stated: str,
        partner_knows: bool = False,
    ) -> None:
        """Record whether ``stated`` (the partner's) equals ``own``; :class:`HashKeyMismatch`
        when it does not."""
        if hmac.compare_digest(own.encode("ascii"), stated.encode("ascii", "replace")):
            with self._lock:
                if (agreement_id, digest) not in self._mismatched:
                    self._confirmed.add((agreement_id, digest))
                    return
            raise self.refusal(agreement_id, version)
        self.record_mismatch(
            Mismatch(agreement_id, version, digest, partner_state, partner_knows=partner_knows)
        )
        raise self.refusal(agreement_id, version)

    def record_mismatch(self, mismatch: Mismatch) -> bool:
        """Hold the agreement text out of force; ``True`` if this call recorded it."""
        key = (mismatch.agreement_id, mismatch.digest)
        with self._lock:
            if key in self._mismatched:
                return False
            self._mismatched[key] = mismatch
            self._confirmed.discard(key)
            listeners = list(self._listeners)
        log.error(
            "%s: agreement %s version %d with %s is out of force: the partner's hashing-key "
            "fingerprint differs from this gateway's; both parties must install the same "
            "hashing key for the agreement and restart",
            HASH_KEY_MISMATCH,
            mismatch.agreement_id,
            mismatch.agreement_version,
            mismatch.partner_state,
        )
        for listener in listeners:
            listener(mismatch)
        return True

    @staticmethod
    def refusal(agreement_id: str, version: int) -> HashKeyMismatch:
        return HashKeyMismatch(
            f"agreement {agreement_id!r} version {version} is not in force: the partner "
            "holds another hashing key for it"
        )
