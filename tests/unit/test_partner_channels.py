"""What the gateway remembers of a partner's release: whether it takes batch calls."""

from __future__ import annotations

import grpc
import pytest

from gateway.delivery.partners import PartnerChannels, PartnerEndpoint


def _channels() -> PartnerChannels:
    endpoints = {
        state: PartnerEndpoint(state=state, target="127.0.0.1:1", ca_pem=b"")
        for state in ("BE", "FR")
    }
    return PartnerChannels(endpoints, certificate_chain=b"", private_key=b"")


def test_a_partner_without_batch_methods_gets_single_calls_from_then_on() -> None:
    partners = _channels()
    assert partners.takes_batches("BE")
    assert partners.batch_failed("BE", grpc.StatusCode.UNIMPLEMENTED)
    assert not partners.takes_batches("BE")
    assert partners.takes_batches("FR")  # another partner is not affected


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED]
)
def test_a_refused_batch_shape_sends_that_batch_singly_only(code: grpc.StatusCode) -> None:
    partners = _channels()
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
def test_other_failures_of_a_batch_call_are_each_items_own(code: grpc.StatusCode) -> None:
    partners = _channels()
    assert not partners.batch_failed("BE", code)
    assert partners.takes_batches("BE")
