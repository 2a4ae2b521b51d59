"""The one map from the two error roots to gRPC statuses with google.rpc details."""

from __future__ import annotations

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2

from gateway.errors import (
    AuthenticationRejected,
    FieldViolation,
    PartnerRefused,
    PartnerUnavailable,
    PolicyRejected,
    QuotaRejected,
    Rejected,
    ReplayRejected,
    StatusDetails,
    Unavailable,
    ValidationRejected,
    from_status,
    internal_error,
    status_code,
    status_details,
    to_status,
)


def details(status: grpc.Status) -> list[object]:
    (key, raw), *_ = status.trailing_metadata
    assert key == "grpc-status-details-bin" and isinstance(raw, bytes)
    decoded = status_pb2.Status.FromString(raw)
    out: list[object] = []
    for any_detail in decoded.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            if any_detail.Is(kind.DESCRIPTOR):
                message = kind()
                any_detail.Unpack(message)
                out.append(message)
    return out


def test_every_rejection_maps_to_its_status_code() -> None:
    assert to_status(AuthenticationRejected("x")).code == grpc.StatusCode.UNAUTHENTICATED
    assert to_status(PolicyRejected("x")).code == grpc.StatusCode.PERMISSION_DENIED
    assert to_status(ReplayRejected("x")).code == grpc.StatusCode.ALREADY_EXISTS
    assert to_status(QuotaRejected("x")).code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert to_status(PartnerUnavailable("x")).code == grpc.StatusCode.UNAVAILABLE


def test_both_roots_are_distinct() -> None:
    assert issubclass(PolicyRejected, Rejected) and not issubclass(PolicyRejected, Unavailable)
    assert issubclass(PartnerUnavailable, Unavailable)
    assert not issubclass(PartnerUnavailable, Rejected)


def test_validation_names_each_field_and_rule_as_bad_request() -> None:
    error = ValidationRejected(
        [
            FieldViolation("update.event_date", "must not lie in the future"),
            FieldViolation("recipient_state", "must be an ISO 3166-1 alpha-2 code"),
        ]
    )
    status = to_status(error)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "update.event_date: must not lie in the future" in status.details
    info, bad_request = details(status)
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "VALIDATION"
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == [
        "update.event_date",
        "recipient_state",
    ]


def test_unavailable_carries_retry_info() -> None:
    status = to_status(PartnerUnavailable("partner BE unreachable", retry_after_s=2.5))
    info, retry = details(status)
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "PARTNER_UNAVAILABLE"
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToMilliseconds() == 2500


def test_reason_code_can_be_specific() -> None:
    status = to_status(AuthenticationRejected("token expired", reason="TOKEN_EXPIRED"))
    (info,) = details(status)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("TOKEN_EXPIRED", "pouch.gateway")


def test_internal_error_says_nothing_inside() -> None:
    status = internal_error()
    assert status.code == grpc.StatusCode.INTERNAL
    assert status.details == "internal error"


def test_validation_without_violations_is_a_bug() -> None:
    try:
        ValidationRejected([])
    except ValueError:
        return
    raise AssertionError("an empty validation rejection was accepted")


def test_a_partners_permanent_refusal_is_read_as_refused_with_its_reason() -> None:
    error = from_status(grpc.StatusCode.INVALID_ARGUMENT, "REPLAY", who="partner BE")
    assert isinstance(error, PartnerRefused)
    assert (error.reason, error.partner_code) == (
        "PARTNER_REPLAY",
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_a_partners_passing_failure_is_read_as_unavailable_named_by_its_code() -> None:
    error = from_status(grpc.StatusCode.UNAVAILABLE, who="partner BE")
    assert isinstance(error, PartnerUnavailable)
    assert error.reason == "PARTNER_UNAVAILABLE"
    registry = from_status(
        grpc.StatusCode.NOT_FOUND,
        who="registry",
        prefix="REGISTRY",
        refusals=frozenset({grpc.StatusCode.NOT_FOUND}),
    )
    assert isinstance(registry, PartnerRefused) and registry.reason == "REGISTRY_NOT_FOUND"


def test_a_status_number_grpc_does_not_define_or_ok_is_unknown() -> None:
    assert status_code(5) is grpc.StatusCode.NOT_FOUND
    assert status_code(0) is grpc.StatusCode.UNKNOWN
    assert status_code(999) is grpc.StatusCode.UNKNOWN
    assert from_status(999, "X", who="partner BE").reason == "PARTNER_X"


def test_what_to_status_sends_from_status_reads_back() -> None:
    sent = to_status(PartnerUnavailable("busy", reason="STORAGE_LOCKED"))
    (info, *_) = details(sent)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    read = from_status(sent.code, info.reason, who="partner BE")
    assert (type(read), read.reason) == (PartnerUnavailable, "PARTNER_STORAGE_LOCKED")


def _failed_call(status: grpc.Status) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        status.code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*status.trailing_metadata),
        details=status.details,
        debug_error_string="",
    )


def test_status_details_read_back_reason_violations_and_retry_delay() -> None:
    refused = ValidationRejected(
        [FieldViolation("update.event_date", "must not be in the future")], reason="INVALID_DATE"
    )
    read = status_details(_failed_call(to_status(refused)))
    assert read.reason == "INVALID_DATE"
    assert read.violations == (FieldViolation("update.event_date", "must not be in the future"),)
    busy = status_details(_failed_call(to_status(Unavailable("busy", retry_after_s=1.5))))
    assert (busy.reason, busy.violations, busy.retry_after_s) == ("UNAVAILABLE", (), 1.5)


def test_a_status_without_details_reads_as_no_reason() -> None:
    bare = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down", ""
    )
    assert status_details(bare) == StatusDetails()
