"""Field rules compiled once into a tree of per-leaf decisions.

Guarantees:

* Compilation resolves, for every leaf of the catalogue, the most specific rule that
  covers it (the longest rule path that equals the leaf path or is a dotted prefix
  of it). A leaf no rule covers is dropped. The result is a tree mirroring the
  payload, so evaluation is one dict lookup per payload key: no path strings are
  built and no patterns matched per request.
* ``mask`` and ``hash`` keep text leaves only; a subtree rule drops the non-text
  leaves below it. ``generalize`` keeps the parts of its date or place that the level
  names and drops the others.
* For each rule set (``standard``; ``minors`` when the agreement has one) and each
  agreed special category, one tree is built. The paths the category covers (a case's
  summary and notes) are governed by the category's rules alone; elsewhere a category
  rule can only make a field stricter (deny > mask > hash > generalise > allow), so it
  never loosens the rules for minors.
* A :class:`CompiledPolicy` is immutable and shares nothing with the pydantic models
  it was built from.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from gateway.policy.catalogue import (
    DATE_MESSAGE,
    EXCHANGE_TYPES,
    PLACE_MESSAGE,
    Catalogue,
    ExchangeType,
    Leaf,
    LeafType,
    Node,
    PersonConcerned,
    SpecialCategory,
    catalogue_for,
)
from gateway.policy.rules import (
    DirectionRules,
    FieldAction,
    FieldRules,
    Generalize,
    PolicySection,
    Requirement,
    canonical_rules,
)
from gateway.policy.transforms import DATE_LEVELS, KEPT_PARTS

RuleSetName = Literal["standard", "minors"]

_DIRECTION = re.compile(r"[A-Z]{2}->[A-Z]{2}")


class Op(enum.Enum):
    """What happens to one leaf value."""

    KEEP = "keep"
    DROP = "drop"
    MASK = "mask"
    HASH = "hash"


@dataclass(frozen=True, slots=True)
class LeafRule:
    """The decision for one leaf; ``generalised`` names the date or place it belongs to."""

    path: str
    type: LeafType
    repeated: bool
    op: Op
    generalised: str | None = None


@dataclass(frozen=True, slots=True)
class BranchRule:
    """A message node: its children by payload key."""

    path: str
    repeated: bool
    children: Mapping[str, BranchRule | LeafRule]


_OPS: Mapping[str, Op] = {"allow": Op.KEEP, "deny": Op.DROP, "mask": Op.MASK, "hash": Op.HASH}
# A mask discloses less than a keyed hash, which still links records.
_STRICTNESS: Mapping[Op, int] = {Op.KEEP: 0, Op.HASH: 1, Op.MASK: 2, Op.DROP: 3}

Step = tuple[str, bool]
"""One key of a path and whether its value is a list of messages."""


def path_steps(path: str) -> tuple[Step, ...]:
    """``parties[].person`` -> ``(("parties", True), ("person", False))``."""
    return tuple((part.removesuffix("[]"), part.endswith("[]")) for part in path.split(".") if part)


def _governing_rule(path: str, rules: FieldRules) -> tuple[str, FieldAction] | None:
    candidate = path
    while candidate:
        action = rules.get(candidate)
        if action is not None:
            return candidate, action
        candidate = candidate.rpartition(".")[0]
    return None


def _decide(leaf: Leaf, catalogue: Catalogue, rules: FieldRules) -> LeafRule | None:
    """The decision of the rule governing ``leaf``; None if no rule covers it."""
    governing = _governing_rule(leaf.path, rules)
    if governing is None:
        return None
    rule_path, action = governing
    if isinstance(action, Generalize):
        level = action.generalize
        message = DATE_MESSAGE if level in DATE_LEVELS else PLACE_MESSAGE
        node = catalogue.enclosing(rule_path, message)
        if node is None:
            return _dropped(leaf)
        part = leaf.path.rpartition(".")[2]
        op = Op.KEEP if part in KEPT_PARTS[level] else Op.DROP
        return LeafRule(leaf.path, leaf.type, leaf.repeated, op, generalised=node)
    op = _OPS[action]
    if op in (Op.MASK, Op.HASH) and leaf.type != "string":
        op = Op.DROP
    return LeafRule(leaf.path, leaf.type, leaf.repeated, op)


def _dropped(leaf: Leaf) -> LeafRule:
    return LeafRule(leaf.path, leaf.type, leaf.repeated, Op.DROP)


def _stricter(first: LeafRule, second: LeafRule) -> LeafRule:
    def disclosure(rule: LeafRule) -> tuple[int, bool]:
        return _STRICTNESS[rule.op], rule.generalised is not None

    return second if disclosure(second) > disclosure(first) else first


def _branch_rule(
    node: Node,
    catalogue: Catalogue,
    rules: FieldRules,
    category: SpecialCategory | None,
    category_rules: FieldRules,
) -> BranchRule:
    children: dict[str, BranchRule | LeafRule] = {}
    for key, child in node.children.items():
        if isinstance(child, Node):
            children[key] = _branch_rule(child, catalogue, rules, category, category_rules)
        elif category is None:
            children[key] = _decide(child, catalogue, rules) or _dropped(child)
        elif catalogue.is_sensitive(child.path, category):
            children[key] = _decide(child, catalogue, category_rules) or _dropped(child)
        else:
            base = _decide(child, catalogue, rules) or _dropped(child)
            extra = _decide(child, catalogue, category_rules)
            children[key] = base if extra is None else _stricter(base, extra)
    return BranchRule(node.path, node.repeated, MappingProxyType(children))


@dataclass(frozen=True, slots=True)
class ConcernedSteps:
    """A :class:`PersonConcerned` as steps: to each person's node, then to their birth date."""

    node: tuple[Step, ...]
    birth_date: tuple[Step, ...]
    person: PersonConcerned


@dataclass(frozen=True, slots=True)
class CompiledExchange:
    """One exchange type's rules in one direction, ready for evaluation."""

    exchange_type: ExchangeType
    direction: str
    purposes: frozenset[str]
    kinds: frozenset[str]
    quota_per_day: Mapping[str, int]
    response_deadline_seconds: int | None
    categories: Mapping[SpecialCategory, Requirement]
    catalogue: Catalogue
    kind_steps: tuple[Step, ...]
    birth_date_steps: tuple[tuple[str, tuple[Step, ...]], ...]
    minor_flag_steps: tuple[tuple[str, tuple[Step, ...]], ...]
    concerned_steps: tuple[ConcernedSteps, ...]
    _trees: Mapping[tuple[RuleSetName, SpecialCategory | None], BranchRule]

    def tree(self, rule_set: RuleSetName, category: SpecialCategory | None) -> BranchRule | None:
        """The decision tree for a rule set under a category; None if not agreed."""
        return self._trees.get((rule_set, category))

    @classmethod
    def compile(cls, rules: DirectionRules, direction: str) -> CompiledExchange:
        catalogue = catalogue_for(rules.exchange_type)
        rule_sets: dict[RuleSetName, FieldRules] = {
            "standard": canonical_rules(catalogue, rules.fields)
        }
        if rules.minors is not None:
            rule_sets["minors"] = canonical_rules(catalogue, rules.minors.fields)
        trees: dict[tuple[RuleSetName, SpecialCategory | None], BranchRule] = {}
        for name, field_rules in rule_sets.items():
            trees[name, None] = _branch_rule(catalogue.root, catalogue, field_rules, None, {})
            for category, category_rule in rules.special_categories.items():
                category_fields = canonical_rules(catalogue, category_rule.fields)
                trees[name, category] = _branch_rule(
                    catalogue.root, catalogue, field_rules, category, category_fields
                )
        return cls(
            exchange_type=rules.exchange_type,
            direction=direction,
            purposes=frozenset(rules.purposes),
            kinds=frozenset(rules.kinds),
            quota_per_day=MappingProxyType(dict(rules.quota_per_day)),
            response_deadline_seconds=rules.response_deadline_seconds,
            categories=MappingProxyType(
                {c: r.requires for c, r in rules.special_categories.items()}
            ),
            catalogue=catalogue,
            kind_steps=path_steps(catalogue.kind_path) if catalogue.kind_path else (),
            birth_date_steps=tuple((p, path_steps(p)) for p in catalogue.birth_date_paths),
            minor_flag_steps=tuple((p, path_steps(p)) for p in catalogue.minor_flag_paths),
            concerned_steps=tuple(
                ConcernedSteps(path_steps(person.node), path_steps(person.birth_date), person)
                for person in catalogue.people_concerned
            ),
            _trees=MappingProxyType(trees),
        )


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """An agreement's policy for one direction, compiled once and reused per request."""

    direction: str
    exchanges: Mapping[ExchangeType, CompiledExchange]

    @classmethod
    def compile(cls, section: PolicySection, direction: str) -> CompiledPolicy:
        """Compile every exchange type that has rules for ``direction`` (``"AT->BE"``)."""
        if _DIRECTION.fullmatch(direction) is None:
            raise ValueError("a direction is written SENDER->RECIPIENT, e.g. AT->BE")
        exchanges: dict[ExchangeType, CompiledExchange] = {}
        for exchange_type in EXCHANGE_TYPES:
            rules = section.rules_for(exchange_type, direction)
            if rules is not None:
                exchanges[exchange_type] = CompiledExchange.compile(rules, direction)
        return cls(direction=direction, exchanges=MappingProxyType(exchanges))

    def exchange(self, exchange_type: ExchangeType) -> CompiledExchange | None:
        """The compiled rules of one exchange type, or None if it is not agreed this way."""
        return self.exchanges.get(exchange_type)
