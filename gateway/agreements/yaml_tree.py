"""The YAML subset agreements are written in: plain data, every key's line, bounded.

:func:`read_tree` turns agreement text into plain data (mappings with string keys,
lists, strings, numbers, booleans, null and dates) and the line of every key path,
or raises :class:`AgreementFileError` listing each problem as ``FILE:LINE: PATH: RULE``:

* duplicate keys, aliases, non-string keys, explicit tags other than the plain ones,
  date-times, non-finite floats and integers beyond +-(2**53 - 1) are errors with
  their line, so the canonical form of what is returned is well defined;
* hostile text fails the same way, never with a parser's exception: a file over
  :data:`MAX_AGREEMENT_BYTES`, text that is not UTF-8 or holds control characters
  (literal or escaped, in values or keys), nesting deeper than :data:`MAX_DEPTH`,
  and numbers longer than :data:`MAX_NUMBER_CHARS` are each one issue with its line.
  Aliases are refused, so a small file cannot expand into a huge one.

Only pyyaml's safe loader runs; :mod:`gateway.agreements.loader` validates the result.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from gateway.bounded_text import (
    FORBIDDEN_CHARACTER,
    TextRefused,
    check_text,
    describe_character,
    read_text,
)

KeyPath = tuple[str | int, ...]

MAX_AGREEMENT_BYTES = 1 << 20
MAX_DEPTH = 32
# Past this, a number cannot be within +-(2**53 - 1) or a float anyone means, and
# pyyaml would meet Python's int-string limit or square its sexagesimal arithmetic.
MAX_NUMBER_CHARS = 64

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_SAFE_INTEGER = 2**53 - 1
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "timestamp")
)
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_NUMBER_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in ("int", "float"))
# What a malformed explicitly tagged scalar was meant to be, in the file's words.
_KINDS = {
    "int": "integer",
    "float": "number",
    "bool": "boolean (true or false)",
    "timestamp": "date (YYYY-MM-DD)",
}
# What pyyaml's constructors raise on an explicitly tagged malformed scalar (``!!bool
# maybe``, ``!!timestamp x``), besides its own errors.
_CONSTRUCTION_ERRORS = (yaml.YAMLError, ValueError, KeyError, AttributeError, TypeError)


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


class PlainDataLoader(yaml.SafeLoader):
    """A safe loader that refuses aliases, so a small file cannot expand into a huge one,
    and nesting deeper than :data:`MAX_DEPTH`, which the composer would recurse into."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError(problem="aliases are not allowed", problem_mark=mark)
        if self._depth >= MAX_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            problem = f"nested deeper than {MAX_DEPTH} levels"
            raise yaml.MarkedYAMLError(problem=problem, problem_mark=mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


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
        if node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
            self._issue(line, path, f"number longer than {MAX_NUMBER_CHARS} characters")
            return None
        try:
            value = self.loader.construct_object(node)
        except _CONSTRUCTION_ERRORS:
            kind = node.tag.rsplit(":", 1)[-1]
            self._issue(line, path, f"not a valid {_KINDS.get(kind, kind)}")
            return None
        bad = FORBIDDEN_CHARACTER.search(value) if isinstance(value, str) else None
        if bad is not None:
            self._issue(line, path, f"{describe_character(bad.group())} is not allowed")
        elif isinstance(value, datetime):
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
        if node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
            return None
        try:
            key = self.loader.construct_object(node)
        except _CONSTRUCTION_ERRORS:
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
            bad = FORBIDDEN_CHARACTER.search(key)
            if bad is not None:
                rule = f"a key holds {describe_character(bad.group())}, which is not allowed"
                self._issue(line, path, rule)
                continue
            key_path = (*path, key)
            if key in first_seen:
                self._issue(line, key_path, f"duplicate key (first at line {first_seen[key]})")
                continue
            first_seen[key] = line
            self.lines[key_path] = line
            result[key] = self.read(value_node, key_path)
        return result


def _refused(file: str, error: TextRefused) -> AgreementFileError:
    return AgreementFileError([AgreementIssue(file, error.line or 1, "(top level)", error.rule)])


def read_tree(text: str, file: str) -> tuple[dict[str, Any], dict[KeyPath, int]]:
    try:
        text = check_text(text, max_chars=MAX_AGREEMENT_BYTES)
    except TextRefused as e:
        raise _refused(file, e) from e
    loader = PlainDataLoader(text)
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
            # pyyaml's other errors (its reader's) quote the stream: say only what broke.
            raise AgreementFileError(
                [AgreementIssue(file, 1, "(top level)", "invalid YAML")]
            ) from e
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


def read_file_text(path: Path) -> str:
    try:
        return read_text(path, max_bytes=MAX_AGREEMENT_BYTES)
    except TextRefused as e:
        raise _refused(str(path), e) from e
