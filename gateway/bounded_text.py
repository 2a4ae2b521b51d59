"""Text files an operator hands the gateway (configuration, agreements), read within limits.

Guarantees of :func:`read_text` and :func:`check_text`:

* At most ``max_bytes`` (plus one) are read, so a huge file, or ``/dev/zero``, is
  refused without being read whole.
* What they return is UTF-8 text without a byte-order mark, lone surrogates or
  control characters other than tab, line feed and carriage return. The parsers
  behind them (pyyaml, tomllib) then never meet a character they report in their
  own words, and an error that quotes part of a file cannot drive a terminal.
* Every refusal is one :class:`TextRefused` carrying the rule and, where known, the
  1-based line and the key; the caller names the file (:meth:`TextRefused.located`)
  or wraps it in its own error type.

Example::

    try:
        text = read_text(path, max_bytes=1 << 20)
    except TextRefused as e:
        raise ConfigError(e.located(str(path))) from e
"""

from __future__ import annotations

import re
from pathlib import Path

#: What no operator file may hold: C0 controls but tab, LF and CR; DEL; C1 controls;
#: lone surrogates (only reachable through ``str``); and the two Unicode non-characters
#: YAML refuses.
FORBIDDEN_CHARACTER = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
#: Keys are printed in error messages, so they may not even hold tab or line breaks.
FORBIDDEN_IN_KEY = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


class TextRefused(ValueError):
    """A file (or a value in it) is not text the gateway reads; says where and why."""

    def __init__(self, rule: str, *, line: int | None = None, key: str | None = None) -> None:
        self.rule = rule
        self.line = line
        self.key = key
        super().__init__(self.located("(text)"))

    def located(self, file: str) -> str:
        """``FILE:LINE: KEY: RULE``, leaving out the line or the key when not known."""
        where = file if self.line is None else f"{file}:{self.line}"
        return f"{where}: {self.rule}" if self.key is None else f"{where}: {self.key}: {self.rule}"


def describe_character(character: str) -> str:
    """``control character U+0001``: a forbidden character named without printing it."""
    if "\ud800" <= character <= "\udfff":
        return f"lone surrogate U+{ord(character):04X}"
    if character in "\ufffe\uffff":
        return f"non-character U+{ord(character):04X}"
    return f"control character U+{ord(character):04X}"


def check_text(text: str, *, max_chars: int) -> str:
    """``text`` without its byte-order mark, if it is within the limits above."""
    if len(text) > max_chars:
        raise TextRefused(f"file is larger than the limit of {max_chars} bytes")
    text = text.removeprefix("\ufeff")
    found = FORBIDDEN_CHARACTER.search(text)
    if found is not None:
        line = text.count("\n", 0, found.start()) + 1
        raise TextRefused(f"{describe_character(found.group())} is not allowed", line=line)
    return text


def read_text(path: Path, *, max_bytes: int) -> str:
    """The checked text of the file at ``path``; ``OSError`` if it cannot be opened."""
    with Path(path).open("rb") as stream:
        data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TextRefused(f"file is larger than the limit of {max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise TextRefused("file is not UTF-8 text", line=line) from e
    return check_text(text, max_chars=max_bytes)
