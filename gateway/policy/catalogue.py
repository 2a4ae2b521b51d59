"""Which payload paths exist for each exchange type, and which of them are sensitive.

Guarantees:

* The set of paths is derived from the protobuf descriptors of the payload messages,
  so a field added to a ``.proto`` file appears here (and is denied until an agreement
  names it) without anyone retyping it. Only the crossing part of each exchange is a
  payload: the whole ``CivilRecordUpdate``; ``{"claim": IdentityClaim}``; and for a
  representation case its kind, mission country, assisted person, summary, and the
  notes' text and attachments.
* Paths are dotted field names; an element of a repeated message field is written
  ``name[]`` (``parties[].person.date_of_birth``). A repeated scalar field is one leaf
  (``claim.name.given_names``). Paths never carry indices or values. A rule may omit
  the ``[]`` (``notes[].attachments``); :meth:`Catalogue.canonical_path` restores it.
* Kinds (event types, document types, assistance kinds) are the enum value names
  without their prefix, lower-cased (``birth``, ``passport``, ``medical_emergency``).
* The special categories of data a kind brings with it, the paths that then fall
  under that category, and the kinds whose person is a protected person are fixed
  here, in one table per exchange type.
* So is who a record is about (:class:`PersonConcerned`): the parties of a civil
  record whose role is SUBJECT or SPOUSE (for a birth or an adoption, the child), or
  whose role did not cross; the person of an identity claim; the assisted person of
  a representation case. Their date of birth decides whether the rules for minors
  apply, and its absence is read as a possible minor.
* :func:`payload_tree` and the ``*_payload`` builders produce the dict trees the
  evaluation stage walks (``MessageToDict`` with proto field names).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, get_args

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.protojson import message_to_dict
from pouch.v1 import civil_pb2, common_pb2, identity_pb2, representation_pb2

ExchangeType = Literal["civil_record", "identity_confirmation", "representation"]
EXCHANGE_TYPES: tuple[ExchangeType, ...] = get_args(ExchangeType)

SpecialCategory = Literal["health", "biometrics", "criminal_data", "victim_status"]
SPECIAL_CATEGORIES: tuple[SpecialCategory, ...] = get_args(SpecialCategory)

LeafType = Literal["string", "bytes", "enum", "bool", "int", "int64", "float"]

DATE_MESSAGE = common_pb2.CivilDate.DESCRIPTOR.full_name
"""Paths of this message (or its parts) accept ``generalize: year|month``."""
PLACE_MESSAGE = common_pb2.Place.DESCRIPTOR.full_name
"""Paths of this message (or its parts) accept ``generalize: country|city``."""
_MAX_DEPTH = 8

_SCALAR_TYPES: Mapping[int, LeafType] = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_ENUM: "enum",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_INT32: "int",
    FieldDescriptor.TYPE_SINT32: "int",
    FieldDescriptor.TYPE_SFIXED32: "int",
    FieldDescriptor.TYPE_UINT32: "int",
    FieldDescriptor.TYPE_FIXED32: "int",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_SINT64: "int64",
    FieldDescriptor.TYPE_SFIXED64: "int64",
    FieldDescriptor.TYPE_UINT64: "int64",
    FieldDescriptor.TYPE_FIXED64: "int64",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_DOUBLE: "float",
}

# Of these messages only the listed fields cross between states; the rest is case metadata.
_CROSSING_FIELDS: Mapping[str, frozenset[str]] = {
    representation_pb2.CaseNote.DESCRIPTOR.full_name: frozenset({"text", "attachments"}),
}

_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")


@dataclass(frozen=True, slots=True)
class Leaf:
    """One leaf field: its normalised path, JSON value type and whether it is a list."""

    path: str
    type: LeafType
    repeated: bool


@dataclass(frozen=True, slots=True)
class Node:
    """One message-valued field (or the root, path ``""``) and its children by key."""

    path: str
    message: str
    repeated: bool
    children: Mapping[str, Node | Leaf]


@dataclass(frozen=True, slots=True)
class PersonConcerned:
    """Where a person a record is about sits (``node``) and their date of birth below it.

    With ``role_key``, only the nodes whose role is one of ``roles``, or that carry no
    role at all (the agreement may keep it from crossing), are about that person.
    """

    node: str
    birth_date: str
    role_key: str | None = None
    roles: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Everything the policy engine knows about one exchange type's payload."""

    exchange_type: ExchangeType
    root: Node
    leaves: Mapping[str, Leaf]
    nodes: Mapping[str, Node]
    kinds: Mapping[str, str]
    """Policy kind name -> enum value name, e.g. ``birth`` -> ``CIVIL_EVENT_TYPE_BIRTH``."""
    kind_path: str | None
    """The payload leaf that states the kind, checked against the declared kind."""
    kind_categories: Mapping[str, SpecialCategory]
    category_paths: Mapping[SpecialCategory, frozenset[str]]
    """Paths (and everything below them) that fall under a category when it applies."""
    protected_kinds: frozenset[str]
    birth_date_paths: tuple[str, ...]
    minor_flag_paths: tuple[str, ...]
    people_concerned: tuple[PersonConcerned, ...]

    @property
    def paths(self) -> frozenset[str]:
        """Every path a rule may name: leaves and message nodes (never the root)."""
        return frozenset(self.leaves) | frozenset(p for p in self.nodes if p)

    def canonical_path(self, path: str) -> str | None:
        """``path`` with every repeated message written ``name[]``; None if it does not exist."""
        node: Node | Leaf = self.root
        for part in path.split("."):
            name = part.removesuffix("[]")
            child = node.children.get(name) if isinstance(node, Node) else None
            if child is None or (part != name and not (isinstance(child, Node) and child.repeated)):
                return None
            node = child
        return node.path or None

    def leaves_under(self, path: str) -> tuple[Leaf, ...]:
        """The leaves at or below ``path``, in catalogue order."""
        if path in self.leaves:
            return (self.leaves[path],)
        prefix = path + "."
        return tuple(leaf for p, leaf in self.leaves.items() if p.startswith(prefix))

    def enclosing(self, path: str, message: str) -> str | None:
        """The path of the ``message``-typed node that is or directly holds ``path``."""
        node = self.nodes.get(path)
        if node is not None:
            return path if node.message == message else None
        parent, _, _ = path.rpartition(".")
        node = self.nodes.get(parent)
        return parent if node is not None and node.message == message and parent else None

    def valid_actions(self, path: str) -> frozenset[str]:
        """The rule actions that make sense at canonical ``path``; empty if there is none.

        ``mask`` and ``hash`` need text below the path; ``generalize:year|month`` a
        date or one of its parts; ``generalize:country|city`` a place or one of its parts.
        """
        if path not in self.leaves and (not path or path not in self.nodes):
            return frozenset()
        actions = {"allow", "deny"}
        if any(leaf.type == "string" for leaf in self.leaves_under(path)):
            actions |= {"mask", "hash"}
        if self.enclosing(path, DATE_MESSAGE) is not None:
            actions |= {"generalize:year", "generalize:month"}
        if self.enclosing(path, PLACE_MESSAGE) is not None:
            actions |= {"generalize:country", "generalize:city"}
        return frozenset(actions)

    def is_sensitive(self, path: str, category: SpecialCategory) -> bool:
        """Whether ``path`` lies at or below a path that ``category`` covers here."""
        return any(
            path == root or path.startswith(root + ".")
            for root in self.category_paths.get(category, ())
        )


def _join(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def _field_node(field: FieldDescriptor, parent: str, depth: int) -> Node | Leaf:
    path = _join(parent, field.name)
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return Leaf(path=path, type=_SCALAR_TYPES[field.type], repeated=field.is_repeated)
    message = field.message_type
    if message is None:
        raise ValueError(f"message field {path} has no message type")
    if message.full_name.startswith("google.protobuf."):
        # Well-known types serialise to JSON strings (timestamps, durations).
        return Leaf(path=path, type="string", repeated=field.is_repeated)
    if field.is_repeated:
        path += "[]"
    return _message_node(message, path, repeated=field.is_repeated, depth=depth + 1)


def _message_node(
    message: Descriptor,
    path: str,
    *,
    repeated: bool,
    depth: int,
    only: Iterable[str] | None = None,
) -> Node:
    if depth > _MAX_DEPTH:
        raise ValueError(f"payload message nesting deeper than {_MAX_DEPTH} at {path}")
    keep = frozenset(only) if only is not None else _CROSSING_FIELDS.get(message.full_name)
    children = {
        field.name: _field_node(field, path, depth)
        for field in message.fields
        if keep is None or field.name in keep
    }
    return Node(
        path=path, message=message.full_name, repeated=repeated, children=MappingProxyType(children)
    )


def _composite_root(parts: Sequence[tuple[Descriptor, Iterable[str]]]) -> Node:
    """A synthetic root made of chosen fields of several messages."""
    children: dict[str, Node | Leaf] = {}
    for message, names in parts:
        children.update(_message_node(message, "", repeated=False, depth=0, only=names).children)
    return Node(path="", message="", repeated=False, children=MappingProxyType(children))


def _flatten(node: Node, leaves: dict[str, Leaf], nodes: dict[str, Node]) -> None:
    nodes[node.path] = node
    for child in node.children.values():
        if isinstance(child, Leaf):
            leaves[child.path] = child
        else:
            _flatten(child, leaves, nodes)


def _kind_names(enum: EnumDescriptor) -> Mapping[str, str]:
    prefix = _CAMEL_BOUNDARY.sub("_", enum.name).upper() + "_"
    return MappingProxyType(
        {
            value.name.removeprefix(prefix).lower(): value.name
            for value in enum.values
            if value.number != 0
        }
    )


def _build(
    exchange_type: ExchangeType,
    root: Node,
    kinds: EnumDescriptor,
    *,
    kind_path: str | None,
    kind_categories: Mapping[str, SpecialCategory] | None = None,
    category_paths: Mapping[SpecialCategory, frozenset[str]] | None = None,
    protected_kinds: frozenset[str] = frozenset(),
    people_concerned: tuple[PersonConcerned, ...] = (),
) -> Catalogue:
    leaves: dict[str, Leaf] = {}
    nodes: dict[str, Node] = {}
    _flatten(root, leaves, nodes)
    kind_names = _kind_names(kinds)
    categories = dict(kind_categories or {})
    sensitive = dict(category_paths or {})
    for name in (*categories, *protected_kinds):
        if name not in kind_names:
            raise ValueError(f"{exchange_type}: unknown kind {name}")
    for roots in sensitive.values():
        for path in roots:
            if path not in leaves and path not in nodes:
                raise ValueError(f"{exchange_type}: unknown sensitive path {path}")
    return Catalogue(
        exchange_type=exchange_type,
        root=root,
        leaves=MappingProxyType(leaves),
        nodes=MappingProxyType(nodes),
        kinds=kind_names,
        kind_path=kind_path,
        kind_categories=MappingProxyType(categories),
        category_paths=MappingProxyType(sensitive),
        protected_kinds=protected_kinds,
        birth_date_paths=tuple(
            p for p, n in nodes.items() if n.message == DATE_MESSAGE and p.endswith("date_of_birth")
        ),
        minor_flag_paths=tuple(p for p in leaves if p.endswith("is_minor")),
        people_concerned=people_concerned,
    )


# Free text and attachments of a case describe its circumstances, so they carry its category.
_CASE_NARRATIVE = frozenset({"summary", "notes[]"})

CATALOGUES: Mapping[ExchangeType, Catalogue] = MappingProxyType(
    {
        "civil_record": _build(
            "civil_record",
            _message_node(civil_pb2.CivilRecordUpdate.DESCRIPTOR, "", repeated=False, depth=0),
            civil_pb2.CivilEventType.DESCRIPTOR,
            kind_path="event_type",
            people_concerned=(
                PersonConcerned(
                    "parties[]",
                    "person.date_of_birth",
                    role_key="role",
                    roles=frozenset(
                        civil_pb2.PartyRole.Name(role)
                        for role in (civil_pb2.PARTY_ROLE_SUBJECT, civil_pb2.PARTY_ROLE_SPOUSE)
                    ),
                ),
            ),
        ),
        "identity_confirmation": _build(
            "identity_confirmation",
            _composite_root([(identity_pb2.ConfirmIdentityRequest.DESCRIPTOR, ("claim",))]),
            identity_pb2.DocumentType.DESCRIPTOR,
            kind_path="claim.document_type",
            people_concerned=(PersonConcerned("claim", "date_of_birth"),),
        ),
        "representation": _build(
            "representation",
            _composite_root(
                [
                    (
                        representation_pb2.RequestAssistanceRequest.DESCRIPTOR,
                        ("kind", "mission_country", "person", "summary"),
                    ),
                    (representation_pb2.RepresentationCase.DESCRIPTOR, ("notes",)),
                ]
            ),
            representation_pb2.AssistanceKind.DESCRIPTOR,
            kind_path="kind",
            kind_categories={
                "medical_emergency": "health",
                "detention_visit": "criminal_data",
                "victim_of_crime": "victim_status",
                "victim_of_trafficking": "victim_status",
            },
            category_paths={
                "health": _CASE_NARRATIVE,
                "criminal_data": _CASE_NARRATIVE,
                "victim_status": _CASE_NARRATIVE,
            },
            protected_kinds=frozenset({"victim_of_trafficking"}),
            people_concerned=(PersonConcerned("person", "date_of_birth"),),
        ),
    }
)


def catalogue_for(exchange_type: ExchangeType) -> Catalogue:
    """The catalogue of one exchange type; an unknown type is a programming error."""
    try:
        return CATALOGUES[exchange_type]
    except KeyError:
        raise ValueError(f"unknown exchange type {exchange_type!r}") from None


_KIND_ENUMS: Mapping[ExchangeType, EnumDescriptor] = {
    "civil_record": civil_pb2.CivilEventType.DESCRIPTOR,
    "identity_confirmation": identity_pb2.DocumentType.DESCRIPTOR,
    "representation": representation_pb2.AssistanceKind.DESCRIPTOR,
}


def kind_name(exchange_type: ExchangeType, enum_value: int | str) -> str | None:
    """The policy kind for an enum number or value name, or None if it names no kind."""
    catalogue = catalogue_for(exchange_type)
    for name, value_name in catalogue.kinds.items():
        if enum_value == value_name:
            return name
    if isinstance(enum_value, int):
        enum = _KIND_ENUMS[exchange_type]
        value = enum.values_by_number.get(enum_value)
        if value is not None and value.number != 0:
            return kind_name(exchange_type, value.name)
    return None


def payload_tree(message: Message) -> dict[str, Any]:
    """A message as the dict tree the policy walks (proto field names, defaults omitted)."""
    return message_to_dict(message)


def civil_record_payload(update: civil_pb2.CivilRecordUpdate) -> dict[str, Any]:
    """The payload tree of a civil-record update."""
    return payload_tree(update)


def identity_payload(claim: identity_pb2.IdentityClaim) -> dict[str, Any]:
    """The payload tree of an identity confirmation: the claim under ``claim``."""
    tree = payload_tree(claim)
    return {"claim": tree} if tree else {}


_NO_ASSISTANCE_KIND = representation_pb2.ASSISTANCE_KIND_UNSPECIFIED


def representation_payload(
    *,
    kind: representation_pb2.AssistanceKind.ValueType = _NO_ASSISTANCE_KIND,
    mission_country: str = "",
    person: representation_pb2.AssistedPerson | None = None,
    summary: str = "",
    notes: Sequence[representation_pb2.CaseNote] = (),
) -> dict[str, Any]:
    """The crossing part of a representation case; unset parts are left out, as in JSON."""
    tree: dict[str, Any] = {}
    if kind != _NO_ASSISTANCE_KIND:
        tree["kind"] = representation_pb2.AssistanceKind.Name(kind)
    if mission_country:
        tree["mission_country"] = mission_country
    if person is not None and (person_tree := payload_tree(person)):
        tree["person"] = person_tree
    if summary:
        tree["summary"] = summary
    crossing = _CROSSING_FIELDS[representation_pb2.CaseNote.DESCRIPTOR.full_name]
    note_trees = [{k: v for k, v in payload_tree(note).items() if k in crossing} for note in notes]
    if note_trees := [n for n in note_trees if n]:
        tree["notes"] = note_trees
    return tree
