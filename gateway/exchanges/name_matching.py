"""Comparing names without disclosing them: the answer is match or no match, nothing else.

The responding gateway holds the registry's names and the requester's claimed names;
it must answer whether they are the same name, never what the registry holds. This
module compares the two after bringing both to one written form, chosen by
:class:`NameComparison`. It guarantees:

* :func:`normalise_name` is deterministic and idempotent (normalising a normalised
  name changes nothing), and returns upper-case words separated by single spaces;
* :func:`names_match` and :func:`mrz_names_match` return a bool and raise nothing for
  any text; they never log or keep the names;
* an unknown transliteration is refused when the rule is built, not silently ignored.

Normalisation (the order matters, and each step says why):

1. Apostrophes are removed, joining what they separated (Doc 9303 Part 3 §4.6:
   ``D'ARTAGNAN`` is ``DARTAGNAN``). This runs before NFKC too, because NFKC turns the
   acute accent ``´``, often typed as an apostrophe, into a space and a combining mark.
2. Unicode NFKC, so that a letter typed as a base letter and combining marks, or as a
   compatibility form (full-width letters, ligatures), is one character.
3. Separators become word boundaries: white space, hyphens and dashes (§4.6: a hyphen
   separates name components), commas (§4.6) and the MRZ filler ``<``. Every other
   punctuation character, full stops included, is removed (§4.6: "all other
   punctuation characters shall be omitted"), and so are invisible format characters.
   Combining marks that followed a removed character go with it.
4. Each character is transliterated: ``icao_9303`` by the Doc 9303 Part 3 §6 tables in
   :mod:`gateway.exchanges.transliteration` (any Latin letter they do not list loses its
   diacritics, NFKD without combining marks); ``latin_ascii`` by NFKD without combining
   marks plus the letters NFKD cannot reduce; ``none`` not at all.
5. Upper case (as in an MRZ), and words joined by single spaces.

Characters no table covers (Greek, Arabic, Han...) are kept, upper-cased: two such
names compare equal only when written alike, and never equal an MRZ name.
"""

from __future__ import annotations

import hmac
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from gateway.exchanges.transliteration import ICAO_CYRILLIC, ICAO_LATIN, LATIN_ASCII

Transliteration = Literal["none", "latin_ascii", "icao_9303"]

# ' ’ ‘ ʼ ʹ ` ´ ′ ＇: the characters people type for an apostrophe.
_APOSTROPHES = frozenset("'\u2019\u2018\u02bc\u02b9`\u00b4\u2032\uff07")
_SEPARATORS = frozenset(",<")

# One written form of a word: for each character of the source, the renderings allowed.
_Word = tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class NameComparison:
    """How names are brought to one written form before they are compared."""

    transliteration: Transliteration = "icao_9303"

    def __post_init__(self) -> None:
        if self.transliteration not in get_args(Transliteration):
            raise ValueError("unknown transliteration")


def normalise_name(value: str, rule: NameComparison) -> str:
    """``value`` in the written form ``rule`` names: upper-case words, one space apart."""
    return _spelled(word for word in _words(value, rule))


def names_match(claimed: Sequence[str], recorded: Sequence[str], rule: NameComparison) -> bool:
    """Whether two names, each a list of components, are the same once normalised.

    The components are joined with single spaces, so ``["MARIE", "ELISE"]`` matches
    ``["Marie-Élise"]``. Two names without any component match: a person may have no
    given name.
    """
    left = _spelled(word for part in claimed for word in _words(part, rule))
    right = _spelled(word for part in recorded for word in _words(part, rule))
    return hmac.compare_digest(left.encode(), right.encode())


def mrz_names_match(
    mrz_components: Sequence[str],
    recorded: Sequence[str],
    *,
    truncated: bool,
    rule: NameComparison,
) -> bool:
    """Whether a name read from an MRZ is the MRZ rendering of a recorded name.

    ``mrz_components`` are already transliterated (``A-Z``); each recorded character
    may render as any choice its table row offers, since the issuing State picked one
    (``MÜLLER`` is ``MUELLER``, ``MUXXLLER`` or ``MULLER``). When ``truncated`` (the MRZ
    name field was full), each MRZ word may be the start of its recorded word and later
    recorded words may be missing, which is how Doc 9303 Parts 4 to 6 truncate names;
    words never move.
    """
    mrz_words = normalise_name(" ".join(mrz_components), NameComparison("none")).split()
    recorded_words = [word for part in recorded for word in _words(part, rule)]
    if not mrz_words:
        return not recorded_words
    if len(mrz_words) > len(recorded_words) or (
        not truncated and len(mrz_words) != len(recorded_words)
    ):
        return False
    return all(
        _renders_as(mrz, word, prefix=truncated)
        for mrz, word in zip(mrz_words, recorded_words, strict=False)
    )


def _words(value: str, rule: NameComparison) -> list[_Word]:
    text = "".join(char for char in value if char not in _APOSTROPHES)
    text = unicodedata.normalize("NFKC", text)
    words: list[_Word] = []
    current: list[tuple[str, ...]] = []
    dropping_marks = False
    for char in text:
        category = unicodedata.category(char)
        if category.startswith("M") and dropping_marks:
            continue
        dropping_marks = True
        if char.isspace() or category == "Pd" or char in _SEPARATORS:
            if current:
                words.append(tuple(current))
            current = []
        elif char in _APOSTROPHES or category.startswith(("P", "C")):
            continue
        else:
            dropping_marks = False
            rendered = _render(char, rule.transliteration)
            if any(rendered):
                current.append(rendered)
    if current:
        words.append(tuple(current))
    return words


def _render(char: str, transliteration: Transliteration) -> tuple[str, ...]:
    """The renderings of one character, upper case, the preferred one first."""
    if transliteration == "none":
        return (char.upper(),)
    if transliteration == "latin_ascii":
        return (_table(char, LATIN_ASCII) or _without_marks(char, LATIN_ASCII),)
    found = ICAO_LATIN.get(char) or ICAO_LATIN.get(char.upper())
    if found:
        return found
    return (_table(char, ICAO_CYRILLIC) or _without_marks(char, ICAO_CYRILLIC),)


def _table(char: str, table: dict[str, str]) -> str | None:
    return table.get(char, table.get(char.upper()))


def _without_marks(char: str, table: dict[str, str]) -> str:
    """NFKD without combining marks or punctuation, each remaining letter looked up again."""
    parts = []
    for base in unicodedata.normalize("NFKD", char):
        if unicodedata.category(base).startswith(("M", "P")):
            continue
        found = _table(base, table)
        parts.append(found if found is not None else base.upper())
    return "".join(parts)


def _spelled(words: Iterable[_Word]) -> str:
    """The preferred rendering of ``words``; NFKC again, as upper-casing can decompose."""
    text = " ".join("".join(choices[0] for choices in word) for word in words)
    return unicodedata.normalize("NFKC", text)


def _renders_as(target: str, word: _Word, *, prefix: bool) -> bool:
    """Whether some choice of renderings spells ``target`` (or starts with it, if ``prefix``)."""
    reached = {0}
    for choices in word:
        following = set()
        for at in reached:
            rest = target[at:]
            for choice in choices:
                if rest.startswith(choice):
                    following.add(at + len(choice))
                elif prefix and rest and choice.startswith(rest):
                    return True
        if prefix and len(target) in following:
            return True
        reached = following
        if not reached:
            return False
    return len(target) in reached
