"""The policy stage: a payload in, a minimised payload (or a refusal) out.

Guarantees, in the order they are checked:

1. The exchange type has rules for the direction (``DIRECTION_NOT_AGREED``); the
   request declares a purpose (``PURPOSE_MISSING``) that is listed
   (``PURPOSE_NOT_AGREED``); its kind is listed (``KIND_NOT_AGREED``) and matches the
   kind the payload states, if it states one.
2. A kind that brings a special category passes only if the agreement lists that
   category (``SPECIAL_CATEGORY_NOT_AGREED``) and the request records what the rule
   requires, a legal basis and/or consent (``SPECIAL_CATEGORY_WITHOUT_BASIS``).
3. A payload concerning a minor (an ``is_minor`` flag, a date of birth less than 18
   years before ``today``, a date of birth without a year) or a protected person (a
   protected kind, or the caller's flag) is governed by the ``minors`` rules instead of
   ``fields``, and is refused without them (``MINOR_WITHOUT_RULES``). Where the
   agreement has ``minors`` rules, uncertainty fails closed: a person the record is
   about (:class:`~gateway.policy.catalogue.PersonConcerned`) whose date of birth is
   missing, or so partial that they could be under 18, is taken for a minor.
4. Only leaves the rules keep cross; masked, hashed and generalised leaves cross only
   in transformed form. Removed and transformed paths are reported normalised, with
   no index and no value. Evaluation is deterministic and idempotent, so the receiver
   re-evaluates what the sender produced and gets the same payload; with
   ``strict_receiver`` it refuses instead: a field the rules drop is
   ``FIELD_NOT_AGREED``, a field that should be masked or hashed but is not is
   ``FIELD_NOT_MINIMISED``.

Messages name paths and reason codes, never payload values, purposes or kinds as sent.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import MAXYEAR, date
from typing import Any, Literal

from gateway.errors import FieldViolation, PolicyRejected, ValidationRejected
from gateway.policy.catalogue import ExchangeType, SpecialCategory
from gateway.policy.compiled import BranchRule, CompiledExchange, CompiledPolicy, LeafRule, Op, Step
from gateway.policy.rules import Requirement
from gateway.policy.transforms import MASK, KeyedHash, is_hash_token
from pouch.v1 import common_pb2

ADULT_AGE = 18
# Every "int" leaf of the catalogues is an int32 (a date's year, month and day).
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1

_DROPPED = object()


class PolicyFieldsRejected(PolicyRejected):
    """A strict receiver refused fields; ``paths`` are normalised, without values."""

    def __init__(self, message: str, *, reason: str, paths: tuple[str, ...]) -> None:
        super().__init__(message, reason=reason)
        self.paths = paths


@dataclass(frozen=True, slots=True)
class LegalBasisFlags:
    """What the request records about the ground for processing special categories."""

    has_legal_basis: bool = False
    consent_recorded: bool = False

    @classmethod
    def from_message(cls, legal_basis: common_pb2.LegalBasis | None) -> LegalBasisFlags:
        if legal_basis is None:
            return cls()
        return cls(
            has_legal_basis=bool(legal_basis.reference.strip()),
            consent_recorded=legal_basis.consent_recorded,
        )

    def satisfies(self, requirement: Requirement) -> bool:
        if requirement == "legal_basis":
            return self.has_legal_basis
        if requirement == "consent":
            return self.consent_recorded
        return self.has_legal_basis or self.consent_recorded


@dataclass(frozen=True, slots=True)
class MinimisedPayload:
    """A payload that passed the policy of one exchange type in one direction."""

    exchange_type: ExchangeType
    direction: str
    purpose: str
    kind: str
    payload: Mapping[str, Any]
    removed_paths: tuple[str, ...]
    transformed_paths: tuple[str, ...]
    applied_rule_set: Literal["standard", "minors"]
    categories: tuple[SpecialCategory, ...]


def evaluate(
    policy: CompiledPolicy,
    *,
    exchange_type: ExchangeType,
    purpose: str | None,
    kind: str,
    payload: Mapping[str, Any],
    legal_basis: LegalBasisFlags,
    today: date,
    hash_key: bytes,
    strict_receiver: bool = False,
    protected_person: bool = False,
) -> MinimisedPayload:
    """Apply the policy to one payload; raise :class:`PolicyRejected` if it may not cross."""
    hasher = KeyedHash(hash_key)
    exchange = policy.exchange(exchange_type)
    if exchange is None:
        raise PolicyRejected(
            f"{exchange_type} is not agreed in direction {policy.direction}",
            reason="DIRECTION_NOT_AGREED",
        )
    if purpose is None or not purpose.strip():
        raise PolicyRejected("the request declares no purpose", reason="PURPOSE_MISSING")
    if purpose not in exchange.purposes:
        raise PolicyRejected(
            f"the declared purpose is not agreed for {exchange_type}", reason="PURPOSE_NOT_AGREED"
        )
    if kind not in exchange.kinds:
        raise PolicyRejected(
            f"the kind is not agreed for {exchange_type}", reason="KIND_NOT_AGREED"
        )
    _check_stated_kind(exchange, kind, payload)
    category = exchange.catalogue.kind_categories.get(kind)
    if category is not None:
        requirement = exchange.categories.get(category)
        if requirement is None:
            raise PolicyRejected(
                f"{category} data is not agreed for {exchange_type}",
                reason="SPECIAL_CATEGORY_NOT_AGREED",
            )
        if not legal_basis.satisfies(requirement):
            raise PolicyRejected(
                f"{category} data needs a recorded {requirement.replace('_', ' ')}",
                reason="SPECIAL_CATEGORY_WITHOUT_BASIS",
            )
    protected = protected_person or kind in exchange.catalogue.protected_kinds
    has_minor_rules = exchange.tree("minors", category) is not None
    rule_set: Literal["standard", "minors"] = (
        "minors"
        if protected
        or _concerns_minor(exchange, payload, today)
        or (has_minor_rules and _age_unknown(exchange, payload, category, strict_receiver))
        else "standard"
    )
    tree = exchange.tree(rule_set, category)
    if tree is None:
        raise PolicyRejected(
            "the agreement has no rules for minors or protected persons",
            reason="MINOR_WITHOUT_RULES",
        )
    walk = _Walk(hasher, strict=strict_receiver)
    minimised = walk.branch(payload, tree)
    walk.raise_refusals()
    return MinimisedPayload(
        exchange_type=exchange_type,
        direction=policy.direction,
        purpose=purpose,
        kind=kind,
        payload=minimised,
        removed_paths=tuple(sorted(walk.removed)),
        transformed_paths=tuple(sorted(walk.transformed)),
        applied_rule_set=rule_set,
        categories=(category,) if category is not None else (),
    )


def minimise_like(
    policy: CompiledPolicy,
    reference: MinimisedPayload,
    payload: Mapping[str, Any],
    *,
    hash_key: bytes,
) -> dict[str, Any]:
    """``payload`` in the form ``reference`` crossed in: the same rule set and category.

    For comparing what a gateway holds with what a partner sent under the same
    agreement: hashed fields become the same keyed hashes, generalised dates lose the
    same parts, dropped fields are dropped. It checks nothing: ``reference`` already
    passed :func:`evaluate` under ``policy``.
    """
    exchange = policy.exchange(reference.exchange_type)
    category = reference.categories[0] if reference.categories else None
    tree = exchange.tree(reference.applied_rule_set, category) if exchange else None
    if tree is None:
        raise ValueError("the reference payload was not evaluated under this policy")
    return _Walk(KeyedHash(hash_key), strict=False).branch(payload, tree)


def _values_at(tree: Any, steps: tuple[Step, ...]) -> Iterator[Any]:
    if not steps:
        yield tree
        return
    if not isinstance(tree, Mapping):
        return
    (key, repeated), rest = steps[0], steps[1:]
    value = tree.get(key)
    if value is None:
        return
    for item in value if repeated and isinstance(value, list) else (value,):
        yield from _values_at(item, rest)


def _check_stated_kind(exchange: CompiledExchange, kind: str, payload: Mapping[str, Any]) -> None:
    expected = exchange.catalogue.kinds.get(kind)
    for stated in _values_at(payload, exchange.kind_steps) if exchange.kind_steps else ():
        if stated != expected:
            path = exchange.catalogue.kind_path or ""
            raise ValidationRejected([FieldViolation(path, "does not match the declared kind")])


def _concerns_minor(exchange: CompiledExchange, payload: Mapping[str, Any], today: date) -> bool:
    for _path, steps in exchange.minor_flag_steps:
        if any(flag is True for flag in _values_at(payload, steps)):
            return True
    for path, steps in exchange.birth_date_steps:
        for born in _values_at(payload, steps):
            if _is_minor(path, born, today):
                return True
    return False


def _age_unknown(
    exchange: CompiledExchange,
    payload: Mapping[str, Any],
    category: SpecialCategory | None,
    received: bool,
) -> bool:
    """Whether a person the record is about comes without a date of birth.

    The sender holds the whole record, so a missing date is unknown there. A receiver
    reads a missing date as unknown only where the ordinary rules would have let its
    year cross, and a person without a role as possibly concerned only where they would
    have let the role cross: where they keep either back, the sender alone could decide.
    """
    ordinary = exchange.tree("standard", category)
    for concerned in exchange.concerned_steps:
        if received and not _keeps(ordinary, (*concerned.node, *concerned.birth_date, _YEAR)):
            continue
        person = concerned.person
        role_crosses = person.role_key is None or _keeps(
            ordinary, (*concerned.node, (person.role_key, False))
        )
        for node in _values_at(payload, concerned.node):
            if not isinstance(node, Mapping):
                continue  # the walk refuses it as off the schema
            role = node.get(person.role_key) if person.role_key is not None else None
            if role is not None and role not in person.roles:
                continue
            if role is None and received and not role_crosses:
                continue
            if next(_values_at(node, concerned.birth_date), None) is None:
                return True
    return False


_YEAR: Step = ("year", False)


def _keeps(tree: BranchRule | None, steps: tuple[Step, ...]) -> bool:
    """Whether ``tree`` lets the value at ``steps`` cross as it is."""
    node: BranchRule | LeafRule | None = tree
    for key, _repeated in steps:
        node = node.children.get(key) if isinstance(node, BranchRule) else None
    return isinstance(node, LeafRule) and node.op is Op.KEEP


def _is_minor(path: str, born: Any, today: date) -> bool:
    """Whether someone born on ``born`` can be under 18 on ``today``; unknown counts as yes."""
    if not isinstance(born, Mapping):
        raise _not_a_date(path)
    year, month, day = (born.get(part, 0) for part in ("year", "month", "day"))
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (year, month, day)):
        raise _not_a_date(path)
    if year == 0:
        return True
    if not (1 <= year <= MAXYEAR and 0 <= month <= 12 and 0 <= day <= 31):
        raise _not_a_date(path)
    if year + ADULT_AGE > MAXYEAR:
        return True
    # With a part unknown, take the latest date it could be: the strictest reading.
    month = month or 12
    day = day or calendar.monthrange(year, month)[1]
    if day > calendar.monthrange(year, month)[1]:
        raise _not_a_date(path)
    adult_year = year + ADULT_AGE
    if month == 2 and day == 29 and not calendar.isleap(adult_year):
        coming_of_age = date(adult_year, 3, 1)
    else:
        coming_of_age = date(adult_year, month, day)
    return today < coming_of_age


def _not_a_date(path: str) -> ValidationRejected:
    return ValidationRejected([FieldViolation(path, "is not a calendar date")])


def _type_matches(value: Any, leaf: LeafRule) -> bool:
    kind = leaf.type
    if kind in ("string", "bytes"):
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, int) and _INT32_MIN <= value <= _INT32_MAX
    if kind == "enum":
        return isinstance(value, str | int)
    if kind == "int64":
        return isinstance(value, str | int)
    return isinstance(value, str | int | float)


class _Walk:
    """One evaluation's walk over a payload; collects paths, never values."""

    __slots__ = ("_hasher", "_strict", "not_agreed", "not_minimised", "removed", "transformed")

    def __init__(self, hasher: KeyedHash, *, strict: bool) -> None:
        self._hasher = hasher
        self._strict = strict
        self.removed: set[str] = set()
        self.transformed: set[str] = set()
        self.not_agreed: set[str] = set()
        self.not_minimised: set[str] = set()

    def branch(self, tree: Mapping[str, Any], rule: BranchRule) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            child = rule.children.get(key)
            if child is None:
                self._drop(_unknown_path(rule.path, key))
            elif isinstance(child, LeafRule):
                kept = self.leaf(value, child)
                if kept is not _DROPPED:
                    out[key] = kept
            elif child.repeated:
                if not isinstance(value, list):
                    raise _schema_violation(child.path)
                items = [self._message(item, child) for item in value]
                if kept_items := [item for item in items if item]:
                    out[key] = kept_items
            elif kept_message := self._message(value, child):
                out[key] = kept_message
        return out

    def _message(self, value: Any, rule: BranchRule) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _schema_violation(rule.path)
        return self.branch(value, rule)

    def leaf(self, value: Any, rule: LeafRule) -> Any:
        if rule.generalised is not None:
            self.transformed.add(rule.generalised)
        if rule.op is Op.DROP:
            self._drop(rule.path)
            return _DROPPED
        values = value if rule.repeated and isinstance(value, list) else None
        if (values is None) == rule.repeated:
            raise _schema_violation(rule.path)
        each: list[Any] | tuple[Any] = values if values is not None else (value,)
        if not all(_type_matches(v, rule) for v in each):
            raise _schema_violation(rule.path)
        if rule.op is Op.KEEP:
            return value
        self.transformed.add(rule.path)
        if rule.op is Op.MASK:
            if self._strict and any(v != MASK for v in each):
                self.not_minimised.add(rule.path)
            return [MASK for _ in each] if values is not None else MASK
        if self._strict and not all(is_hash_token(v) for v in each):
            self.not_minimised.add(rule.path)
        return [self._hasher(v) for v in each] if values is not None else self._hasher(value)

    def _drop(self, path: str) -> None:
        self.removed.add(path)
        if self._strict:
            self.not_agreed.add(path)

    def raise_refusals(self) -> None:
        if self.not_agreed:
            paths = tuple(sorted(self.not_agreed))
            raise PolicyFieldsRejected(
                f"fields not agreed: {', '.join(paths)}", reason="FIELD_NOT_AGREED", paths=paths
            )
        if self.not_minimised:
            paths = tuple(sorted(self.not_minimised))
            raise PolicyFieldsRejected(
                f"fields not minimised: {', '.join(paths)}",
                reason="FIELD_NOT_MINIMISED",
                paths=paths,
            )


def _unknown_path(parent: str, key: object) -> str:
    # A key is a field name, but one outside the catalogue is reported only if it looks like one.
    name = key if isinstance(key, str) and key.isascii() and key.isidentifier() else "?"
    return f"{parent}.{name}" if parent else name


def _schema_violation(path: str) -> ValidationRejected:
    return ValidationRejected([FieldViolation(path, "does not match the payload schema")])
