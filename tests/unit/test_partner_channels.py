"""What the gateway remembers of a partner's release: whether it takes batch calls."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from gateway.delivery.partners import Partner, PartnerChannels
from gateway.pki.bundle import load_trust_bundle
from gateway.pki.layout import init_state

NOW = datetime(2026, 12, 6, tzinfo=UTC)


@pytest.fixture
def partners(tmp_path: Path) -> PartnerChannels:
    held: dict[str, Partner] = {}
    for state in ("BE", "FR"):
        directory = init_state(
            state,
            tmp_path / state,
            dns_names=[],
            ip_addresses=["127.0.0.1"],
            peer_endpoint="127.0.0.1:1",
            crl_location=None,
            now=NOW,
        )
        held[state] = Partner(state, load_trust_bundle(directory.bundle), "127.0.0.1:1")
    return PartnerChannels(held, certificate_chain=b"", private_key=b"")


def test_a_partner_without_batch_methods_gets_single_calls_from_then_on(
    partners: PartnerChannels,
) -> None:
    assert partners.takes_batches("BE")
    assert partners.batch_failed("BE", grpc.StatusCode.UNIMPLEMENTED)
    assert not partners.takes_batches("BE")
    assert partners.takes_batches("FR")  # another partner is not affected


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED]
)
def test_a_refused_batch_shape_sends_that_batch_singly_only(
    partners: PartnerChannels, code: grpc.StatusCode
) -> None:
    assert partners.batch_failed("BE", code)
    assert partners.takes_batches("BE")


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    ],
)
def test_other_failures_of_a_batch_call_are_each_items_own(
    partners: PartnerChannels, code: grpc.StatusCode
) -> None:
    assert not partners.batch_failed("BE", code)
    assert partners.takes_batches("BE")
