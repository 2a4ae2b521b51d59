"""What an identity confirmation looks like between two gateways, for both ends.

A query is an envelope of ``EXCHANGE_TYPE_IDENTITY_CONFIRMATION`` carrying the
minimised claim (``pouch.v1.IdentityClaim`` as a policy tree under ``claim``); the
answer is an envelope of the same exchange type and agreement, sent back by the
responder, carrying a ``pouch.v1.IdentityAnswer``: flags and a status that name the
query's message id and digest, so an answer cannot be replayed onto another query.

:func:`decode_answer` is strict: an answer with an unknown key, a field outside
:data:`~gateway.exchanges.identity_match.COMPARED_FIELDS`, a field flagged twice,
an unknown result or status, or a binding to another query is refused.
"""

from __future__ import annotations

from google.protobuf.json_format import ParseError

from gateway.agreements.gate import AgreementInForce
from gateway.envelope.payload import decode_payload, encode_payload
from gateway.errors import FieldViolation, ValidationRejected
from gateway.exchanges.identity_match import COMPARED_FIELDS
from gateway.exchanges.name_matching import NameComparison
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.rules import IdentityConfirmationRules
from gateway.protojson import message_to_dict, parse_dict
from pouch.v1 import identity_pb2

CLAIM_PAYLOAD_TYPE = identity_pb2.IdentityClaim.DESCRIPTOR.full_name
ANSWER_PAYLOAD_TYPE = identity_pb2.IdentityAnswer.DESCRIPTOR.full_name
MALFORMED_ANSWER = "MALFORMED_ANSWER"
ANSWER_MISMATCH = "ANSWER_MISMATCH"
DEFAULT_RESPONSE_DEADLINE_S = 30.0


def name_comparison(agreement: AgreementInForce, policy: CompiledPolicy) -> NameComparison:
    """The name comparison the agreement names for identity queries in ``policy``'s direction."""
    rules = agreement.loaded.exchanges.rules_for("identity_confirmation", policy.direction)
    if isinstance(rules, IdentityConfirmationRules):
        return NameComparison(transliteration=rules.name_matching.transliteration)
    return NameComparison()


def response_deadline_s(policy: CompiledPolicy) -> float:
    """How long the agreement lets a query in ``policy``'s direction wait for its answer."""
    exchange = policy.exchange("identity_confirmation")
    if exchange is None or exchange.response_deadline_seconds is None:
        return DEFAULT_RESPONSE_DEADLINE_S
    return float(exchange.response_deadline_seconds)


def encode_answer(answer: identity_pb2.IdentityAnswer) -> bytes:
    return encode_payload(message_to_dict(answer))


def decode_answer(
    payload: bytes, *, request_message_id: str, request_digest: str
) -> identity_pb2.IdentityAnswer:
    """The partner's answer to our query, or :class:`ValidationRejected`."""
    try:
        answer = parse_dict(decode_payload(payload), identity_pb2.IdentityAnswer)
    except ParseError as e:
        raise ValidationRejected(
            [FieldViolation("payload", "must be a pouch.v1.IdentityAnswer")],
            reason=MALFORMED_ANSWER,
        ) from e
    violations: list[FieldViolation] = []
    if answer.result not in identity_pb2.MatchResult.values() or not answer.result:
        violations.append(FieldViolation("result", "must be a known match result"))
    if answer.document_status not in identity_pb2.DocumentStatus.values():
        violations.append(FieldViolation("document_status", "must be a known document status"))
    seen: set[str] = set()
    for index, flag in enumerate(answer.fields):
        if flag.field not in COMPARED_FIELDS or flag.field in seen:
            violations.append(
                FieldViolation(f"fields[{index}].field", "a compared claim field, named once")
            )
        seen.add(flag.field)
    if violations:
        raise ValidationRejected(violations, reason=MALFORMED_ANSWER)
    if answer.request_message_id != request_message_id or answer.request_digest != request_digest:
        raise ValidationRejected(
            [FieldViolation("request_digest", "must bind the query this answers")],
            reason=ANSWER_MISMATCH,
        )
    return answer
