"""A local caller's files are checked before a connection is tried, naming file and rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.pki.caller_files import CallerFileRefused, check_caller_files
from gateway.pki.directory import StateDirectory
from gateway.pki.layout import init_state, issue_client

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> StateDirectory:
    directory = init_state(
        "AT",
        tmp_path_factory.mktemp("caller") / "pki",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        peer_endpoint="127.0.0.1:1",
        crl_location=None,
        now=NOW,
    )
    issue_client(directory.root, "clerk", now=NOW)
    issue_client(directory.root, "other", now=NOW)
    issue_client(directory.root, "expired", now=NOW - timedelta(days=30), validity_days=10)
    return directory


def test_a_matching_pair_under_a_ca_passes(state: StateDirectory) -> None:
    check_caller_files(
        ca=state.ca_cert, certificate=state.client_cert("clerk"), key=state.client_key("clerk"),
        now=NOW,
    )  # fmt: skip


def test_a_key_of_another_certificate_is_refused_naming_the_key(state: StateDirectory) -> None:
    with pytest.raises(CallerFileRefused) as refused:
        check_caller_files(
            ca=state.ca_cert, certificate=state.client_cert("clerk"),
            key=state.client_key("other"), now=NOW,
        )  # fmt: skip
    assert refused.value.path == state.client_key("other")
    assert "does not belong to the certificate" in refused.value.rule


def test_an_expired_certificate_is_refused_with_its_date(state: StateDirectory) -> None:
    with pytest.raises(CallerFileRefused, match="the certificate expired on 2026-05-12"):
        check_caller_files(
            ca=state.ca_cert, certificate=state.client_cert("expired"),
            key=state.client_key("expired"), now=NOW,
        )  # fmt: skip


def test_a_file_that_is_not_pem_is_refused(state: StateDirectory, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(CallerFileRefused, match="holds no PEM certificate"):
        check_caller_files(
            ca=garbage, certificate=state.client_cert("clerk"), key=state.client_key("clerk"),
            now=NOW,
        )  # fmt: skip
    with pytest.raises(CallerFileRefused, match="not an unencrypted PEM private key"):
        check_caller_files(
            ca=state.ca_cert, certificate=state.client_cert("clerk"), key=garbage, now=NOW
        )
