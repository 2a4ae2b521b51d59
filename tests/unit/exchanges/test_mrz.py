"""ICAO 9303 machine-readable zones: the specimens parse, and every broken rule is named."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ValidationRejected
from gateway.exchanges.mrz import MachineReadableZone, check_digit, mrz_state_to_alpha2, parse_mrz
from tests.vectors import load_icao9303_specimens, load_vector

SPECIMENS = load_icao9303_specimens()
VARIANTS = [
    pytest.param(specimen, variant, id=f"{specimen['name']}: {variant['mutation']}")
    for specimen in SPECIMENS
    for variant in specimen["invalid"]
]
TODAY = date(2025, 1, 1)
TD3 = "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<\nL898902C36UTO7408122F1204159ZE184226B<<<<<10"


def reference_check_digit(data: str) -> int:
    """Doc 9303 Part 3 §4.9, written again here so the module is not checked against itself."""
    values = {c: i for i, c in enumerate("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")} | {"<": 0}
    return sum(values[c] * (7, 3, 1)[i % 3] for i, c in enumerate(data)) % 10


def rules_of(text: str, *, today: date = TODAY, field: str = "mrz") -> list[str]:
    with pytest.raises(ValidationRejected) as caught:
        parse_mrz(text, today=today, field=field)
    assert caught.value.reason == "MRZ_INVALID"
    return [v.rule for v in caught.value.violations]


def as_fields(mrz: MachineReadableZone) -> dict[str, Any]:
    fields = dataclasses.asdict(mrz)
    for name in ("date_of_birth", "date_of_expiry"):
        fields[name] = fields[name].isoformat()
    for name in ("primary_identifier", "secondary_identifier"):
        fields[name] = list(fields[name])
    return fields


def with_char(line: str, index: int, char: str) -> str:
    return line[:index] + char + line[index + 1 :]


@pytest.mark.parametrize("specimen", SPECIMENS, ids=lambda s: s["name"])
def test_published_specimen_parses_to_its_printed_fields(specimen: dict[str, Any]) -> None:
    today = date.fromisoformat(specimen["today"])
    mrz = parse_mrz("\n".join(specimen["lines"]), today=today)
    assert as_fields(mrz) == specimen["expected"]


@pytest.mark.parametrize("specimen", SPECIMENS, ids=lambda s: s["name"])
def test_specimen_check_digits_agree_with_an_independent_computation(
    specimen: dict[str, Any],
) -> None:
    lines = specimen["lines"]
    if specimen["format"] == "TD1":
        upper, middle = lines[0], lines[1]
        composite = upper[5:30] + middle[0:7] + middle[8:15] + middle[18:29]
        assert reference_check_digit(middle[0:6]) == int(middle[6])
        assert reference_check_digit(middle[8:14]) == int(middle[14])
        assert reference_check_digit(composite) == int(middle[29])
    else:
        lower = lines[1]
        end = 43 if specimen["format"] == "TD3" else 35
        composite = lower[0:10] + lower[13:20] + lower[21:end]
        assert reference_check_digit(lower[13:19]) == int(lower[19])
        assert reference_check_digit(lower[21:27]) == int(lower[27])
        assert reference_check_digit(composite) == int(lower[end])
        if specimen["format"] == "TD3":
            assert reference_check_digit(lower[28:42]) == int(lower[42])
    assert check_digit(composite) == reference_check_digit(composite)


@pytest.mark.parametrize(
    "example", load_vector("icao9303/check_digits")["check_digits"], ids=lambda e: e["example"]
)
def test_check_digit_reproduces_the_part_3_examples(example: dict[str, Any]) -> None:
    assert check_digit(example["data"]) == example["check_digit"]


@pytest.mark.parametrize(("specimen", "variant"), VARIANTS)
def test_mutated_specimen_is_refused_with_exactly_its_violations(
    specimen: dict[str, Any], variant: dict[str, Any]
) -> None:
    rules = rules_of("\n".join(variant["lines"]), today=date.fromisoformat(specimen["today"]))
    assert len(rules) == len(variant["violations"]), rules
    for fragment in variant["violations"]:
        assert any(fragment in rule for rule in rules), (fragment, rules)


@pytest.mark.parametrize(("specimen", "variant"), VARIANTS)
def test_error_never_quotes_the_mrz(specimen: dict[str, Any], variant: dict[str, Any]) -> None:
    expected = specimen["expected"]
    personal = [
        *expected["primary_identifier"],
        *expected["secondary_identifier"],
        expected["document_number"],
        expected["document_number"][:9],
        *(line for line in specimen["lines"]),
    ]
    personal += [
        d.replace("-", "")[2:] for d in (expected["date_of_birth"], expected["date_of_expiry"])
    ]
    if expected["optional_data"]:
        personal.append(expected["optional_data"])
    with pytest.raises(ValidationRejected) as caught:
        parse_mrz("\n".join(variant["lines"]), today=TODAY)
    for text in [caught.value.message, *(v.rule for v in caught.value.violations)]:
        for value in personal:
            assert value.upper() not in text.upper(), (value, text)


def test_violations_are_reported_under_the_callers_field() -> None:
    with pytest.raises(ValidationRejected) as caught:
        parse_mrz(TD3.replace("10", "11"), today=TODAY, field="claim.mrz")
    assert {v.field for v in caught.value.violations} == {"claim.mrz"}


def test_every_broken_rule_is_reported_not_just_the_first() -> None:
    upper, lower = TD3.split("\n")
    lower = with_char(with_char(lower, 9, "0"), 20, "Q")
    rules = rules_of(f"V{upper[1:]}\n{lower}")
    assert any("visa" in r for r in rules)
    assert any("document number is 0" in r for r in rules)
    assert any("the sex" in r for r in rules)
    assert any("composite" in r for r in rules)


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_a_trailing_newline_and_crlf_line_ends_are_tolerated(ending: str) -> None:
    text = TD3.replace("\n", ending) + ending
    assert parse_mrz(text, today=TODAY).document_number == "L898902C3"


@pytest.mark.parametrize(
    "text",
    [TD3 + "\n\n", " " + TD3, TD3 + " ", TD3.replace("\n", "\r"), TD3.replace("\n", "\n\n"), ""],
    ids=[
        "two trailing newlines",
        "leading space",
        "trailing space",
        "bare CR",
        "blank line",
        "empty",
    ],
)
def test_anything_but_the_lines_themselves_is_refused(text: str) -> None:
    assert rules_of(text)


def test_lower_case_is_refused_and_named() -> None:
    upper, lower = TD3.split("\n")
    rules = rules_of(f"{upper[:5]}eriksson{upper[13:]}\n{lower}")
    assert rules == [
        "line 1: 8 character(s) outside A-Z, 0-9 and the filler '<', the first at position 6; "
        "lower case is not allowed"
    ]


def test_td3_personal_number_check_digit_may_be_a_filler_when_the_number_is_empty() -> None:
    upper, lower = TD3.split("\n")
    lower = lower[:28] + "<" * 15
    lower += str(reference_check_digit(lower[0:10] + lower[13:20] + lower[21:43]))
    mrz = parse_mrz(f"{upper}\n{lower}", today=TODAY)
    assert mrz.optional_data == ""


def test_td3_filler_check_digit_beside_a_personal_number_is_refused() -> None:
    upper, lower = TD3.split("\n")
    lower = with_char(lower, 42, "<")
    lower = lower[:43] + str(reference_check_digit(lower[0:10] + lower[13:20] + lower[21:43]))
    assert rules_of(f"{upper}\n{lower}") == [
        "line 2: the check digit of the personal number is a filler, which only a personal "
        "number of fillers may have"
    ]


def test_td3_document_number_cannot_continue_into_the_personal_number() -> None:
    upper, lower = TD3.split("\n")
    rules = rules_of(f"{upper}\n{with_char(lower, 9, '<')}")
    assert "line 2: the check digit of the document number (position 10) is not a digit" in rules


def test_long_number_announced_without_continuation_is_refused() -> None:
    upper = "I<UTOD23145890<<<<<<<<<<<<<<<<"
    middle = "7408122F1204159UTO<<<<<<<<<<<"
    middle += str(reference_check_digit(upper[5:30] + middle[0:7] + middle[8:15] + middle[18:29]))
    rules = rules_of(f"{upper}\n{middle}\nERIKSSON<<ANNA<MARIA<<<<<<<<<<")
    assert len(rules) == 1
    assert "announces a long number" in rules[0]


def _td3_with_dates(birth: str, expiry: str) -> str:
    upper, lower = TD3.split("\n")
    lower = lower[:13] + birth + str(reference_check_digit(birth)) + lower[20]
    lower += expiry + str(reference_check_digit(expiry)) + "ZE184226B<<<<<1"
    lower += str(reference_check_digit(lower[0:10] + lower[13:20] + lower[21:43]))
    return f"{upper}\n{lower}"


@pytest.mark.parametrize(
    ("birth", "today", "expected"),
    [
        ("250101", date(2025, 1, 1), date(2025, 1, 1)),
        ("250102", date(2025, 1, 1), date(1925, 1, 2)),
        ("991231", date(2025, 1, 1), date(1999, 12, 31)),
        ("000229", date(2025, 1, 1), date(2000, 2, 29)),
    ],
)
def test_birth_century_is_the_latest_that_is_not_in_the_future(
    birth: str, today: date, expected: date
) -> None:
    mrz = parse_mrz(_td3_with_dates(birth, "301231"), today=today)
    assert mrz.date_of_birth == expected


@pytest.mark.parametrize(
    ("expiry", "expected"),
    [("750101", date(1975, 1, 1)), ("741231", date(2074, 12, 31)), ("350101", date(2035, 1, 1))],
)
def test_expiry_century_is_in_the_window_around_today(expiry: str, expected: date) -> None:
    mrz = parse_mrz(_td3_with_dates("500101", expiry), today=TODAY)
    assert mrz.date_of_expiry == expected


def test_february_29_of_a_common_year_is_refused() -> None:
    assert rules_of(_td3_with_dates("230229", "300101")) == [
        "line 2: the date of birth is not a calendar date"
    ]


def test_expiry_before_birth_is_refused() -> None:
    assert rules_of(_td3_with_dates("800101", "790101")) == [
        "line 2: the date of expiry is before the date of birth"
    ]


def test_unknown_date_of_birth_is_refused_as_not_comparable() -> None:
    rules = rules_of(_td3_with_dates("74<<<<", "300101"))
    assert rules == [
        "line 2: the date of birth is partly or wholly unknown (fillers); it cannot be compared"
    ]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (TD3.replace("P<UTO", "I<UTO", 1), "of a TD3 MRZ must start with P"),
        (
            "P<UTOD231458907<<<<<<<<<<<<<<<\n7408122F1204159UTO<<<<<<<<<<<6\n"
            "ERIKSSON<<ANNA<MARIA<<<<<<<<<<",
            "of a TD1 MRZ must start with I, A or C",
        ),
        (
            "IVUTOD231458907<<<<<<<<<<<<<<<\n7408122F1204159UTO<<<<<<<<<<<6\n"
            "ERIKSSON<<ANNA<MARIA<<<<<<<<<<",
            "of a card must not be V",
        ),
        (TD3.replace("P<UTO", "P<U1O", 1), "the issuing state (positions 3 to 5)"),
        (TD3.replace("ERIKSSON", "ERIKSS0N", 1), "the name field holds a digit"),
        (
            TD3.replace("P<UTOERIKSSON", "P<UTO<ERIKSSON", 1)[:44] + TD3[44:],
            "must start with the primary identifier",
        ),
    ],
)
def test_malformed_codes_and_names_are_refused(text: str, fragment: str) -> None:
    rules = rules_of(text)
    assert len(rules) == 1 and fragment in rules[0], rules


def test_full_name_field_is_flagged_as_possibly_truncated() -> None:
    # Doc 9303 Part 6, 4.2.3.3: a name that exactly fills the field must be assumed truncated.
    lines = load_vector("icao9303/td2_card")["lines"]
    upper = "I<UTOPAPANDROPOULOUS<<JONATHOON<ALEC"
    mrz = parse_mrz(f"{upper}\n{lines[1]}", today=TODAY)
    assert mrz.names_truncated
    assert mrz.primary_identifier == ("PAPANDROPOULOUS",)
    assert mrz.secondary_identifier == ("JONATHOON", "ALEC")
    assert not parse_mrz("\n".join(lines), today=TODAY).names_truncated


@pytest.mark.parametrize(
    ("code", "alpha2"),
    [
        ("DEU", "DE"),
        ("D<<", "DE"),
        ("D", "DE"),
        ("GBR", "GB"),
        ("UTO", None),
        ("XXA", None),
        ("gbr", None),
        ("GBD", None),
    ],
)
def test_mrz_state_codes_map_to_alpha2_codes(code: str, alpha2: str | None) -> None:
    assert mrz_state_to_alpha2(code) == alpha2


def test_repr_leaves_the_holders_data_out() -> None:
    shown = repr(parse_mrz(TD3, today=TODAY))
    assert "ERIKSSON" not in shown and "L898902C3" not in shown and "1974" not in shown


# --- properties: a test-side encoder, written from Doc 9303 Parts 4 to 6 -------------------

ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
WORD = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8)


@st.composite
def zones(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    fmt = draw(st.sampled_from(["TD1", "TD2", "TD3"]))
    width = {"TD1": 30, "TD2": 36, "TD3": 44}[fmt]
    code = draw(st.sampled_from(["P<", "PD"] if fmt == "TD3" else ["I<", "ID", "A<", "C<", "IR"]))
    state = draw(st.sampled_from(["UTO", "D<<", "FRA", "XXA"]))
    nationality = draw(st.sampled_from(["UTO", "D<<", "BEL"]))
    longest = {"TD1": 22, "TD2": 14, "TD3": 9}[fmt]
    number = draw(st.text(ALNUM, min_size=1, max_size=longest))
    birth = draw(st.dates(TODAY - timedelta(days=36000), TODAY))
    expiry = draw(st.dates(max(birth, date(1975, 1, 1)), date(2074, 12, 31)))
    sex = draw(st.sampled_from(["M", "F", "<"]))
    primary = draw(st.lists(WORD, min_size=1, max_size=3))
    secondary = draw(st.lists(WORD, max_size=3))
    name = "<".join(primary) + ("<<" + "<".join(secondary) if secondary else "")
    name_width = {"TD1": 30, "TD2": 31, "TD3": 39}[fmt]
    name = name[:name_width]
    if name.endswith("<"):
        name = name.rstrip("<")
    primary_read, _, secondary_read = name.partition("<<")
    optional_width = {"TD1": 15, "TD2": 7, "TD3": 14}[fmt]
    if len(number) > 9:
        head = number[:9] + "<"
        lead = number[9:] + str(reference_check_digit(number)) + "<"
    else:
        head = number.ljust(9, "<") + str(reference_check_digit(number.ljust(9, "<")))
        lead = ""
    data = draw(st.text(ALNUM, max_size=optional_width - len(lead)))
    optional = (lead + data).ljust(optional_width, "<")
    data_2 = draw(st.text(ALNUM, max_size=11)) if fmt == "TD1" else ""
    b, e = birth.strftime("%y%m%d"), expiry.strftime("%y%m%d")
    b += str(reference_check_digit(b))
    e += str(reference_check_digit(e))
    if fmt == "TD1":
        upper = code + state + head + optional
        middle = b + sex + e + nationality + data_2.ljust(11, "<")
        middle += str(
            reference_check_digit(upper[5:30] + middle[0:7] + middle[8:15] + middle[18:29])
        )
        lines = [upper, middle, name.ljust(30, "<")]
    else:
        upper = (code + state + name).ljust(width, "<")
        lower = head + nationality + b + sex + e + optional
        if fmt == "TD3":
            empty = not optional.strip("<")
            lower += (
                draw(st.sampled_from(["<", "0"])) if empty else str(reference_check_digit(optional))
            )
        lower += str(reference_check_digit(lower[0:10] + lower[13:20] + lower[21:]))
        lines = [upper, lower]
    expected = {
        "format": fmt,
        "document_code": code.rstrip("<"),
        "issuing_state": state.rstrip("<"),
        "document_number": number,
        "nationality": nationality.rstrip("<"),
        "date_of_birth": birth.isoformat(),
        "date_of_expiry": expiry.isoformat(),
        "sex": "X" if sex == "<" else sex,
        "primary_identifier": [p for p in primary_read.split("<") if p],
        "secondary_identifier": [s for s in secondary_read.split("<") if s],
        "optional_data": data,
        "optional_data_2": data_2,
        "names_truncated": len(name) == name_width,
    }
    return "\n".join(lines), expected


def covered_positions(fmt: str) -> list[tuple[int, int]]:
    """Every (line, index) that a check digit covers, check digits included."""
    if fmt == "TD1":
        return [(0, i) for i in range(5, 30)] + [
            (1, i) for i in range(30) if not 15 <= i < 18 and i != 7
        ]
    return [(1, i) for i in range(36 if fmt == "TD2" else 44) if not 10 <= i < 13 and i != 20]


@settings(max_examples=300)
@given(zones())
def test_any_encoded_zone_parses_back_to_its_fields(zone: tuple[str, dict[str, Any]]) -> None:
    text, expected = zone
    assert as_fields(parse_mrz(text, today=TODAY)) == expected


@settings(max_examples=300)
@given(zones(), st.data())
def test_changing_any_digit_a_check_digit_covers_is_refused(
    zone: tuple[str, dict[str, Any]], data: st.DataObject
) -> None:
    text, expected = zone
    lines = text.split("\n")
    digits = [(li, i) for li, i in covered_positions(expected["format"]) if lines[li][i].isdigit()]
    line, index = data.draw(st.sampled_from(digits))
    new = data.draw(st.sampled_from([d for d in "0123456789" if d != lines[line][index]]))
    lines[line] = with_char(lines[line], index, new)
    assert rules_of("\n".join(lines))
