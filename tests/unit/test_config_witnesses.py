"""Witness settings: [witness_http] and [[audit.witnesses]], each refusal naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.audit.cosignature import CosignatureSigner
from gateway.audit.external_witness import configured_witnesses
from gateway.audit.log_signing import CheckpointSigner
from gateway.config import ConfigError, load_settings
from gateway.pki.note_keys import Ed25519Signer, MLDSA44Signer
from tests.unit.test_config import VALID, error_for, write

AGREEMENTS = """
[agreements]
dir = "agreements"
hash_keys_dir = "secrets/hash-keys"

[storage]
sealing_key_file = "secrets/sealing.key"
"""
NAME = "witness.example.org/w1"


def cosigner_vkeys(name: str = NAME) -> list[str]:
    return [
        str(CosignatureSigner(name, Ed25519Signer.generate()).verifier().vkey),
        str(CosignatureSigner(name, MLDSA44Signer.generate()).verifier().vkey),
    ]


def witness_table(vkeys: list[str], url: str = "https://witness.example.org/w1/") -> str:
    listed = ", ".join(f'"{v}"' for v in vkeys)
    return f'\n[[audit.witnesses]]\nname = "{NAME}"\nurl = "{url}"\nvkeys = [{listed}]\n'


def test_external_witnesses_load_with_their_keys_and_ca_file_anchored(tmp_path: Path) -> None:
    vkeys = cosigner_vkeys()
    text = VALID + witness_table(vkeys) + 'ca_file = "witnesses/w1-ca.pem"\n'
    settings = load_settings(write(tmp_path, text))
    (witness,) = settings.audit.witnesses
    assert (witness.name, witness.vkeys) == (NAME, tuple(vkeys))
    assert witness.ca_file == tmp_path.resolve() / "witnesses" / "w1-ca.pem"
    (loaded,) = configured_witnesses([witness.model_copy(update={"ca_file": None})])
    assert loaded.vkeys == vkeys


def test_a_witness_url_in_clear_is_refused_unless_on_this_host(tmp_path: Path) -> None:
    vkeys = cosigner_vkeys()
    text = VALID + witness_table(vkeys, "http://witness.example.org/")
    assert "audit.witnesses.0.url" in error_for(tmp_path, text)
    assert load_settings(write(tmp_path, VALID + witness_table(vkeys, "http://127.0.0.1:9/")))


def test_a_witness_named_twice_is_refused(tmp_path: Path) -> None:
    vkeys = cosigner_vkeys()
    text = VALID + witness_table(vkeys) + witness_table(vkeys)
    assert "each witness name may appear only once" in error_for(tmp_path, text)


def test_a_log_key_offered_as_a_witness_key_is_refused_naming_it(tmp_path: Path) -> None:
    log_key = CheckpointSigner(
        "example.org/log", NAME, Ed25519Signer.generate(), MLDSA44Signer.generate()
    ).verifiers()[0]
    settings = load_settings(write(tmp_path, VALID + witness_table([str(log_key.vkey)])))
    with pytest.raises(ValueError) as refused:
        configured_witnesses(settings.audit.witnesses)
    message = str(refused.value)
    assert message.startswith(f"audit.witnesses[0] ({NAME}): vkeys[0]: ")
    assert "0x04" in message and "\n" not in message


def test_a_key_of_another_name_is_refused_naming_it(tmp_path: Path) -> None:
    vkeys = [cosigner_vkeys()[0], cosigner_vkeys("witness.example.org/w2")[1]]
    settings = load_settings(write(tmp_path, VALID + witness_table(vkeys)))
    with pytest.raises(ValueError, match=r"vkeys\[1\]: the key is named 'witness.example.org/w2'"):
        configured_witnesses(settings.audit.witnesses)


def test_the_witness_listener_needs_agreements(tmp_path: Path) -> None:
    section = '\n[witness_http]\nlisten = "127.0.0.1:7445"\n'
    assert "witness_http.listen: needs [agreements]" in error_for(tmp_path, VALID + section)
    settings = load_settings(write(tmp_path, VALID + AGREEMENTS + section + 'prefix = "/w"\n'))
    assert settings.witness_http is not None and settings.witness_http.prefix == "/w"
    with pytest.raises(ConfigError):
        load_settings(write(tmp_path, VALID + AGREEMENTS + section + 'prefix = "w/"\n'))
