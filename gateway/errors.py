"""The two error roots of the gateway, and the one place they become gRPC statuses.

Every failure the gateway reports is either a :class:`Rejected` (the caller or the
data is at fault: authentication, agreement, policy, validation, replay, quota) or an
:class:`Unavailable` (the system is at fault: a partner is down, the database is busy).
Foreign exceptions are wrapped at the boundary with ``raise ... from e`` so that only
these types cross module boundaries.

Messages are written for the caller: they name the field and the rule, and never
carry a stack trace, key material or personal data of the people concerned.
:func:`to_status` is the single map to gRPC status codes, with ``google.rpc``
details (``ErrorInfo`` with a stable reason code, ``BadRequest`` field violations,
``RetryInfo``); :func:`from_call`, :func:`from_status` and :func:`status_details` are its
inverse, the single reading of a partner's (or the registry's, or a gateway's) status.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "pouch.gateway"


@dataclass(frozen=True)
class FieldViolation:
    """One field that broke one rule; ``field`` is a path such as ``event.date``."""

    field: str
    rule: str


class PouchError(Exception):
    """Base of both roots; carries a stable reason code and a safe message."""

    reason: str = "INTERNAL"
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    audited: bool = False
    """Set once an audit entry records this refusal, so no later stage records it again."""
    partner_code: grpc.StatusCode | None = None
    """For an error read from another system's status (:func:`from_status`): its code."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class Rejected(PouchError):
    """The caller or the data is at fault; retrying the same request will not help."""

    reason = "REJECTED"
    code = grpc.StatusCode.FAILED_PRECONDITION


class AuthenticationRejected(Rejected):
    reason = "UNAUTHENTICATED"
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionRejected(Rejected):
    reason = "PERMISSION_DENIED"
    code = grpc.StatusCode.PERMISSION_DENIED


class AgreementRejected(Rejected):
    reason = "AGREEMENT"
    code = grpc.StatusCode.FAILED_PRECONDITION


class PolicyRejected(Rejected):
    reason = "POLICY"
    code = grpc.StatusCode.PERMISSION_DENIED


class ValidationRejected(Rejected):
    """Input broke one or more rules; every violation names its field and rule."""

    reason = "VALIDATION"
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(
        self,
        violations: list[FieldViolation] | tuple[FieldViolation, ...],
        *,
        reason: str | None = None,
    ) -> None:
        if not violations:
            raise ValueError("a validation rejection needs at least one violation")
        self.violations = tuple(violations)
        summary = "; ".join(f"{v.field}: {v.rule}" for v in self.violations)
        super().__init__(f"invalid request: {summary}", reason=reason)


class ReplayRejected(Rejected):
    reason = "REPLAY"
    code = grpc.StatusCode.ALREADY_EXISTS


class QuotaRejected(Rejected):
    reason = "QUOTA_EXHAUSTED"
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotFound(Rejected):
    reason = "NOT_FOUND"
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(PouchError):
    """The system is at fault; the same request may succeed later."""

    reason = "UNAVAILABLE"
    code = grpc.StatusCode.UNAVAILABLE

    def __init__(
        self, message: str, *, reason: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after_s = retry_after_s


class PartnerUnavailable(Unavailable):
    reason = "PARTNER_UNAVAILABLE"


class PartnerRefused(Rejected):
    """A partner (or the registry) refused for good; the reason is its own code."""

    reason = "PARTNER_REFUSED"


class StorageUnavailable(Unavailable):
    """The database cannot be reached, or failed in a way not named below."""

    reason = "STORAGE_UNAVAILABLE"


class StorageFull(StorageUnavailable):
    """The database has no space left to write; reads still work."""

    reason = "STORAGE_FULL"


class StorageReadOnly(StorageUnavailable):
    """The database takes no writes: a read-only file, mount, replica or transaction."""

    reason = "STORAGE_READ_ONLY"


class StorageLocked(StorageUnavailable):
    """Another writer held the lock this write needed past the lock timeout."""

    reason = "STORAGE_LOCKED"


class DeadlineExceeded(Unavailable):
    reason = "DEADLINE_EXCEEDED"
    code = grpc.StatusCode.DEADLINE_EXCEEDED


_CODE_NUMBERS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    grpc.StatusCode.NOT_FOUND: code_pb2.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: code_pb2.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL: code_pb2.INTERNAL,
}


def to_status(error: PouchError) -> grpc.Status:
    """Map an error to a gRPC status with ``google.rpc`` details; the only such map."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)
    packed: list[Message] = [info]
    if isinstance(error, ValidationRejected):
        packed.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.rule)
                    for v in error.violations
                ]
            )
        )
    if isinstance(error, Unavailable) and error.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(error.retry_after_s * 1000))
        packed.append(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=_CODE_NUMBERS[error.code], message=error.message)
    for message in packed:
        status.details.add().Pack(message)
    return rpc_status.to_status(status)


def internal_error() -> grpc.Status:
    """The status for a failure that is nobody's documented fault; says nothing inside."""
    return to_status(PouchError("internal error", reason="INTERNAL"))


def unexpected_summary(error: BaseException) -> str:
    """A bug's type and where it happened, for the log: never its message.

    Messages of foreign exceptions can quote data (a database error quotes its
    parameters), so only the type and the stack frames are ever logged.
    """
    frames = "".join(traceback.format_tb(error.__traceback__))
    return f"{type(error).__name__}\n{frames}"


# The partner said no for good: trying again cannot change its answer. UNAUTHENTICATED
# is left out on purpose: a refused signature or certificate is what a key rotation or a
# CRL update in flight looks like, so it is retried until the message's deadline.
PERMANENT_REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)

SEND_SINGLY = frozenset(
    {
        grpc.StatusCode.UNIMPLEMENTED,  # the other side's release has no batch method
        grpc.StatusCode.INVALID_ARGUMENT,  # it allows fewer items per call than we sent
        grpc.StatusCode.RESOURCE_EXHAUSTED,  # its message size limit is lower than ours
    }
)
"""Codes of a whole batch call (to a partner, or ``ApplyCivilUpdates`` to the registry)
after which its items are sent again one call each."""

_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The status code a number on the wire stands for; UNKNOWN for one gRPC does not
    define, and for OK, which a refusal never is."""
    code = _STATUS_CODES.get(number, grpc.StatusCode.UNKNOWN)
    return grpc.StatusCode.UNKNOWN if code is grpc.StatusCode.OK else code


def from_status(
    code: grpc.StatusCode | int,
    reason: str = "",
    *,
    who: str,
    prefix: str = "PARTNER",
    refusals: frozenset[grpc.StatusCode] = PERMANENT_REFUSALS,
) -> PartnerRefused | PartnerUnavailable:
    """What another system's status means here: :class:`PartnerRefused` if ``code`` is
    one of ``refusals`` (retrying cannot help), else :class:`PartnerUnavailable`. Either
    carries the reason ``<prefix>_<its reason code>``, or ``<prefix>_<code name>`` when it
    gave none, and its ``partner_code``. ``who`` names it in the message."""
    if isinstance(code, int):
        code = status_code(code)
    decoded = f"{prefix}_{reason or code.name}"
    error: PartnerRefused | PartnerUnavailable
    if code in refusals:
        error = PartnerRefused(f"{who} refused ({decoded})", reason=decoded)
    else:
        error = PartnerUnavailable(f"{who} did not answer ({code.name})", reason=decoded)
    error.partner_code = code
    return error


@dataclass(frozen=True)
class StatusDetails:
    """What a failed call's ``google.rpc`` details say, as :func:`to_status` writes them:
    the stable reason code (empty when it sent no ``ErrorInfo``), the field violations
    and the delay it asked for before a retry."""

    reason: str = ""
    violations: tuple[FieldViolation, ...] = ()
    retry_after_s: float | None = None


def status_details(error: grpc.aio.AioRpcError) -> StatusDetails:
    """The ``google.rpc`` details of a failed call; empty ones when it sent none."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return StatusDetails()
    reason = ""
    violations: list[FieldViolation] = []
    retry_after_s: float | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) and not reason:
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after_s = retry.retry_delay.ToMilliseconds() / 1000
    return StatusDetails(reason, tuple(violations), retry_after_s)


def from_call(
    error: grpc.aio.AioRpcError,
    *,
    who: str,
    prefix: str = "PARTNER",
    refusals: frozenset[grpc.StatusCode] = PERMANENT_REFUSALS,
) -> PartnerRefused | PartnerUnavailable:
    """:func:`from_status` of a failed call, with the reason code from its
    ``google.rpc.ErrorInfo`` when it sent one (as :func:`to_status` does)."""
    reason = status_details(error).reason
    return from_status(error.code(), reason, who=who, prefix=prefix, refusals=refusals)
