"""The policy engine: what of a payload may cross between two states, and in what form.

An agreement's policy section (:class:`PolicySection`) is validated against the
payload catalogue, compiled once per direction (:class:`CompiledPolicy`), and applied
by :func:`evaluate` on both ends: the sender minimises before signing, the receiver
re-evaluates (optionally refusing instead of stripping). Rules fail closed: anything
no rule lets through is removed, and a rejection carries a stable reason code.
"""

from gateway.policy.catalogue import (
    CATALOGUES,
    EXCHANGE_TYPES,
    SPECIAL_CATEGORIES,
    Catalogue,
    ExchangeType,
    SpecialCategory,
    catalogue_for,
    civil_record_payload,
    identity_payload,
    kind_name,
    payload_tree,
    representation_payload,
)
from gateway.policy.compiled import CompiledExchange, CompiledPolicy
from gateway.policy.evaluate import (
    LegalBasisFlags,
    MinimisedPayload,
    PolicyFieldsRejected,
    evaluate,
)
from gateway.policy.rules import (
    CivilRecordRules,
    DirectionRules,
    FieldAction,
    Generalize,
    IdentityConfirmationRules,
    MinorRules,
    PolicySection,
    RepresentationRules,
    Requirement,
    SpecialCategoryRule,
)
from gateway.policy.transforms import MASK, KeyedHash, keyed_hash, mask

__all__ = [
    "CATALOGUES",
    "EXCHANGE_TYPES",
    "MASK",
    "SPECIAL_CATEGORIES",
    "Catalogue",
    "CivilRecordRules",
    "CompiledExchange",
    "CompiledPolicy",
    "DirectionRules",
    "ExchangeType",
    "FieldAction",
    "Generalize",
    "IdentityConfirmationRules",
    "KeyedHash",
    "LegalBasisFlags",
    "MinimisedPayload",
    "MinorRules",
    "PolicyFieldsRejected",
    "PolicySection",
    "RepresentationRules",
    "Requirement",
    "SpecialCategory",
    "SpecialCategoryRule",
    "catalogue_for",
    "civil_record_payload",
    "evaluate",
    "identity_payload",
    "keyed_hash",
    "kind_name",
    "mask",
    "payload_tree",
    "representation_payload",
]
