"""The schema of an agreement's policy section: what may cross, per exchange and direction.

Guarantees:

* Every model is frozen and forbids unknown keys, so a misspelt key is an error and
  never a silently ignored rule.
* Rules fail closed: a path no rule covers is denied; an empty or missing ``fields``
  denies every field; a kind, purpose or special category not listed is refused.
* Every path a rule names exists in the exchange type's catalogue (``[]`` after a
  repeated message may be omitted, but a path is named once), and its action fits the
  field (``mask``/``hash`` need text, ``generalize`` a date or a place). Errors
  are pydantic errors whose location ends with the offending key, e.g.
  ``('civil_record', 'AT->BE', 'fields', 'parties[].person.shoe_size')``, so the
  agreement loader can point at the line.
* The models import nothing from ``gateway.agreements``; that package embeds
  :class:`PolicySection`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from gateway.policy.catalogue import (
    Catalogue,
    ExchangeType,
    SpecialCategory,
    catalogue_for,
)
from gateway.policy.transforms import GeneralizeLevel

Requirement = Literal["legal_basis", "consent", "legal_basis_or_consent"]
FieldActionName = Literal["allow", "deny", "mask", "hash"]


def _distinct_parties(direction: str) -> str:
    sender, _, recipient = direction.partition("->")
    if sender == recipient:
        raise ValueError("a direction names two different states")
    return direction


Direction = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z]{2}->[A-Z]{2}$"),
    AfterValidator(_distinct_parties),
]
"""``"AT->BE"``: the sending state, then the receiving state (ISO 3166-1 alpha-2)."""

Purpose = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Generalize(_Frozen):
    """Keep only part of a date (``year``, ``month``) or a place (``country``, ``city``)."""

    generalize: GeneralizeLevel


FieldAction = FieldActionName | Generalize
FieldRules = Mapping[str, FieldAction]


def action_name(action: FieldAction) -> str:
    """``allow``, ``deny``, ``mask``, ``hash`` or ``generalize:<level>``."""
    return action if isinstance(action, str) else f"generalize:{action.generalize}"


def _none_is_empty(value: Any) -> Any:
    # In YAML an emptied ``fields:`` key reads as null; it means "no field may cross".
    return {} if value is None else value


class SpecialCategoryRule(_Frozen):
    """How a special category of data may cross, and what the request must record.

    ``fields`` alone governs the paths the category covers (a case's summary and
    notes); for any other path it can only tighten the ordinary (or minors) rule.
    """

    requires: Requirement
    fields: FieldRules = Field(default_factory=dict)

    @field_validator("fields", mode="before")
    @classmethod
    def _empty_fields(cls, value: Any) -> Any:
        return _none_is_empty(value)


class MinorRules(_Frozen):
    """The stricter field rules for minors and protected persons; replace ``fields``."""

    fields: FieldRules = Field(default_factory=dict)

    @field_validator("fields", mode="before")
    @classmethod
    def _empty_fields(cls, value: Any) -> Any:
        return _none_is_empty(value)


def _error(kind: str, message: str, loc: tuple[str | int, ...], value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)


class DirectionRules(_Frozen):
    """The rules of one exchange type in one direction (sender -> recipient)."""

    exchange_type: ClassVar[ExchangeType]

    purposes: tuple[Purpose, ...] = Field(min_length=1)
    kinds: tuple[str, ...] = Field(min_length=1)
    quota_per_day: Mapping[Purpose, PositiveInt] = Field(default_factory=dict)
    response_deadline_seconds: PositiveInt | None = None
    fields: FieldRules = Field(default_factory=dict)
    special_categories: Mapping[SpecialCategory, SpecialCategoryRule] = Field(default_factory=dict)
    minors: MinorRules | None = None

    @field_validator("fields", mode="before")
    @classmethod
    def _empty_fields(cls, value: Any) -> Any:
        return _none_is_empty(value)

    @model_validator(mode="after")
    def _check_against_catalogue(self) -> DirectionRules:
        catalogue = catalogue_for(self.exchange_type)
        errors = [
            *_duplicates("purposes", self.purposes),
            *_duplicates("kinds", self.kinds),
            *self._kind_errors(catalogue),
            *self._quota_errors(),
            *_field_errors(catalogue, ("fields",), self.fields),
        ]
        if self.minors is not None:
            errors += _field_errors(catalogue, ("minors", "fields"), self.minors.fields)
            # Where minors have rules of their own, a receiver must be able to tell them apart.
            errors += _birth_date_errors(catalogue, ("fields",), self.fields)
        for category, rule in self.special_categories.items():
            loc = ("special_categories", category)
            if category not in catalogue.kind_categories.values():
                message = f"no {self.exchange_type} kind carries {category} data"
                errors.append(_error("category_not_applicable", message, loc, category))
                continue
            errors += _field_errors(catalogue, (*loc, "fields"), rule.fields)
            if self.minors is not None:
                errors += _birth_date_errors(catalogue, (*loc, "fields"), rule.fields)
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def _kind_errors(self, catalogue: Catalogue) -> list[InitErrorDetails]:
        return [
            _error(
                "unknown_kind", f"{kind!r} is not a {self.exchange_type} kind", ("kinds", i), kind
            )
            for i, kind in enumerate(self.kinds)
            if kind not in catalogue.kinds
        ]

    def _quota_errors(self) -> list[InitErrorDetails]:
        return [
            _error(
                "purpose_not_listed", "a quota for a purpose not listed", ("quota_per_day", p), p
            )
            for p in self.quota_per_day
            if p not in self.purposes
        ]


def _duplicates(name: str, values: tuple[str, ...]) -> list[InitErrorDetails]:
    return [
        _error("duplicate", f"{value!r} is listed twice", (name, i), value)
        for i, value in enumerate(values)
        if value in values[:i]
    ]


def _field_errors(
    catalogue: Catalogue, loc: tuple[str, ...], rules: FieldRules
) -> list[InitErrorDetails]:
    errors: list[InitErrorDetails] = []
    seen: set[str] = set()
    for path, action in rules.items():
        canonical = catalogue.canonical_path(path)
        where = (*loc, path)
        if canonical is None:
            message = f"no field {path} in a {catalogue.exchange_type} payload"
            errors.append(_error("unknown_path", message, where, path))
        elif canonical in seen:
            message = f"{path} names {canonical} a second time"
            errors.append(_error("duplicate", message, where, path))
        elif action_name(action) not in catalogue.valid_actions(canonical):
            message = f"{action_name(action)} does not apply to {path}"
            errors.append(_error("action_not_applicable", message, where, path))
        seen.add(canonical or path)
    return errors


# What crosses of a date under each action: generalising keeps the year (and the month).
_DATE_PARTS_KEPT = {
    "allow": frozenset({"year", "month", "day"}),
    "generalize:month": frozenset({"year", "month"}),
    "generalize:year": frozenset({"year"}),
}


def _birth_date_errors(
    catalogue: Catalogue, loc: tuple[str, ...], rules: FieldRules
) -> list[InitErrorDetails]:
    """A date of birth whose month or day may cross without its year is refused.

    The receiving gateway decides whether the person concerned may be a minor from what
    crossed; a month without its year could be anyone's, so it would have to read it as
    a minor's while the sender, who saw the year, read it as an adult's.
    """
    by_path = {c: action_name(a) for p, a in rules.items() if (c := catalogue.canonical_path(p))}
    errors: list[InitErrorDetails] = []
    for birth_date in catalogue.birth_date_paths:
        crossing = {
            part for part in ("year", "month", "day") if _date_part_kept(by_path, birth_date, part)
        }
        if crossing and "year" not in crossing:
            message = (
                f"{birth_date}: the month or day of a date of birth may cross only with its "
                "year, or a receiver cannot tell an adult from a minor"
            )
            errors.append(_error("birth_date_without_year", message, loc, birth_date))
    return errors


def _date_part_kept(by_path: Mapping[str, str], birth_date: str, part: str) -> bool:
    """Whether the most specific rule covering ``birth_date.part`` lets it cross."""
    candidate = f"{birth_date}.{part}"
    while candidate and candidate not in by_path:
        candidate = candidate.rpartition(".")[0]
    if not candidate:
        return False
    action = by_path[candidate]
    if candidate.endswith(f".{part}"):
        # A rule on the part itself: only denying or hashing it keeps it from being read.
        return action not in ("deny", "hash")
    return part in _DATE_PARTS_KEPT.get(action, frozenset())


def canonical_rules(catalogue: Catalogue, rules: FieldRules) -> dict[str, FieldAction]:
    """Rules keyed by canonical path; only for rules that passed validation."""
    canonical: dict[str, FieldAction] = {}
    for path, action in rules.items():
        key = catalogue.canonical_path(path)
        if key is None:
            raise ValueError(f"no field {path} in a {catalogue.exchange_type} payload")
        canonical[key] = action
    return canonical


class CivilRecordRules(DirectionRules):
    """Kinds are civil-status events (``birth``, ``death``, ``marriage`` ...)."""

    exchange_type: ClassVar[ExchangeType] = "civil_record"


NameTransliteration = Literal["none", "latin_ascii", "icao_9303"]
"""How names are brought to one script before comparison; ``icao_9303`` is Doc 9303
part 3's recommended transliteration, ``latin_ascii`` only strips diacritics."""


class NameMatching(_Frozen):
    """How the responding gateway compares names: NFKC, this transliteration, upper case."""

    transliteration: NameTransliteration = "icao_9303"


class IdentityConfirmationRules(DirectionRules):
    """Kinds are document types (``passport``, ``identity_card`` ...).

    ``name_matching`` names the comparison both gateways apply: the requester puts the
    claimed names in that form before the field rules (so a hashed name hashes the
    same form), the responder puts the registry's names in it before comparing.
    """

    exchange_type: ClassVar[ExchangeType] = "identity_confirmation"

    name_matching: NameMatching = Field(default_factory=NameMatching)


class CaseDeadlines(_Frozen):
    """Seconds the representing state has for each step of a representation case.

    ``acknowledge_seconds`` runs from the request, ``decide_seconds`` (accept or
    decline) from the acknowledgement, ``start_seconds`` from the acceptance and
    ``complete_seconds`` (complete or fail) from the start. An unset acknowledge or
    decide step falls back to the direction's ``response_deadline_seconds``; an unset
    start or complete step has no deadline.
    """

    acknowledge_seconds: PositiveInt | None = None
    decide_seconds: PositiveInt | None = None
    start_seconds: PositiveInt | None = None
    complete_seconds: PositiveInt | None = None


class RepresentationRules(DirectionRules):
    """Kinds are assistance kinds (``detention_visit``, ``medical_emergency`` ...)."""

    exchange_type: ClassVar[ExchangeType] = "representation"

    deadlines: CaseDeadlines = Field(default_factory=CaseDeadlines)


class PolicySection(_Frozen):
    """The policy section of an agreement: per exchange type, per direction."""

    civil_record: Mapping[Direction, CivilRecordRules] = Field(default_factory=dict)
    identity_confirmation: Mapping[Direction, IdentityConfirmationRules] = Field(
        default_factory=dict
    )
    representation: Mapping[Direction, RepresentationRules] = Field(default_factory=dict)

    def rules_for(self, exchange_type: ExchangeType, direction: str) -> DirectionRules | None:
        """The rules of one exchange type in one direction, or None if none are agreed."""
        by_type: Mapping[ExchangeType, Mapping[str, DirectionRules]] = {
            "civil_record": self.civil_record,
            "identity_confirmation": self.identity_confirmation,
            "representation": self.representation,
        }
        return by_type[exchange_type].get(direction)

    def directions(self) -> frozenset[str]:
        """Every direction some exchange type has rules for."""
        return frozenset((*self.civil_record, *self.identity_confirmation, *self.representation))
