"""Agreement files: strict YAML in, a validated agreement and its digest out; signing.

Guarantees of :func:`load_agreement` / :func:`parse_agreement_text`:

* Every failure is an :class:`AgreementFileError` listing every problem found,
  each as ``FILE:LINE: PATH: RULE`` (e.g.
  ``policies/at-be.yaml:14: exchanges.civil_record."AT->BE".purposes: field required``);
  the line is that of the offending key, or of the nearest enclosing key when a
  key is missing.
* The YAML subset is plain data: duplicate keys, aliases, non-string keys,
  explicit tags, date-times, non-finite floats and integers beyond +-(2**53 - 1)
  are errors with their line, so the canonical form is well defined.
* The top level is checked by :class:`~gateway.agreements.model.Agreement`;
  ``exchanges`` by the validator the caller passes (the policy schema), whose
  pydantic errors are mapped back to lines the same way.
* A returned :class:`AgreementFile` is fully valid; whether it is in force is
  decided elsewhere (:mod:`gateway.agreements.registry`).

:func:`sign_agreement` only signs a valid file, rewrites nothing but the
top-level ``signatures`` block (moved to the end of the file), and re-reads the
result before writing it: if the canonical form changed, the file is left as it was.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, NamedTuple, TypeVar

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gateway.agreements.canonical import CanonicalFormError, canonical_bytes, digest_of
from gateway.agreements.model import Agreement, AgreementSignature
from gateway.pki.agreement_signature import ALGORITHM, AgreementSigner
from gateway.pki.keys import write_public_file

ExchangesT = TypeVar("ExchangesT")
KeyPath = tuple[str | int, ...]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_SAFE_INTEGER = 2**53 - 1
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "timestamp")
)
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


class AgreementIssue(NamedTuple):
    """One broken rule: where (file, line, key path) and which rule."""

    file: str
    line: int
    path: str
    rule: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path}: {self.rule}"


class AgreementFileError(ValueError):
    """An agreement file is not valid; :attr:`issues` lists every problem, in file order."""

    def __init__(self, issues: Iterable[AgreementIssue]) -> None:
        self.issues = tuple(sorted(set(issues), key=lambda i: (i.file, i.line, i.path, i.rule)))
        if not self.issues:
            raise ValueError("an agreement file error needs at least one issue")
        super().__init__("\n".join(str(issue) for issue in self.issues))


@dataclass(frozen=True)
class AgreementFile(Generic[ExchangesT]):
    """A schema-valid agreement file, its validated policy section and its canonical form."""

    source: str
    agreement: Agreement
    exchanges: ExchangesT
    canonical: bytes
    digest: str
    lines: Mapping[KeyPath, int]

    def line_of(self, *path: str | int) -> int:
        """The line of ``path`` in the file, or of its nearest enclosing key."""
        return _nearest_line(self.lines, path)[0]


def format_path(path: Sequence[str | int]) -> str:
    """``exchanges.civil_record."AT->BE".purposes``, ``signatures[0].alg``."""
    text = ""
    for segment in path:
        if isinstance(segment, int):
            text += f"[{segment}]"
        else:
            shown = segment if _IDENTIFIER.fullmatch(segment) else json.dumps(segment)
            text += f".{shown}" if text else shown
    return text or "(top level)"


def _nearest_line(lines: Mapping[KeyPath, int], path: Sequence[str | int]) -> tuple[int, KeyPath]:
    for length in range(len(path), -1, -1):
        prefix = tuple(path[:length])
        if prefix in lines:
            return lines[prefix], prefix
    return 1, ()


class _PlainDataLoader(yaml.SafeLoader):
    """A safe loader that refuses aliases, so a small file cannot expand into a huge one."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError(problem="aliases are not allowed", problem_mark=mark)
        return super().compose_node(parent, index)


class _TreeReader:
    """Builds plain data from a YAML node tree, recording the line of every key."""

    def __init__(self, file: str, loader: yaml.SafeLoader) -> None:
        self.file = file
        self.loader = loader
        self.lines: dict[KeyPath, int] = {}
        self.issues: list[AgreementIssue] = []

    def _issue(self, line: int, path: KeyPath, rule: str) -> None:
        self.issues.append(AgreementIssue(self.file, line, format_path(path), rule))

    def read(self, node: yaml.Node, path: KeyPath) -> Any:
        line = node.start_mark.line + 1
        self.lines.setdefault(path, line)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path) if node.tag == _MAP_TAG else self._tagged(line, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                return self._tagged(line, path)
            return [self.read(item, (*path, i)) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode) and node.tag in _PLAIN_TAGS:
            return self._scalar(node, line, path)
        return self._tagged(line, path)

    def _tagged(self, line: int, path: KeyPath) -> None:
        self._issue(line, path, "YAML tags are not allowed")

    def _scalar(self, node: yaml.ScalarNode, line: int, path: KeyPath) -> Any:
        try:
            value = self.loader.construct_object(node)
        except (yaml.YAMLError, ValueError) as e:
            self._issue(line, path, f"unreadable value: {e}")
            return None
        if isinstance(value, datetime):
            self._issue(line, path, "date-times are not allowed, only dates (YYYY-MM-DD)")
        elif isinstance(value, float) and not math.isfinite(value):
            self._issue(line, path, "must be a finite number")
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and abs(value) > _MAX_SAFE_INTEGER
        ):
            self._issue(line, path, "integer is too large to be exchanged exactly")
        elif not (value is None or isinstance(value, str | int | float | date)):
            self._issue(line, path, f"a {type(value).__name__} value is not allowed")
        return value

    def _key(self, node: yaml.Node) -> str | None:
        if not isinstance(node, yaml.ScalarNode) or node.tag not in _PLAIN_TAGS:
            return None
        try:
            key = self.loader.construct_object(node)
        except (yaml.YAMLError, ValueError):
            return None
        # ``yes:`` or ``2025-01-01:`` would be a bool or a date key, not a name.
        return key if isinstance(key, str) else None

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = self._key(key_node)
            if key is None:
                self._issue(line, path, "mapping keys must be strings (quote them)")
                continue
            key_path = (*path, key)
            if key in first_seen:
                self._issue(line, key_path, f"duplicate key (first at line {first_seen[key]})")
                continue
            first_seen[key] = line
            self.lines[key_path] = line
            result[key] = self.read(value_node, key_path)
        return result


def _rule(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "string_type" and isinstance(error["input"], bool):
        return "must be a string (quote it: YAML reads yes, no, on, off as booleans)"
    if kind == "value_error" and "error" in error.get("ctx", {}):
        return str(error["ctx"]["error"])
    message = error["msg"]
    if message.startswith("Input should be"):
        message = "must be" + message[len("Input should be") :]
        return message.replace("valid dictionary", "mapping").replace("valid list", "list")
    return message[:1].lower() + message[1:]


def _issues_from_validation(
    file: str, lines: Mapping[KeyPath, int], error: ValidationError, prefix: KeyPath
) -> list[AgreementIssue]:
    issues = []
    for detail in error.errors(include_url=False):
        loc = (*prefix, *detail["loc"])
        line, found = _nearest_line(lines, loc)
        # Show the path as far as it exists in the file (pydantic adds union and
        # key tags beyond it), plus the missing key itself.
        shown = (*found, loc[len(found)]) if detail["type"] == "missing" and loc != found else found
        issues.append(AgreementIssue(file, line, format_path(shown), _rule(detail)))
    return issues


def _read_tree(text: str, file: str) -> tuple[dict[str, Any], dict[KeyPath, int]]:
    loader = _PlainDataLoader(text.removeprefix("\ufeff"))
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            line = e.problem_mark.line + 1 if e.problem_mark is not None else 1
            problem = e.problem or e.context or "syntax error"
            raise AgreementFileError(
                [AgreementIssue(file, line, "(top level)", f"invalid YAML: {problem}")]
            ) from e
        except yaml.YAMLError as e:
            raise AgreementFileError([AgreementIssue(file, 1, "(top level)", str(e))]) from e
        if root is None:
            raise AgreementFileError([AgreementIssue(file, 1, "(top level)", "file is empty")])
        reader = _TreeReader(file, loader)
        document = reader.read(root, ())
    finally:
        loader.dispose()
    if reader.issues:
        raise AgreementFileError(reader.issues)
    if not isinstance(document, dict):
        line = root.start_mark.line + 1
        raise AgreementFileError(
            [AgreementIssue(file, line, "(top level)", "an agreement must be a mapping")]
        )
    return document, reader.lines


def parse_agreement_text(
    text: str, *, file: str, exchanges_validator: Callable[[Any], ExchangesT]
) -> AgreementFile[ExchangesT]:
    """Validate agreement YAML ``text``; ``file`` names it in errors."""
    document, lines = _read_tree(text, file)
    issues: list[AgreementIssue] = []
    agreement: Agreement | None = None
    exchanges: list[ExchangesT] = []
    try:
        agreement = Agreement.model_validate(document)
    except ValidationError as e:
        issues += _issues_from_validation(file, lines, e, ())
    raw_exchanges = document.get("exchanges")
    if isinstance(raw_exchanges, dict):
        try:
            exchanges.append(exchanges_validator(raw_exchanges))
        except ValidationError as e:
            issues += _issues_from_validation(file, lines, e, ("exchanges",))
        except (ValueError, TypeError) as e:
            line = lines.get(("exchanges",), 1)
            issues.append(AgreementIssue(file, line, "exchanges", str(e)))
    if issues or agreement is None or not exchanges:
        raise AgreementFileError(issues)
    try:
        canonical = canonical_bytes(document)
    except CanonicalFormError as e:
        raise AgreementFileError([AgreementIssue(file, 1, "(top level)", str(e))]) from e
    return AgreementFile(
        source=file,
        agreement=agreement,
        exchanges=exchanges[0],
        canonical=canonical,
        digest=digest_of(canonical),
        lines=MappingProxyType(lines),
    )


def load_agreement(
    path: Path, *, exchanges_validator: Callable[[Any], ExchangesT]
) -> AgreementFile[ExchangesT]:
    """Read and validate the agreement file at ``path``."""
    return parse_agreement_text(
        _read_text(path), file=str(path), exchanges_validator=exchanges_validator
    )


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise AgreementFileError(
            [AgreementIssue(str(path), 1, "(top level)", "file is not UTF-8 text")]
        ) from e


def render_signatures(signatures: Iterable[AgreementSignature]) -> str:
    """The ``signatures:`` block as it is written at the end of an agreement file."""
    # Every value is quoted: YAML would read the state code NO as a boolean.
    lines = ["signatures:"]
    for signature in signatures:
        lines.append(f"  - state: {json.dumps(signature.state)}")
        if signature.key_id is not None:
            lines.append(f"    key_id: {json.dumps(signature.key_id)}")
        lines.append(f"    alg: {json.dumps(signature.alg)}")
        lines.append(f"    signature: {json.dumps(signature.signature)}")
    return "\n".join(lines) + "\n"


def _without_signatures(text: str, file: str) -> str:
    loader = _PlainDataLoader(text)
    try:
        root = loader.get_single_node()
    finally:
        loader.dispose()
    if not isinstance(root, yaml.MappingNode) or root.flow_style:
        raise ValueError(f"{file}: write the agreement as a block-style mapping to sign it")
    for key_node, value_node in root.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == "signatures":
            text = text[: key_node.start_mark.index] + text[value_node.end_mark.index :]
    return text.rstrip() + "\n"


def sign_agreement(
    path: Path,
    *,
    key_path: Path,
    cert_path: Path,
    exchanges_validator: Callable[[Any], object],
) -> AgreementSignature:
    """Add (or replace) the signature of the state whose signing key is given."""
    path = Path(path)
    text = _read_text(path)
    parsed = parse_agreement_text(text, file=str(path), exchanges_validator=exchanges_validator)
    signer = AgreementSigner.load(key_path, cert_path)
    agreement = parsed.agreement
    if signer.state not in agreement.parties:
        raise ValueError(
            f"{cert_path} is {signer.state}'s signing certificate, and {signer.state} is not "
            f"a party to {agreement.id} ({' and '.join(agreement.parties)})"
        )
    signature = AgreementSignature(
        state=signer.state,
        key_id=signer.key_id,
        alg=ALGORITHM,
        signature=signer.sign(parsed.canonical),
    )
    others = [s for s in agreement.signatures if s.state != signer.state]
    # Parties' signatures in party order; anything else after them, as found.
    order = {state: position for position, state in enumerate(agreement.parties)}
    signatures = sorted([*others, signature], key=lambda s: order.get(s.state, len(order)))
    new_text = _without_signatures(text, str(path)) + render_signatures(signatures)
    check = parse_agreement_text(new_text, file=str(path), exchanges_validator=exchanges_validator)
    if check.digest != parsed.digest or check.agreement.signatures != tuple(signatures):
        raise ValueError(f"{path}: could not rewrite the signatures block safely; file unchanged")
    write_public_file(path, new_text.encode("utf-8"))
    return signature
