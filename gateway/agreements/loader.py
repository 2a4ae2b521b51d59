"""Agreement files: strict YAML in, a validated agreement and its digest out; signing.

Guarantees of :func:`load_agreement` / :func:`parse_agreement_text`:

* Every failure is an :class:`AgreementFileError` listing every problem found,
  each as ``FILE:LINE: PATH: RULE`` (e.g.
  ``policies/at-be.yaml:14: exchanges.civil_record."AT->BE".purposes: field required``);
  the line is that of the offending key, or of the nearest enclosing key when a
  key is missing.
* The YAML subset is plain data, read by :mod:`gateway.agreements.yaml_tree`:
  duplicate keys, aliases, non-string keys, explicit tags, date-times, non-finite
  floats and integers beyond +-(2**53 - 1) are errors with their line, so the
  canonical form is well defined. Hostile files (too large, not UTF-8, control
  characters, deep nesting, endless numbers) fail the same way, never with a
  parser's exception.
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gateway.agreements.canonical import CanonicalFormError, canonical_bytes, digest_of
from gateway.agreements.model import Agreement, AgreementSignature
from gateway.agreements.yaml_tree import AgreementFileError as AgreementFileError
from gateway.agreements.yaml_tree import AgreementIssue as AgreementIssue
from gateway.agreements.yaml_tree import KeyPath as KeyPath
from gateway.agreements.yaml_tree import PlainDataLoader, read_file_text, read_tree
from gateway.agreements.yaml_tree import format_path as format_path
from gateway.pki.agreement_signature import ALGORITHM, AgreementSigner
from gateway.pki.keys import write_public_file

ExchangesT = TypeVar("ExchangesT")


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


def _nearest_line(lines: Mapping[KeyPath, int], path: Sequence[str | int]) -> tuple[int, KeyPath]:
    for length in range(len(path), -1, -1):
        prefix = tuple(path[:length])
        if prefix in lines:
            return lines[prefix], prefix
    return 1, ()


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


def parse_agreement_text(
    text: str, *, file: str, exchanges_validator: Callable[[Any], ExchangesT]
) -> AgreementFile[ExchangesT]:
    """Validate agreement YAML ``text``; ``file`` names it in errors."""
    document, lines = read_tree(text, file)
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
        read_file_text(path), file=str(path), exchanges_validator=exchanges_validator
    )


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
    loader = PlainDataLoader(text)
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
    text = read_file_text(path)
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
