"""The configuration file: every key known, every error naming its key and rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_settings

VALID = """
[gateway]
state = "AT"
database_url = "sqlite:///data/pouch.db"

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

[[partners]]
state = "BE"
bundle = "partners/BE/bundle.json"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def error_for(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, text))
    return str(error.value)


def test_valid_file_loads_with_paths_anchored_to_its_directory(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, VALID))
    assert settings.gateway.state == "AT"
    assert settings.pki.dir == tmp_path.resolve() / "pki"
    assert settings.tokens.jwks_file == tmp_path.resolve() / "idp" / "jwks.json"
    assert settings.partners[0].bundle == tmp_path.resolve() / "partners" / "BE" / "bundle.json"
    assert settings.gateway.database_url == f"sqlite:///{tmp_path.resolve()}/data/pouch.db"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    text = VALID.replace('state = "AT"', 'state = "AT"\ncolour = "blue"')
    assert "gateway.colour: unknown key" in error_for(tmp_path, text)


def test_unknown_section_is_named(tmp_path: Path) -> None:
    assert "dispatcher: unknown key" in error_for(tmp_path, VALID + "\n[dispatcher]\nx = 1\n")


def test_ill_typed_key_is_named(tmp_path: Path) -> None:
    text = VALID.replace('listen = "127.0.0.1:7444"', "listen = 7444")
    assert "peer_api.listen: Input should be a valid string" in error_for(tmp_path, text)


def test_state_code_must_be_iso_alpha2(tmp_path: Path) -> None:
    message = error_for(tmp_path, VALID.replace('state = "AT"', 'state = "Austria"'))
    assert "gateway.state: must be an ISO 3166-1 alpha-2 code" in message


def test_missing_section_is_named(tmp_path: Path) -> None:
    text = VALID.replace('[tokens]\nissuer = "https://idp.at.example"\n', "[tokens]\n")
    assert "tokens.issuer: required key is missing" in error_for(tmp_path, text)


def test_symmetric_token_algorithms_are_refused(tmp_path: Path) -> None:
    text = VALID.replace('jwks_file = "idp/jwks.json"', 'jwks_file = "j"\nalgorithms = ["HS256"]')
    assert "tokens.algorithms: must be a non-empty list" in error_for(tmp_path, text)


def test_partner_listed_twice_is_refused(tmp_path: Path) -> None:
    twice = VALID + '\n[[partners]]\nstate = "BE"\nbundle = "b.json"\n'
    assert "each partner state may appear only once" in error_for(tmp_path, twice)


def test_listen_port_out_of_range_is_refused(tmp_path: Path) -> None:
    text = VALID.replace('"127.0.0.1:7443"', '"127.0.0.1:70000"')
    assert "local_api.listen: must be HOST:PORT" in error_for(tmp_path, text)


def test_missing_file_and_bad_toml_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings(tmp_path / "absent.toml")
    assert "not valid TOML" in error_for(tmp_path, "[gateway\n")


def test_resigning_later_than_the_clock_window_is_refused(tmp_path: Path) -> None:
    text = VALID + "\n[delivery]\nclock_window_seconds = 120\nresign_after_seconds = 120\n"
    message = error_for(tmp_path, text)
    assert "delivery: resign_after_seconds: must be less than clock_window_seconds" in message


def test_hybrid_key_exchange_is_not_required_unless_turned_on(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, VALID)).peer_api.require_hybrid_key_exchange is False
    text = VALID.replace(
        'listen = "127.0.0.1:7444"',
        'listen = "127.0.0.1:7444"\nrequire_hybrid_key_exchange = true',
    )
    assert load_settings(write(tmp_path, text)).peer_api.require_hybrid_key_exchange is True


def test_require_hybrid_key_exchange_that_is_not_a_boolean_is_named(tmp_path: Path) -> None:
    text = VALID.replace(
        'listen = "127.0.0.1:7444"',
        'listen = "127.0.0.1:7444"\nrequire_hybrid_key_exchange = "yes"',
    )
    message = error_for(tmp_path, text)
    assert "peer_api.require_hybrid_key_exchange: Input should be a valid boolean" in message
    assert len(message.splitlines()) == 1


def test_require_hybrid_key_exchange_belongs_to_the_peer_api_alone(tmp_path: Path) -> None:
    text = VALID.replace(
        'listen = "127.0.0.1:7443"',
        'listen = "127.0.0.1:7443"\nrequire_hybrid_key_exchange = true',
    )
    assert "local_api.require_hybrid_key_exchange: unknown key" in error_for(tmp_path, text)
