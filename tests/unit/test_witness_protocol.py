"""The c2sp.org/tlog-witness add-checkpoint body, read strictly and written back."""

from __future__ import annotations

import base64

import pytest

from gateway.audit.witness import (
    CHECKPOINT_INCONSISTENT,
    CHECKPOINT_MALFORMED,
    CHECKPOINT_SIGNATURE,
    CheckpointRefused,
    OldSizeMismatch,
)
from gateway.audit.witness_protocol import (
    MAX_REQUEST_BYTES,
    AddCheckpoint,
    MalformedRequest,
    add_checkpoint_body,
    origin_hash,
    parse_add_checkpoint,
    parse_size_body,
    size_body,
    status_of,
)

NOTE = "example.com/log\n2\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n— k AAAA\n"
HASH = bytes(range(32))


def test_a_request_reads_back_as_written() -> None:
    request = AddCheckpoint(20852014, (HASH, HASH[::-1]), NOTE)
    body = add_checkpoint_body(request)
    assert body.startswith(b"old 20852014\n" + base64.b64encode(HASH) + b"\n")
    assert parse_add_checkpoint(body) == request
    assert parse_add_checkpoint(b"old 0\n\n" + NOTE.encode()) == AddCheckpoint(0, (), NOTE)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"old 1\n",
        b"old 01\n\n" + NOTE.encode(),
        b"old -1\n\n" + NOTE.encode(),
        b"old  1\n\n" + NOTE.encode(),
        b"new 1\n\n" + NOTE.encode(),
        b"old 1\n\n",
        b"old 1\n" + base64.b64encode(HASH[:31]) + b"\n\n" + NOTE.encode(),
        b"old 1\n" + base64.b64encode(HASH).rstrip(b"=") + b"\n\n" + NOTE.encode(),
        b"old 1\n" + (base64.b64encode(HASH) + b"\n") * 64 + b"\n" + NOTE.encode(),
        b"\xff",
        b"old 0\n\n" + b"A" * MAX_REQUEST_BYTES,
    ],
)
def test_a_body_of_another_shape_is_a_malformed_request(body: bytes) -> None:
    with pytest.raises(MalformedRequest):
        parse_add_checkpoint(body)


def test_each_refusal_has_the_specifications_status() -> None:
    assert status_of(CheckpointRefused(CHECKPOINT_MALFORMED, "x")) == 400
    assert status_of(CheckpointRefused(CHECKPOINT_SIGNATURE, "x")) == 403
    assert status_of(OldSizeMismatch(3, 7)) == 409
    assert status_of(CheckpointRefused(CHECKPOINT_INCONSISTENT, "x")) == 422


def test_a_size_body_is_a_decimal_and_a_newline() -> None:
    assert parse_size_body(size_body(12).encode()) == 12
    assert parse_size_body(b"12\n") == 12
    for bad in (b"12", b"012\n", b"-1\n", b"1 2\n", b"\xff\n"):
        with pytest.raises(ValueError):
            parse_size_body(bad)


def test_the_monitoring_name_is_the_origins_sha256_in_lowercase_hex() -> None:
    assert origin_hash("example.com/log") == (
        "4d3203c8f35cdf600e475f55fede6081a703d3d322f208865fca2ec4f0e030f8"
    )
