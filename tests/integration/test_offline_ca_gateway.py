"""A gateway whose state CA is offline starts and serves: start-up reads the CA
certificate and the CRL, never the CA key, so ``ca.key`` need not exist on its host."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from gateway.config import load_settings
from gateway.server.startup_checks import check_startup
from pouch_devtools.demo.deployment import GatewayProcess, prepare_sites


def test_a_gateway_starts_and_serves_without_the_ca_key(tmp_path: Path) -> None:
    sites = prepare_sites(tmp_path, ["AT", "BE"], now=datetime.now(UTC), agreements=[("AT", "BE")])
    at = sites["AT"]
    settings = load_settings(at.config_path)
    check_startup(settings)  # as prepared, with the key beside it

    offline = tmp_path / "offline-AT"
    offline.mkdir(mode=0o700)
    shutil.move(at.pki.ca_key, offline / "ca.key")
    assert not at.pki.ca_key.exists()
    check_startup(settings)
    gateway = GatewayProcess(at)
    try:
        gateway.start()
    finally:
        assert gateway.terminate() == 0
