"""``pouch agreement suspend``, as an operator runs it against a live gateway."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.config import load_settings
from gateway.server.app import Gateway
from pouch_devtools.demo.deployment import Site, agreement_id_for, prepare_sites
from tests.integration.conftest import GatewayThread

SETTLE_S = 15.0


def suspend_from_cli(
    site: Site, agreement_id: str, token_file: Path
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "gateway", "agreement", "suspend", agreement_id,
        "--gateway", site.local_target,
        "--ca", str(site.pki.ca_cert),
        "--cert", str(site.pki.client_cert("operator")),
        "--key", str(site.pki.client_key("operator")),
        "--token-file", str(token_file),
        "--reason", "DATA_BREACH",
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_operator_suspends_an_agreement_from_the_command_line_and_the_partner_follows(
    tmp_path: Path,
) -> None:
    sites = prepare_sites(
        tmp_path,
        ["AT", "BE"],
        now=datetime.now(UTC),
        agreements=[("AT", "BE")],
        delivery={"poll_interval_seconds": 0.05, "backoff_initial_seconds": 0.1},
    )
    at, be = sites["AT"], sites["BE"]
    agreement_id = agreement_id_for("AT", "BE")
    token_file = tmp_path / "admin.token"
    token_file.write_text(at.token(["admin"], now=time.time()))
    with (
        GatewayThread(Gateway(load_settings(at.config_path))),
        GatewayThread(Gateway(load_settings(be.config_path))) as be_gateway,
    ):
        result = suspend_from_cli(at, agreement_id, token_file)
        assert result.returncode == 0, result.stderr
        assert f"{agreement_id} version 1: SUSPENDED" in result.stdout
        assert "suspended by AT: DATA_BREACH" in result.stdout

        exchanges = be_gateway.exchanges
        assert exchanges is not None
        deadline = time.monotonic() + SETTLE_S
        while exchanges.lifecycle.status_of(agreement_id, 1) is None:
            assert time.monotonic() < deadline, "BE never recorded AT's suspension notice"
            time.sleep(0.05)
        record = exchanges.lifecycle.status_of(agreement_id, 1)
        assert record is not None
        assert (str(record.status), record.changed_by_state, record.reason_code) == (
            "suspended",
            "AT",
            "DATA_BREACH",
        )


def test_suspend_without_admin_token_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    sites = prepare_sites(tmp_path, ["AT", "BE"], now=datetime.now(UTC), agreements=[("AT", "BE")])
    at = sites["AT"]
    token_file = tmp_path / "civil.token"
    token_file.write_text(at.token(["civil:submit"], now=time.time()))
    with GatewayThread(Gateway(load_settings(at.config_path))):
        result = suspend_from_cli(at, "at-be-civil", token_file)
    assert result.returncode == 1
    assert "refused the call: PERMISSION_DENIED" in result.stderr
    assert "the token lacks the scope 'admin'" in result.stderr
    assert "Traceback" not in result.stderr
