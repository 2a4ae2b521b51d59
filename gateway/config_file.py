"""The configuration file as plain TOML data, parsed within limits.

:func:`read_document` returns what :func:`tomllib.loads` returns, or raises one
:class:`~gateway.bounded_text.TextRefused` naming the line or the key and the rule.
tomllib alone would raise ``RecursionError`` on deep nesting, a bare ``ValueError``
on an integer past Python's digit limit, and accept a NUL escaped into a path; so:

* the file is at most :data:`MAX_CONFIG_BYTES` of UTF-8 text without control
  characters (:mod:`gateway.bounded_text`);
* before parsing, a scan outside strings and comments refuses brackets nested
  deeper than :data:`MAX_DEPTH` and numbers longer than :data:`MAX_NUMBER_CHARS`,
  each with its line;
* after parsing, tables nested deeper than :data:`MAX_DEPTH` (dotted keys nest
  without brackets), control characters escaped into a value, and any in a key
  are refused naming the key;
* tomllib's own messages keep their line, with keys written ``a.b`` instead of as
  Python tuples.

:func:`describe_validation` words the settings model's refusals the same way: the
file, the key and the rule, in TOML's words (table, array) rather than Python's.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gateway.bounded_text import (
    FORBIDDEN_CHARACTER,
    FORBIDDEN_IN_KEY,
    TextRefused,
    describe_character,
    read_text,
)

MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 16
# TOML integers are 64-bit (19 digits); the slack is for underscores and floats.
MAX_NUMBER_CHARS = 64

# What the pre-parse scan stops at: anything that opens a string, a comment, a
# bracket, a line break, or a run of digits too long to be a number anyone means.
_NEXT = re.compile(r"""["'#\[\]{}\n]|[0-9_]{""" + str(MAX_NUMBER_CHARS + 1) + ",}")
_STRINGS = (
    ('"""', re.compile(r'"""(?:[^"\\]|\\[\s\S]|"(?!""))*"""(?:""?(?!"))?')),
    ("'''", re.compile(r"'''[\s\S]*?'''(?:''?(?!'))?")),
    ('"', re.compile(r'"(?:[^"\\\n]|\\.)*"')),
    ("'", re.compile(r"'[^'\n]*'")),
)
_POSITION = re.compile(r" \(at (?:line (?P<line>\d+), column (?P<column>\d+)|end of document)\)$")
_KEY_TUPLE = re.compile(r"\(((?:'[^'\\]*'(?:, )?)+),?\)")
_ASSIGNED_KEY = re.compile(r"\s*([A-Za-z0-9_.\-]+)\s*=")
_TABLE_HEADER = re.compile(r"\s*\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]")


def read_document(path: Path) -> dict[str, Any]:
    """The TOML document at ``path``; ``OSError`` if it cannot be opened."""
    text = read_text(path, max_bytes=MAX_CONFIG_BYTES)
    _scan(text)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _from_decode_error(str(e), text) from e
    except RecursionError as e:  # only if the scan misread a string: it bounds nesting
        raise TextRefused(f"not valid TOML: nested deeper than {MAX_DEPTH} levels") from e
    except ValueError as e:  # an integer past Python's digit limit, if the scan missed it
        raise TextRefused(f"not valid TOML: a number is longer than {MAX_NUMBER_CHARS}") from e
    _check_values(document)
    return document


def _scan(text: str) -> None:
    depth, line, position = 0, 1, 0
    while (found := _NEXT.search(text, position)) is not None:
        mark, position = found.group(), found.end()
        if mark == "\n":
            line += 1
        elif mark == "#":
            position = text.find("\n", position)
            if position < 0:
                return
        elif mark in "\"'":
            string = _string_at(text, found.start())
            if string is None:
                return  # unterminated: tomllib reports it, with its line
            line += string.group().count("\n")
            position = string.end()
        elif mark in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                rule = f"nested deeper than {MAX_DEPTH} levels"
                raise TextRefused(rule, line=line, key=_key_on(text, line))
        elif mark in "]}":
            depth = max(depth - 1, 0)
        else:
            rule = f"number longer than {MAX_NUMBER_CHARS} characters"
            raise TextRefused(rule, line=line, key=_key_on(text, line))


def _key_on(text: str, line: int) -> str | None:
    """The key assigned on ``line``, under the table above it, when the line reads so."""
    lines = text.splitlines()
    assigned = _ASSIGNED_KEY.match(lines[line - 1]) if line <= len(lines) else None
    if assigned is None:
        return None
    for previous in reversed(lines[: line - 1]):
        header = _TABLE_HEADER.match(previous)
        if header is not None:
            return f"{header[1]}.{assigned[1]}"
    return assigned[1]


def _string_at(text: str, start: int) -> re.Match[str] | None:
    for opening, pattern in _STRINGS:
        if text.startswith(opening, start):
            return pattern.match(text, start)
    return None


def _dotted(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


def _check_values(document: dict[str, Any]) -> None:
    # Iterative and in file order: a deep document must not exhaust the stack here either.
    pending: list[tuple[tuple[str | int, ...], Any]] = [((), document)]
    while pending:
        path, value = pending.pop()
        if len(path) > MAX_DEPTH:
            raise TextRefused(f"nested deeper than {MAX_DEPTH} levels", key=_dotted(path))
        children: list[tuple[tuple[str | int, ...], Any]] = []
        if isinstance(value, dict):
            for key, item in value.items():
                bad = FORBIDDEN_IN_KEY.search(key)
                if bad is not None:
                    rule = f"a key holds {describe_character(bad.group())}, which is not allowed"
                    raise TextRefused(rule, key=_dotted(path))
                children.append(((*path, key), item))
        elif isinstance(value, list):
            children = [((*path, index), item) for index, item in enumerate(value)]
        elif isinstance(value, str):
            bad = FORBIDDEN_CHARACTER.search(value)
            if bad is not None:
                rule = f"must not contain {describe_character(bad.group())}"
                raise TextRefused(rule, key=_dotted(path))
        pending.extend(reversed(children))


def _from_decode_error(message: str, text: str) -> TextRefused:
    position = _POSITION.search(message)
    message = message[: position.start()] if position is not None else message
    line = int(position["line"]) if position is not None and position["line"] else None
    message = _KEY_TUPLE.sub(lambda m: ".".join(re.findall(r"'([^']*)'", m[1])), message)
    if message == "Cannot overwrite a value" and line is not None:
        key = _key_on(text, line)
        if key is not None:
            return TextRefused("not valid TOML: duplicate key", line=line, key=key)
    return TextRefused(f"not valid TOML: {message[:1].lower()}{message[1:]}", line=line)


# pydantic's wording names Python types; an operator edits TOML tables and arrays.
_TOML_WORDS = (
    (re.compile(r"Input should be a valid dictionary.*"), "Input should be a table"),
    (re.compile(r"Input should be a valid tuple"), "Input should be an array"),
    (
        re.compile(r"Input should be an instance of Path|Input is not a valid path for .*"),
        "Input should be a string (a path)",
    ),
)


def _rule(item: ErrorDetails) -> str:
    if item["type"] == "extra_forbidden":
        return "unknown key"
    if item["type"] == "missing":
        return "required key is missing"
    rule = item["msg"].removeprefix("Value error, ")
    for pattern, words in _TOML_WORDS:
        rule = pattern.sub(words, rule)
    return rule


def describe_validation(path: Path, error: ValidationError) -> str:
    """One line naming the file, the key and the rule; a list when several keys are wrong."""
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        key = ".".join(str(part) for part in item["loc"])
        # A rule across sections has no key of its own: its message names the key.
        lines.append(f"{key}: {_rule(item)}" if key else _rule(item))
    if len(lines) == 1:
        return f"{path}: {lines[0]}"
    return "\n".join([f"{path}: invalid configuration", *(f"  {line}" for line in lines)])
