"""The key-exchange group read from a peer call's auth context, and the hybrid rule."""

from __future__ import annotations

import grpc
import pytest

from gateway.errors import to_status
from gateway.trust.key_exchange import (
    AUTH_CONTEXT_KEY,
    HYBRID_KEY_EXCHANGE_GROUPS,
    UNKNOWN_GROUP,
    KeyExchangeNotHybrid,
    negotiated_group,
    require_hybrid,
)


def test_group_is_read_from_the_auth_context() -> None:
    auth = {AUTH_CONTEXT_KEY: [b"X25519MLKEM768"], "ssl_tls_version": [b"TLSv1.3"]}
    assert negotiated_group(auth) == "X25519MLKEM768"


@pytest.mark.parametrize(
    "values",
    [
        [],
        [b""],
        [b"X25519MLKEM768", b"prime256v1"],
        [b"group with spaces"],
        [b"\xff\xfe"],
        [b"a" * 65],
    ],
)
def test_absent_or_misshapen_group_reads_as_unknown(values: list[bytes]) -> None:
    assert negotiated_group({AUTH_CONTEXT_KEY: values}) == UNKNOWN_GROUP
    assert negotiated_group({}) == UNKNOWN_GROUP


def test_every_hybrid_group_is_admitted() -> None:
    for group in HYBRID_KEY_EXCHANGE_GROUPS:
        require_hybrid(group)


@pytest.mark.parametrize("group", ["prime256v1", "X25519", "secp384r1", "MLKEM1024", UNKNOWN_GROUP])
def test_classical_pure_or_unknown_group_is_refused_naming_group_and_setting(group: str) -> None:
    with pytest.raises(KeyExchangeNotHybrid) as refused:
        require_hybrid(group)
    assert refused.value.reason == "KEY_EXCHANGE_NOT_HYBRID"
    assert f"group {group}," in refused.value.message
    assert "[peer_api] require_hybrid_key_exchange" in refused.value.message
    assert to_status(refused.value).code == grpc.StatusCode.PERMISSION_DENIED
