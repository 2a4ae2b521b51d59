"""The responding gateway's answer to an identity confirmation: flags, never values.

:func:`compare` takes the claim as it crossed (after the agreement's field rules) and
the registry's candidate records *rendered the same way* (the same rule set: a hashed
number becomes the same keyed hash, a generalised date loses the same parts), and
computes the answer itself. It guarantees:

* the :class:`IdentityVerdict` holds a result, a document status and one flag per
  compared field, named from a fixed set of claim paths; it has no field that could
  carry a recorded value;
* a field is compared only if the claim carried it in a comparable form (a masked
  field carries nothing and is not compared); a field the record lacks is a mismatch;
* a candidate counts only if its *anchor* agrees with the claim: the document number
  when one was claimed, otherwise the family names. A stranger who shares a birthday
  is never reported as a partial match;
* ``MATCH`` means every compared field agrees; ``PARTIAL`` that the anchor agrees and
  at least one other field does not; ``NO_MATCH`` that no candidate's anchor agrees;
* the document's status is told only when the claimed document number matched:
  the status of a document the requester did not identify is not theirs to know.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.exchanges.name_matching import NameComparison, names_match
from gateway.policy.transforms import MASK
from pouch.v1 import identity_pb2

COMPARED_FIELDS: Final = (
    "document_number",
    "name.family_names",
    "name.given_names",
    "date_of_birth",
    "sex",
    "nationality",
)
"""Every field an answer may flag, as paths below ``claim``."""


@dataclass(frozen=True)
class FieldFlag:
    field: str
    matched: bool


@dataclass(frozen=True)
class IdentityVerdict:
    """What the responding gateway computed; all of it may cross to the requester."""

    result: identity_pb2.MatchResult.ValueType
    fields: tuple[FieldFlag, ...]
    document_status: identity_pb2.DocumentStatus.ValueType

    def answer(
        self, *, request_message_id: str, request_digest: str
    ) -> identity_pb2.IdentityAnswer:
        return identity_pb2.IdentityAnswer(
            request_message_id=request_message_id,
            request_digest=request_digest,
            result=self.result,
            fields=[identity_pb2.FieldMatch(field=f.field, matched=f.matched) for f in self.fields],
            document_status=self.document_status,
        )


NO_MATCH: Final = IdentityVerdict(
    identity_pb2.MATCH_RESULT_NO_MATCH, (), identity_pb2.DOCUMENT_STATUS_UNKNOWN
)


@dataclass(frozen=True)
class Candidate:
    """One registry record, rendered like the claim, and its document's status."""

    rendered: Mapping[str, Any]
    document_status: identity_pb2.DocumentStatus.ValueType


def _at(tree: Mapping[str, Any], path: str) -> Any:
    value: Any = tree
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _comparable(value: Any) -> bool:
    if value is None or value == MASK:
        return False
    return not (isinstance(value, list) and (not value or all(v == MASK for v in value)))


def _equal_names(rule: NameComparison) -> Callable[[Any, Any], bool]:
    def equal(claimed: Any, recorded: Any) -> bool:
        if not isinstance(claimed, list) or not isinstance(recorded, list):
            return False
        if claimed == recorded:  # identical keyed hashes, or identical comparison forms
            return True
        texts = [v for v in (*claimed, *recorded) if isinstance(v, str)]
        if len(texts) != len(claimed) + len(recorded):
            return False
        return bool(names_match(claimed, recorded, rule))

    return equal


def _equal(claimed: Any, recorded: Any) -> bool:
    return bool(claimed == recorded)


def compare(
    claim: Mapping[str, Any], candidates: Sequence[Candidate], *, names: NameComparison
) -> IdentityVerdict:
    """The answer to ``claim`` (the ``claim`` subtree as it crossed) given ``candidates``."""
    compared = [path for path in COMPARED_FIELDS if _comparable(_at(claim, path))]
    if not compared:
        return NO_MATCH
    anchor = "document_number" if "document_number" in compared else "name.family_names"
    equal_names = _equal_names(names)
    checks: dict[str, Callable[[Any, Any], bool]] = {
        "name.family_names": equal_names,
        "name.given_names": equal_names,
    }
    best: tuple[int, tuple[FieldFlag, ...], Candidate] | None = None
    for candidate in candidates:
        record = candidate.rendered.get("claim", {})
        flags = tuple(
            FieldFlag(path, checks.get(path, _equal)(_at(claim, path), _at(record, path)))
            for path in compared
        )
        by_path = {flag.field: flag.matched for flag in flags}
        if not by_path.get(anchor, False):
            continue
        score = sum(flag.matched for flag in flags)
        if best is None or score > best[0]:
            best = (score, flags, candidate)
    if best is None:
        return NO_MATCH
    score, flags, candidate = best
    result = (
        identity_pb2.MATCH_RESULT_MATCH
        if score == len(flags)
        else identity_pb2.MATCH_RESULT_PARTIAL
    )
    number_matched = any(f.field == "document_number" and f.matched for f in flags)
    status = (
        candidate.document_status
        if number_matched and candidate.document_status != identity_pb2.DOCUMENT_STATUS_UNSPECIFIED
        else identity_pb2.DOCUMENT_STATUS_UNKNOWN
    )
    return IdentityVerdict(result, flags, status)
