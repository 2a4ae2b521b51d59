"""The schema of an agreement file, except the per-exchange policy section.

Guarantees of :class:`Agreement` (pydantic v2, unknown keys forbidden at every
level, no silent coercion of numbers, strings or dates):

* ``id`` is a slug, ``version`` an integer >= 1, ``title`` a non-empty string;
* ``parties`` are exactly two distinct ISO 3166-1 alpha-2 codes;
* ``valid_from`` < ``valid_until``, both calendar dates (``YYYY-MM-DD``);
* ``bundles`` pins a ``sha256:<64 hex>`` trust-bundle digest for each party and
  for nobody else;
* ``retention_days`` is in 1..3650; ``onward_transfer`` is a closed choice;
* ``message_signatures`` is ``classical`` (the default: envelopes and receipts are
  signed ES256) or ``hybrid`` (ES256 and ML-DSA-44, both required at both ends). It
  is part of what both parties sign, unlike ``signatures``;
* ``signatures`` holds at most one ES256 signature per state; it is optional in
  the file, and an unsigned agreement is valid schema but never in force.

``exchanges`` is owned by :mod:`gateway.policy`; here it is only required to be
a mapping. Its real schema is applied by the validator the loader is given;
:data:`EXCHANGES_VALIDATOR` is the one the CLI and the gateway use.
"""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
)

from gateway.policy.rules import PolicySection

_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_STATE = re.compile(r"[A-Z]{2}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class DeclaredStatus(StrEnum):
    """What the parties declare in the file; being in force needs more (signatures, dates)."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


class OnwardTransfer(StrEnum):
    """Whether the recipient may pass payloads on to a third party."""

    FORBIDDEN = "forbidden"
    ALLOWED_WITH_CONSENT = "allowed_with_consent"


class MessageSignatures(StrEnum):
    """How envelopes and receipts under the agreement are signed.

    ``hybrid`` adds an ML-DSA-44 signature beside the ES256 one, for evidence meant to
    outlast ECDSA; each party's pinned trust bundle must then name ML-DSA-44.
    """

    CLASSICAL = "classical"
    HYBRID = "hybrid"


def _slug(value: str) -> str:
    if len(value) > 64 or _SLUG.fullmatch(value) is None:
        raise ValueError(
            "must be a slug: lowercase ASCII letters and digits in hyphen-separated words, "
            "at most 64 characters"
        )
    return value


def _state(value: str) -> str:
    if _STATE.fullmatch(value) is None:
        raise ValueError("must be an ISO 3166-1 alpha-2 code (two uppercase letters, e.g. AT)")
    return value


def _digest(value: str) -> str:
    if _DIGEST.fullmatch(value) is None:
        raise ValueError('must be a trust-bundle digest "sha256:" + 64 lowercase hex digits')
    return value


def _base64url(value: str) -> str:
    if _BASE64URL.fullmatch(value) is None:
        raise ValueError("must be unpadded base64url")
    return value


def _title(value: str) -> str:
    if not value.strip() or len(value) > 200:
        raise ValueError("must be non-empty text of at most 200 characters")
    return value


def _calendar_date(value: Any) -> date:
    # YAML turns an unquoted 2025-01-31 into a date; a quoted one stays a string.
    # A datetime is a date subclass but means something else, so it is refused.
    if isinstance(value, date) and type(value) is date:
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value) is not None:
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError("must be a calendar date YYYY-MM-DD")


def _two_states(value: Any) -> Any:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError("must list exactly two states, e.g. [AT, BE]")
    return value


Slug = Annotated[StrictStr, AfterValidator(_slug)]
StateCode = Annotated[StrictStr, AfterValidator(_state)]
BundleDigest = Annotated[StrictStr, AfterValidator(_digest)]
Base64Url = Annotated[StrictStr, AfterValidator(_base64url)]
CalendarDate = Annotated[date, BeforeValidator(_calendar_date)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgreementSignature(_Strict):
    """One party's ES256 signature over the agreement's canonical form."""

    state: StateCode
    key_id: StrictStr | None = None
    alg: Literal["ES256"]
    signature: Base64Url


class Agreement(_Strict):
    """An agreement file's top level; ``exchanges`` is checked by the policy validator."""

    id: Slug
    version: Annotated[StrictInt, Field(ge=1)]
    title: Annotated[StrictStr, AfterValidator(_title)]
    parties: Annotated[tuple[StateCode, StateCode], BeforeValidator(_two_states)]
    valid_from: CalendarDate
    valid_until: CalendarDate
    status: DeclaredStatus
    bundles: dict[StateCode, BundleDigest]
    retention_days: Annotated[StrictInt, Field(ge=1, le=3650)]
    onward_transfer: OnwardTransfer
    exchanges: dict[StrictStr, Any]
    message_signatures: MessageSignatures = MessageSignatures.CLASSICAL
    signatures: tuple[AgreementSignature, ...] = ()

    @field_validator("parties")
    @classmethod
    def _distinct_parties(cls, parties: tuple[str, str]) -> tuple[str, str]:
        if parties[0] == parties[1]:
            raise ValueError("the two parties must be different states")
        return parties

    @field_validator("valid_until")
    @classmethod
    def _after_valid_from(cls, valid_until: date, info: ValidationInfo) -> date:
        valid_from = info.data.get("valid_from")
        if isinstance(valid_from, date) and not valid_from < valid_until:
            raise ValueError(f"must be after valid_from ({valid_from.isoformat()})")
        return valid_until

    @field_validator("bundles")
    @classmethod
    def _one_bundle_per_party(cls, bundles: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        parties = info.data.get("parties")
        if parties is not None and set(bundles) != set(parties):
            raise ValueError(
                f"must pin exactly the parties' bundles ({', '.join(parties)}), "
                f"got {', '.join(sorted(bundles)) or 'none'}"
            )
        return bundles

    @field_validator("signatures", mode="before")
    @classmethod
    def _a_list_of_signatures(cls, signatures: Any) -> Any:
        # ``signatures`` is the parties' signatures, outside the signed text; a word
        # there is most likely the algorithm choice, which must be signed.
        if isinstance(signatures, str):
            raise ValueError(
                "must list the parties' signatures (pouch agreement sign adds them); "
                "the algorithms messages are signed with are message_signatures: "
                "classical or hybrid"
            )
        return signatures

    @field_validator("signatures")
    @classmethod
    def _one_signature_per_state(
        cls, signatures: tuple[AgreementSignature, ...]
    ) -> tuple[AgreementSignature, ...]:
        states = [s.state for s in signatures]
        repeated = sorted({s for s in states if states.count(s) > 1})
        if repeated:
            raise ValueError(f"more than one signature by {', '.join(repeated)}")
        return signatures

    @property
    def hybrid_signatures(self) -> bool:
        """Whether envelopes and receipts under it carry ML-DSA-44 signatures too."""
        return self.message_signatures is MessageSignatures.HYBRID

    def partner_of(self, state: str) -> str:
        """The other party, for a party ``state``; :class:`ValueError` otherwise."""
        first, second = self.parties
        if state == first:
            return second
        if state == second:
            return first
        raise ValueError(f"{state} is not a party to agreement {self.id}")


#: How the ``exchanges`` section is validated: :mod:`gateway.policy` owns its schema.
EXCHANGES_VALIDATOR: Final = PolicySection.model_validate
