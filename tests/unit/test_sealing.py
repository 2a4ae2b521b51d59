"""Sealing payloads at rest: bound to their row, refused when tampered, rotatable."""

from __future__ import annotations

import re
import secrets
import stat
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_settings
from gateway.pki.sealing import (
    KEY_BYTES,
    SEALED_VERSION,
    PayloadSealer,
    SealingError,
    SealingKeys,
    generate_sealing_key,
    load_sealing_keys,
    sealing_key_id,
)

PAYLOAD = b"birth registration of Amelie Exemple, born 2024-03-01 in Lyon"
HEADER = 1 + 8
NONCE = 12


def sealer(current: bytes, *previous: bytes) -> PayloadSealer:
    return PayloadSealer(SealingKeys(current, previous))


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def test_sealed_value_opens_for_its_row_and_hides_the_payload() -> None:
    key = new_key()
    sealed = sealer(key).seal(PAYLOAD, aad="outbox:m-1")

    assert PAYLOAD not in sealed
    assert sealed[0] == SEALED_VERSION
    assert sealed[1:HEADER] == sealing_key_id(key)
    assert sealer(key).open(sealed, aad="outbox:m-1") == PAYLOAD


def test_every_seal_uses_a_fresh_nonce() -> None:
    s = sealer(new_key())
    first, second = (s.seal(PAYLOAD, aad="outbox:m-1") for _ in range(2))

    assert first[HEADER : HEADER + NONCE] != second[HEADER : HEADER + NONCE]
    assert first != second


@pytest.mark.parametrize("other_row", ["outbox:m-2", "inbox:m-1", "outbox:m-1 ", ""])
def test_sealed_value_moved_to_another_row_is_refused(other_row: str) -> None:
    s = sealer(new_key())
    sealed = s.seal(PAYLOAD, aad="outbox:m-1")

    with pytest.raises(SealingError, match="another row"):
        s.open(sealed, aad=other_row)


@pytest.mark.parametrize(
    "position",
    [HEADER, HEADER + NONCE - 1, HEADER + NONCE, HEADER + NONCE + 5, -1],
    ids=["nonce-first", "nonce-last", "ciphertext-first", "ciphertext-inner", "tag-last"],
)
def test_tampered_ciphertext_is_refused(position: int) -> None:
    s = sealer(new_key())
    sealed = bytearray(s.seal(PAYLOAD, aad="inbox:m-1"))
    sealed[position] ^= 0x01

    with pytest.raises(SealingError, match="failed authentication"):
        s.open(bytes(sealed), aad="inbox:m-1")


def test_truncated_or_unknown_version_value_is_refused() -> None:
    s = sealer(new_key())
    sealed = s.seal(PAYLOAD, aad="inbox:m-1")

    with pytest.raises(SealingError, match="truncated"):
        s.open(sealed[: HEADER + NONCE + 15], aad="inbox:m-1")
    with pytest.raises(SealingError, match="format version 2"):
        s.open(b"\x02" + sealed[1:], aad="inbox:m-1")
    # A plaintext envelope stored before sealing was enabled is not taken for one.
    with pytest.raises(SealingError):
        s.open(b"\x0a\x24" + PAYLOAD, aad="inbox:m-1")


def test_value_sealed_with_a_key_not_held_names_the_key_id() -> None:
    stranger = new_key()
    sealed = sealer(stranger).seal(PAYLOAD, aad="outbox:m-1")

    with pytest.raises(SealingError, match=f"unknown key id {sealing_key_id(stranger).hex()}"):
        sealer(new_key()).open(sealed, aad="outbox:m-1")


def test_rotated_key_still_opens_older_rows_and_new_rows_use_the_new_key() -> None:
    old, new = new_key(), new_key()
    older_value = sealer(old).seal(PAYLOAD, aad="outbox:m-1")

    rotated = sealer(new, old)
    newer_value = rotated.seal(PAYLOAD, aad="outbox:m-2")

    assert rotated.open(older_value, aad="outbox:m-1") == PAYLOAD
    assert newer_value[1:HEADER] == sealing_key_id(new) == rotated.current_key_id
    assert rotated.open(newer_value, aad="outbox:m-2") == PAYLOAD
    with pytest.raises(SealingError, match="unknown key id"):
        sealer(old).open(newer_value, aad="outbox:m-2")


def test_same_key_listed_twice_is_harmless() -> None:
    key = new_key()
    s = sealer(key, key, key)

    assert s.open(s.seal(PAYLOAD, aad="inbox:m-1"), aad="inbox:m-1") == PAYLOAD


def test_key_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SealingKeys(b"\x00" * 16)


def test_keys_do_not_show_in_their_repr() -> None:
    key = new_key()

    shown = repr(SealingKeys(key))

    assert key.hex() not in shown
    assert sealing_key_id(key).hex() in shown


def test_generated_key_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "sealing.key"

    key_id = generate_sealing_key(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = load_sealing_keys(path)
    assert sealing_key_id(keys.current) == key_id
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        generate_sealing_key(path)
    assert path.read_bytes() == before


def test_key_files_load_current_and_previous_keys(tmp_path: Path) -> None:
    current, old = tmp_path / "current.key", tmp_path / "old.key"
    generate_sealing_key(current)
    generate_sealing_key(old)
    older_value = PayloadSealer(load_sealing_keys(old)).seal(PAYLOAD, aad="inbox:m-1")

    rotated = PayloadSealer(load_sealing_keys(current, [old]))

    assert rotated.open(older_value, aad="inbox:m-1") == PAYLOAD


@pytest.mark.parametrize(
    "content",
    ["", "ab" * 31, "ab" * 33, "zz" * 32, "ab" * 31 + " ab", "ab" * 32 + "\n\n"],
    ids=["empty", "short", "long", "not-hex", "space", "two-newlines"],
)
def test_malformed_key_file_is_refused_by_name(tmp_path: Path, content: str) -> None:
    path = tmp_path / "sealing.key"
    path.write_text(content)

    with pytest.raises(
        ValueError, match=re.escape(f"{path}: a sealing key file holds 32 random bytes")
    ):
        load_sealing_keys(path)


def test_missing_key_file_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "absent.key"

    with pytest.raises(ValueError, match=re.escape(f"{path}: cannot read sealing key")):
        load_sealing_keys(path)


CONFIG = """
[gateway]
state = "AT"

[pki]
dir = "pki"

[local_api]
listen = "127.0.0.1:7443"

[peer_api]
listen = "127.0.0.1:7444"

[tokens]
issuer = "https://idp.at.example"
audience = "pouch:AT"
jwks_file = "idp/jwks.json"

[agreements]
dir = "agreements"
hash_keys_dir = "secrets/hash-keys"
"""


def test_missing_sealing_key_with_agreements_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG)

    with pytest.raises(ConfigError, match=r"storage\.sealing_key_file: required"):
        load_settings(path)

    path.write_text(CONFIG + "\n[storage]\nretention_interval_seconds = 60\n")
    with pytest.raises(ConfigError, match=r"storage\.sealing_key_file: required key is missing"):
        load_settings(path)


def test_storage_paths_are_anchored_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        CONFIG
        + "\n[storage]\n"
        + 'sealing_key_file = "secrets/sealing.key"\n'
        + 'previous_sealing_key_files = ["secrets/old.key", "/etc/pouch/older.key"]\n'
    )

    storage = load_settings(path).storage

    assert storage is not None
    assert storage.sealing_key_file == tmp_path / "secrets" / "sealing.key"
    assert storage.previous_sealing_key_files == (
        tmp_path / "secrets" / "old.key",
        Path("/etc/pouch/older.key"),
    )
    assert storage.retention_interval_seconds == 3600
    assert storage.commit_delay_ms == 8


@pytest.mark.parametrize("value", ["-1", "101"])
def test_the_commit_delay_is_bounded(tmp_path: Path, value: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG + f'\n[storage]\nsealing_key_file = "k"\ncommit_delay_ms = {value}\n')

    with pytest.raises(ConfigError, match=r"storage\.commit_delay_ms"):
        load_settings(path)


def test_retention_interval_must_be_positive(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        CONFIG + '\n[storage]\nsealing_key_file = "k"\nretention_interval_seconds = 0\n'
    )

    with pytest.raises(ConfigError, match=r"storage\.retention_interval_seconds"):
        load_settings(path)
