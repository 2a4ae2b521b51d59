"""``pouch pki rotate`` and ``pouch pki announce`` as an operator runs them: AT rotates
its signing key and announces the next bundle to its partners; BE (running) takes it,
CH (not running) is tried again until the deadline and reported, and the command exits
1 until every partner took it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli.pki import pki
from gateway.pki import load_certificate
from gateway.pki.bundle import load_trust_bundle
from tests.integration.exchange_fixtures import RunningGateways, be_alone


@pytest.fixture
def be_only(tmp_path: Path) -> Iterator[RunningGateways]:
    with be_alone(tmp_path, ["AT", "BE", "CH"]) as running:
        yield running


def test_pouch_pki_rotate_and_announce_reach_each_partner_and_name_the_one_missing(
    be_only: RunningGateways,
) -> None:
    at = be_only.sites["AT"]
    runner = CliRunner()
    old = load_certificate(at.pki.signing_cert)

    rotated = runner.invoke(pki, ["rotate", "--state-dir", str(at.pki.root), "--what", "signing"])
    assert rotated.exit_code == 0, rotated.output
    next_bundle = at.pki.root / "bundle.next.json"
    digest = load_trust_bundle(next_bundle).digest
    assert f"next trust bundle: {next_bundle} ({digest})" in rotated.output

    announced = runner.invoke(
        pki, ["announce", "--config", str(at.config_path), "--deadline-seconds", "2"]
    )
    assert announced.exit_code == 1, announced.output
    assert "BE: taken" in announced.output
    assert "CH: not taken (UNREACHABLE" in announced.output
    be = be_only.gateway("BE")
    assert be.exchanges is not None
    assert be.exchanges.channels.bundles["AT"].digest == digest

    completed = runner.invoke(
        pki, ["rotate", "--state-dir", str(at.pki.root), "--what", "signing", "--complete"]
    )
    assert completed.exit_code == 0, completed.output
    assert load_certificate(at.pki.signing_cert) != old
    assert load_trust_bundle(at.pki.bundle).digest == digest


def test_pouch_pki_rotate_refuses_a_second_rotation_before_the_first_completes(
    be_only: RunningGateways,
) -> None:
    at = be_only.sites["AT"]
    runner = CliRunner()
    first = runner.invoke(pki, ["rotate", "--state-dir", str(at.pki.root), "--what", "signing"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(pki, ["rotate", "--state-dir", str(at.pki.root), "--what", "audit"])
    assert second.exit_code == 1
    assert "a rotation is prepared and not completed" in second.output
