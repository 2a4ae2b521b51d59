"""The hashing-key fingerprint: equal only for the same key and text, and never the key."""

from __future__ import annotations

import secrets

import pytest

from gateway.agreements.hash_key import (
    HashKeyMismatch,
    HashKeyStanding,
    Mismatch,
    hash_key_fingerprint,
)

DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32


def test_the_same_key_and_text_give_the_same_fingerprint() -> None:
    key = secrets.token_bytes(32)
    assert hash_key_fingerprint(key, DIGEST) == hash_key_fingerprint(bytes(key), DIGEST)


def test_another_key_gives_another_fingerprint() -> None:
    key = secrets.token_bytes(32)
    assert hash_key_fingerprint(key, DIGEST) == hash_key_fingerprint(key, DIGEST)
    assert hash_key_fingerprint(key, DIGEST) != hash_key_fingerprint(
        secrets.token_bytes(32), DIGEST
    )


def test_a_fingerprint_for_one_agreement_text_does_not_stand_for_another() -> None:
    key = secrets.token_bytes(32)
    assert hash_key_fingerprint(key, DIGEST) != hash_key_fingerprint(key, OTHER_DIGEST)


def test_the_fingerprint_never_shows_the_key() -> None:
    key = secrets.token_bytes(32)
    fingerprint = hash_key_fingerprint(key, DIGEST)
    assert key.hex() not in fingerprint
    assert key.hex()[:16] not in fingerprint
    assert len(fingerprint) == 64 and int(fingerprint, 16) >= 0


def test_a_differing_fingerprint_holds_the_agreement_out_of_force(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = secrets.token_bytes(32)
    own = hash_key_fingerprint(key, DIGEST)
    standing = HashKeyStanding()
    found: list[Mismatch] = []
    standing.listen(found.append)
    standing.compare("at-be", 1, DIGEST, "BE", own=own, stated=own)
    assert standing.confirmed("at-be", DIGEST) and not standing.mismatched("at-be", DIGEST)

    theirs = hash_key_fingerprint(secrets.token_bytes(32), DIGEST)
    with pytest.raises(HashKeyMismatch) as refused:
        standing.compare("at-be", 1, DIGEST, "BE", own=own, stated=theirs)
    assert refused.value.reason == "HASH_KEY_MISMATCH"
    assert standing.mismatched("at-be", DIGEST) and not standing.confirmed("at-be", DIGEST)
    assert [m.partner_state for m in found] == ["BE"]
    # Once found, the right fingerprint no longer brings it back, and it is told once.
    with pytest.raises(HashKeyMismatch):
        standing.compare("at-be", 1, DIGEST, "BE", own=own, stated=own)
    assert len(found) == 1
    text = caplog.text + str(refused.value.message)
    assert "HASH_KEY_MISMATCH" in caplog.text
    assert key.hex() not in text and own not in text and theirs not in text
