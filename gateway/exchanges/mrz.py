"""Machine-readable zones of identity documents (ICAO Doc 9303), read and checked.

:func:`parse_mrz` reads the MRZ of a passport (TD3, 2 lines of 44 characters, Doc 9303
Part 4) or of an identity card (TD1, 3 × 30, Part 5; TD2, 2 × 36, Part 6) and returns a
:class:`MachineReadableZone`, or raises one :class:`~gateway.errors.ValidationRejected`
(reason ``MRZ_INVALID``) that lists **every** rule the zone breaks. It guarantees:

* the text is exactly the lines of one of the three formats, joined by ``"\\n"`` (a
  trailing newline and ``"\\r\\n"`` line ends are tolerated), of ``A-Z``, ``0-9`` and the
  filler ``<`` only; a zone of any other shape, or with any other character (lower case
  included), is refused on that ground alone, because no field of it can be located;
* every check digit is verified with the Doc 9303 Part 3 §4.9 method (weights 7, 3, 1;
  ``<`` = 0, ``A`` = 10 … ``Z`` = 35): document number, date of birth, date of expiry,
  the TD3 personal number (whose check digit may be ``<`` when the number is all
  fillers) and the composite check digit over the ranges of each format;
* a TD1 or TD2 document number longer than nine characters is reassembled: its check
  digit position holds ``<``, and the optional data field starts with the remaining
  characters followed by the check digit over the whole number (Parts 5 and 6, note j);
* dates are calendar dates. The MRZ prints two-digit years, so the century is chosen:
  a date of birth is the latest such date not after ``today`` (so it is never in the
  future, and a holder aged 100 or more is read as a century younger: the MRZ cannot
  say otherwise); a date of expiry is the year in the window from 50 years before to
  49 years after ``today``'s year. An expired document is *not* refused here: whether it
  is still valid is the registry's answer, not a property of the zone. A date of birth
  with fillers (Part 3 §4.8: all or part unknown) is refused, since it cannot be
  compared;
* the document code is ``P…`` for a TD3 passport and ``I``, ``A`` or ``C`` for a TD1 or
  TD2 card (whose second character may not be ``V``). Visas (``V``; Part 7, whose two
  formats have the TD3 and TD2 shapes) are refused: they do not establish identity;
* sex is ``M``, ``F`` or ``<`` (unspecified, returned as ``X``);
* no violation quotes the zone: rules name lines, positions and fields, and only the
  digits of a check digit and of what the data gives. The names, numbers and dates of
  the holder are personal data; the result's ``repr`` leaves them out as well.

Names in an MRZ are transliterated and may be truncated (Part 3 §4.6; Parts 4 to 6
describe how): :attr:`MachineReadableZone.names_truncated` is true when the name field
is completely filled, which is how the standard marks a name that may have been cut.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Literal

from gateway.errors import FieldViolation, ValidationRejected
from gateway.exchanges.iso3166 import ALPHA3_TO_ALPHA2

MrzFormat = Literal["TD1", "TD2", "TD3"]
Sex = Literal["F", "M", "X"]

FILLER = "<"
REASON = "MRZ_INVALID"
_WEIGHTS = (7, 3, 1)
_SHAPES: dict[tuple[int, ...], MrzFormat] = {
    (30, 30, 30): "TD1",
    (36, 36): "TD2",
    (44, 44): "TD3",
}
_STATE_CODE = re.compile(r"[A-Z]{1,3}<*")
# A-Z, 0-9 and '<' by code point: str.isalpha() and str.isdigit() accept far more.
_MRZ_CHARACTER = re.compile(r"[A-Z0-9<]")


def check_digit(data: str) -> int:
    """The Doc 9303 Part 3 §4.9 check digit of ``data`` (``A-Z``, ``0-9`` and ``<`` only)."""
    total = 0
    for index, char in enumerate(data):
        if char == FILLER:
            value = 0
        elif "0" <= char <= "9":
            value = ord(char) - ord("0")
        elif "A" <= char <= "Z":
            value = ord(char) - ord("A") + 10
        else:
            raise ValueError(f"position {index + 1} is not an MRZ character")
        total += value * _WEIGHTS[index % 3]
    return total % 10


def mrz_state_to_alpha2(code: str) -> str | None:
    """The ISO 3166-1 alpha-2 code of an MRZ state code, or None when it names no country.

    ``code`` is the three-letter code as printed, with or without its fillers. The
    Doc 9303 Part 3 §5 codes that are not ISO 3166-1 alpha-3 codes map to None (``UTO``,
    the specimen state Utopia; ``XXA``, stateless; ``UNO``; ``EUE``...), except ``D``,
    which Germany prints instead of ``DEU``.
    """
    bare = code.rstrip(FILLER)
    if bare == "D":
        return "DE"
    return ALPHA3_TO_ALPHA2.get(bare)


@dataclass(frozen=True, repr=False)
class MachineReadableZone:
    """An MRZ whose structure, check digits, dates and codes are all valid."""

    format: MrzFormat
    document_code: str
    """The document code with fillers stripped: ``P``, ``I``, ``ID``, ``AC``..."""
    issuing_state: str
    """The issuing state's code as printed, fillers stripped (``UTO``, ``D``)."""
    document_number: str
    """Fillers stripped; a long TD1/TD2 number is reassembled from the optional data."""
    nationality: str
    date_of_birth: date
    date_of_expiry: date
    sex: Sex
    primary_identifier: tuple[str, ...]
    """The components of the primary identifier (family names), as printed."""
    secondary_identifier: tuple[str, ...]
    """The components of the secondary identifier (given names), as printed."""
    optional_data: str
    """The optional data field (TD1 line 1, TD2 line 2) or the TD3 personal number,
    fillers stripped at both ends, without the continuation of a long document number."""
    optional_data_2: str
    """The second optional data field of a TD1 (line 2), fillers stripped; empty otherwise."""
    names_truncated: bool
    """The name field is completely filled, so the names may have been truncated."""

    def __repr__(self) -> str:
        # Everything but the format and the document code is personal data.
        return f"MachineReadableZone(format={self.format!r}, document_code={self.document_code!r})"


@dataclass(frozen=True)
class _Span:
    """Characters ``start`` to ``end`` (0-based, end excluded) of line ``line`` (0-based)."""

    line: int
    start: int
    end: int

    def read(self, lines: list[str]) -> str:
        return lines[self.line][self.start : self.end]


@dataclass(frozen=True)
class _Layout:
    """Where each field of one format is; Doc 9303 Parts 4, 5 and 6, section 4.2."""

    code: _Span
    state: _Span
    name: _Span
    number: _Span
    number_check: _Span
    nationality: _Span
    birth: _Span
    birth_check: _Span
    sex: _Span
    expiry: _Span
    expiry_check: _Span
    optional: _Span
    optional_check: _Span | None
    optional_2: _Span | None
    composite: tuple[_Span, ...]
    composite_check: _Span
    long_numbers: bool


def _upper_and_lower(name_end: int, optional_end: int, personal_check: bool) -> _Layout:
    """TD2 and TD3, which differ only in the lengths of the name and optional data."""
    composite_end = optional_end + (1 if personal_check else 0)
    return _Layout(
        code=_Span(0, 0, 2),
        state=_Span(0, 2, 5),
        name=_Span(0, 5, name_end),
        number=_Span(1, 0, 9),
        number_check=_Span(1, 9, 10),
        nationality=_Span(1, 10, 13),
        birth=_Span(1, 13, 19),
        birth_check=_Span(1, 19, 20),
        sex=_Span(1, 20, 21),
        expiry=_Span(1, 21, 27),
        expiry_check=_Span(1, 27, 28),
        optional=_Span(1, 28, optional_end),
        optional_check=_Span(1, optional_end, optional_end + 1) if personal_check else None,
        optional_2=None,
        composite=(_Span(1, 0, 10), _Span(1, 13, 20), _Span(1, 21, composite_end)),
        composite_check=_Span(1, composite_end, composite_end + 1),
        # Only the card formats continue a long number into the optional data.
        long_numbers=not personal_check,
    )


_LAYOUTS: dict[MrzFormat, _Layout] = {
    "TD1": _Layout(
        code=_Span(0, 0, 2),
        state=_Span(0, 2, 5),
        number=_Span(0, 5, 14),
        number_check=_Span(0, 14, 15),
        optional=_Span(0, 15, 30),
        birth=_Span(1, 0, 6),
        birth_check=_Span(1, 6, 7),
        sex=_Span(1, 7, 8),
        expiry=_Span(1, 8, 14),
        expiry_check=_Span(1, 14, 15),
        nationality=_Span(1, 15, 18),
        optional_2=_Span(1, 18, 29),
        optional_check=None,
        composite=(_Span(0, 5, 30), _Span(1, 0, 7), _Span(1, 8, 15), _Span(1, 18, 29)),
        composite_check=_Span(1, 29, 30),
        name=_Span(2, 0, 30),
        long_numbers=True,
    ),
    "TD2": _upper_and_lower(name_end=36, optional_end=35, personal_check=False),
    "TD3": _upper_and_lower(name_end=44, optional_end=42, personal_check=True),
}


class _Reading:
    """The lines of one zone and the violations found in them so far."""

    def __init__(self, lines: list[str], layout: _Layout) -> None:
        self.lines = lines
        self.layout = layout
        self.problems: list[str] = []

    def read(self, span: _Span) -> str:
        return span.read(self.lines)

    def fail(self, span: _Span, rule: str) -> None:
        self.problems.append(f"line {span.line + 1}: {rule}")

    def verify(self, data: str, check: _Span, what: str, source: str) -> None:
        """Compare the check digit at ``check`` with the one ``data`` gives."""
        self.verify_char(data, self.read(check), check, what, source)

    def verify_char(self, data: str, printed: str, at: _Span, what: str, source: str) -> None:
        expected = check_digit(data)
        if not printed.isascii() or not printed.isdigit():
            self.fail(at, f"the check digit of {what} (position {at.start + 1}) is not a digit")
        elif int(printed) != expected:
            self.fail(at, f"the check digit of {what} is {printed}, {source} {expected}")


def _split(text: str) -> tuple[list[str], list[str]]:
    """The zone's lines, and what is wrong with its shape or characters."""
    body = text.replace("\r\n", "\n")
    body = body.removesuffix("\n")
    lines = body.split("\n")
    lengths = tuple(len(line) for line in lines)
    if lengths not in _SHAPES:
        counted = ", ".join(str(n) for n in lengths[:4]) + (", ..." if len(lengths) > 4 else "")
        return lines, [
            f"the MRZ has {len(lines)} line(s) of {counted} characters; it must be 3 lines "
            "of 30 (TD1), 2 lines of 36 (TD2) or 2 lines of 44 (TD3)"
        ]
    problems = []
    for number, line in enumerate(lines, start=1):
        bad = [i for i, char in enumerate(line) if not _MRZ_CHARACTER.fullmatch(char)]
        if bad:
            lower = "; lower case is not allowed" if any(line[i].islower() for i in bad) else ""
            problems.append(
                f"line {number}: {len(bad)} character(s) outside A-Z, 0-9 and the filler '<', "
                f"the first at position {bad[0] + 1}{lower}"
            )
    return lines, problems


def parse_mrz(text: str, *, today: date, field: str = "mrz") -> MachineReadableZone:
    """Read and check the MRZ ``text``; raise ValidationRejected naming every broken rule.

    ``field`` is the path every violation is reported under (the gateway passes
    ``claim.mrz``); ``today`` resolves the centuries of the two-digit years.
    """
    lines, problems = _split(text)
    if problems:
        raise ValidationRejected([FieldViolation(field, p) for p in problems], reason=REASON)
    mrz_format = _SHAPES[tuple(len(line) for line in lines)]
    reading = _Reading(lines, _LAYOUTS[mrz_format])
    layout = reading.layout

    document_code = _document_code(reading, mrz_format)
    issuing_state = _state_code(reading, layout.state, "the issuing state")
    document_number, optional_rest = _document_number(reading)
    reading.verify(
        reading.read(layout.birth), layout.birth_check, "the date of birth", "the date gives"
    )
    birth = _read_date(reading, layout.birth, "the date of birth", _birth_year(today))
    sex = _sex(reading)
    reading.verify(
        reading.read(layout.expiry), layout.expiry_check, "the date of expiry", "the date gives"
    )
    expiry = _read_date(reading, layout.expiry, "the date of expiry", _expiry_year(today))
    if birth is not None and expiry is not None and expiry < birth:
        reading.fail(layout.expiry, "the date of expiry is before the date of birth")
    nationality = _state_code(reading, layout.nationality, "the nationality")
    if layout.optional_check is not None:
        _personal_number(reading, layout.optional, layout.optional_check)
    reading.verify(
        "".join(reading.read(span) for span in layout.composite),
        layout.composite_check,
        "the composite",
        "the fields it covers give",
    )
    primary, secondary, truncated = _names(reading)

    if reading.problems or birth is None or expiry is None or sex is None:
        raise ValidationRejected(
            [FieldViolation(field, p) for p in reading.problems], reason=REASON
        )
    return MachineReadableZone(
        format=mrz_format,
        document_code=document_code,
        issuing_state=issuing_state,
        document_number=document_number,
        nationality=nationality,
        date_of_birth=birth,
        date_of_expiry=expiry,
        sex=sex,
        primary_identifier=primary,
        secondary_identifier=secondary,
        optional_data=optional_rest.strip(FILLER),
        optional_data_2=reading.read(layout.optional_2).strip(FILLER) if layout.optional_2 else "",
        names_truncated=truncated,
    )


def _document_code(reading: _Reading, mrz_format: MrzFormat) -> str:
    span = reading.layout.code
    code = reading.read(span)
    kind, variant = code[0], code[1]
    if kind == "V":
        reading.fail(span, "the document code V names a visa, which is not an identity document")
    elif mrz_format == "TD3" and kind != "P":
        reading.fail(span, "the document code of a TD3 MRZ must start with P (passport)")
    elif mrz_format != "TD3" and kind not in "IAC":
        reading.fail(span, f"the document code of a {mrz_format} MRZ must start with I, A or C")
    if variant.isdigit():
        reading.fail(span, "the second character of the document code must be a letter or '<'")
    elif mrz_format != "TD3" and variant == "V":
        reading.fail(span, "the second character of the document code of a card must not be V")
    return code.rstrip(FILLER)


def _state_code(reading: _Reading, span: _Span, what: str) -> str:
    code = reading.read(span)
    if not _STATE_CODE.fullmatch(code):
        reading.fail(
            span,
            f"{what} (positions {span.start + 1} to {span.end}) must be a code of letters "
            "completed with fillers",
        )
    return code.rstrip(FILLER)


def _document_number(reading: _Reading) -> tuple[str, str]:
    """The document number, and the optional data that follows its continuation, if any."""
    layout = reading.layout
    printed = reading.read(layout.number)
    optional = reading.read(layout.optional)
    number_check = reading.read(layout.number_check)
    where = layout.number_check.start + 1
    if number_check == FILLER and layout.long_numbers:
        continuation = optional.split(FILLER, 1)[0]
        if len(continuation) < 2:
            reading.fail(
                layout.number_check,
                f"the check digit of the document number (position {where}) is a filler, which "
                "announces a long number, but the optional data holds no continuation and "
                "check digit",
            )
            return printed.rstrip(FILLER), optional
        if FILLER in printed:
            reading.fail(
                layout.number,
                "a long document number must fill the nine positions of the document number",
            )
        number = printed + continuation[:-1]
        check_at = layout.optional.start + len(continuation) - 1
        reading.verify_char(
            number,
            continuation[-1],
            _Span(layout.optional.line, check_at, check_at + 1),
            "the long document number",
            "the number gives",
        )
        return number, optional[len(continuation) :]
    reading.verify(printed, layout.number_check, "the document number", "the number gives")
    number = printed.rstrip(FILLER)
    if not number:
        reading.fail(layout.number, "the document number is empty")
    return number, optional


def _personal_number(reading: _Reading, span: _Span, check: _Span) -> None:
    printed = reading.read(span)
    if reading.read(check) == FILLER:
        if printed.strip(FILLER):
            reading.fail(
                check,
                "the check digit of the personal number is a filler, which only a personal "
                "number of fillers may have",
            )
        return
    reading.verify(printed, check, "the personal number", "the number gives")


def _read_date(
    reading: _Reading, span: _Span, what: str, year_of: Callable[[int, int, int], int]
) -> date | None:
    """The date at ``span``, its century chosen by ``year_of(yy, month, day)``."""
    raw = reading.read(span)
    if FILLER in raw:
        reading.fail(span, f"{what} is partly or wholly unknown (fillers); it cannot be compared")
        return None
    if not raw.isdigit():
        reading.fail(span, f"{what} holds a letter; a date is six digits, YYMMDD")
        return None
    yy, month, day = int(raw[:2]), int(raw[2:4]), int(raw[4:6])
    try:
        return date(year_of(yy, month, day), month, day)
    except ValueError:
        reading.fail(span, f"{what} is not a calendar date")
        return None


def _birth_year(today: date) -> Callable[[int, int, int], int]:
    """The latest year ending in ``yy`` that puts the date on or before ``today``."""

    def year_of(yy: int, month: int, day: int) -> int:
        year = today.year - (today.year - yy) % 100
        return year - 100 if (year, month, day) > (today.year, today.month, today.day) else year

    return year_of


def _expiry_year(today: date) -> Callable[[int, int, int], int]:
    """The year ending in ``yy`` from 50 years before to 49 years after ``today``'s year."""

    def year_of(yy: int, month: int, day: int) -> int:
        earliest = today.year - 50
        return earliest + (yy - earliest) % 100

    return year_of


def _sex(reading: _Reading) -> Sex | None:
    span = reading.layout.sex
    printed = reading.read(span)
    if printed == "M":
        return "M"
    if printed == "F":
        return "F"
    if printed == FILLER:
        return "X"
    reading.fail(span, f"the sex (position {span.start + 1}) must be M, F or '<'")
    return None


def _names(reading: _Reading) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    span = reading.layout.name
    printed = reading.read(span)
    if printed.startswith(FILLER):
        reading.fail(span, "the name field must start with the primary identifier")
    if any(char.isdigit() for char in printed):
        reading.fail(span, "the name field holds a digit; names are letters and fillers only")
    primary, _, secondary = printed.partition(FILLER * 2)
    return (
        tuple(part for part in primary.split(FILLER) if part),
        tuple(part for part in secondary.split(FILLER) if part),
        not printed.endswith(FILLER),
    )
