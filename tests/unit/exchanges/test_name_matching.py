"""Names are compared in one written form, so only the answer, match or not, leaves the gateway."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.exchanges.name_matching import (
    NameComparison,
    Transliteration,
    mrz_names_match,
    names_match,
    normalise_name,
)
from gateway.exchanges.transliteration import ICAO_CYRILLIC, ICAO_LATIN

ICAO = NameComparison()
ASCII = NameComparison("latin_ascii")
NONE = NameComparison("none")
RULES: list[Transliteration] = ["none", "latin_ascii", "icao_9303"]


def test_icao_9303_is_the_default_rule() -> None:
    assert NameComparison().transliteration == "icao_9303"


def test_an_unknown_transliteration_is_refused_when_the_rule_is_built() -> None:
    with pytest.raises(ValueError, match="unknown transliteration"):
        NameComparison("klingon")  # type: ignore[arg-type]


@pytest.mark.parametrize("apostrophe", ["'", "\u2019", "\u02bc", "\u00b4", "`", "\uff07"])
def test_an_apostrophe_is_removed_and_joins_the_name(apostrophe: str) -> None:
    # Doc 9303 Part 3 §4.6: D'ARTAGNAN is written DARTAGNAN.
    assert normalise_name(f"d{apostrophe}Artagnan", ICAO) == "DARTAGNAN"


@pytest.mark.parametrize(
    ("value", "normalised"),
    [
        ("Marie-Elise", "MARIE ELISE"),  # §4.6: a hyphen separates components
        ("Marie\u2010Elise", "MARIE ELISE"),
        ("Anna, Maria", "ANNA MARIA"),  # §4.6: a comma separates components
        ("St. John", "ST JOHN"),  # §4.6: other punctuation is omitted
        ("J.R.", "JR"),
        ("  Anna \t\u00a0 Maria  ", "ANNA MARIA"),
        ("ANNA<MARIA", "ANNA MARIA"),
        ("Anna (Maria)", "ANNA MARIA"),
    ],
)
def test_separators_become_one_space_and_other_punctuation_goes(
    value: str, normalised: str
) -> None:
    for rule in RULES:
        assert normalise_name(value, NameComparison(rule)) == normalised


@pytest.mark.parametrize(
    ("value", "normalised"),
    [
        ("Ä", "AE"), ("Å", "AA"), ("Æ", "AE"), ("Ð", "D"), ("Ñ", "N"), ("Ø", "OE"),
        ("Ö", "OE"), ("Ü", "UE"), ("ß", "SS"), ("ẞ", "SS"), ("Þ", "TH"), ("Ĳ", "IJ"),
        ("Œ", "OE"), ("ı", "I"), ("İ", "I"), ("Ł", "L"), ("Đ", "D"), ("Ŀ", "L"),
        ("Göße", "GOESSE"), ("Hämäläinen", "HAEMAELAEINEN"),
    ],
)  # fmt: skip
def test_icao_rule_follows_the_doc_9303_latin_table(value: str, normalised: str) -> None:
    assert normalise_name(value, ICAO) == normalised


@pytest.mark.parametrize("letter", sorted(ICAO_LATIN))
def test_every_latin_table_row_applies_to_both_cases_and_to_decomposed_input(letter: str) -> None:
    expected = ICAO_LATIN[letter][0]
    assert normalise_name(letter, ICAO) == expected
    if len(letter.lower()) == 1 and letter.lower() != letter:
        assert normalise_name(letter.lower(), ICAO) == expected
    assert normalise_name(unicodedata.normalize("NFD", letter), ICAO) == expected


@pytest.mark.parametrize("letter", sorted(ICAO_CYRILLIC))
def test_every_cyrillic_table_row_applies_to_both_cases(letter: str) -> None:
    expected = ICAO_CYRILLIC[letter]
    assert normalise_name(f"A{letter}", ICAO) == f"A{expected}"
    assert normalise_name(f"A{letter.lower()}", ICAO) == f"A{expected}"


@pytest.mark.parametrize(
    ("value", "normalised"),
    [("Щукин", "SHCHUKIN"), ("Юлия", "IULIIA"), ("Пётр", "PETR"), ("Ольга", "OLGA")],
)
def test_icao_rule_transliterates_cyrillic_by_the_general_rule(value: str, normalised: str) -> None:
    assert normalise_name(value, ICAO) == normalised


@pytest.mark.parametrize(("value", "normalised"), [("Ǎ", "A"), ("Ș", "S"), ("Ǖ", "U")])
def test_a_latin_letter_the_table_omits_loses_its_diacritics(value: str, normalised: str) -> None:
    assert normalise_name(value, ICAO) == normalised


def test_a_script_no_table_covers_is_kept_in_upper_case() -> None:
    assert normalise_name("Σοφία", ICAO) == "ΣΟΦΙΑ"
    assert normalise_name("Əliyev", ICAO) == "ƏLIYEV"


@pytest.mark.parametrize(
    ("value", "normalised"),
    [
        ("Øre", "ORE"), ("Æsir", "AESIR"), ("Łódź", "LODZ"), ("Müller", "MULLER"),
        ("Straße", "STRASSE"), ("Þór", "THOR"), ("Œuvre", "OEUVRE"), ("Ðuro", "DURO"),
    ],
)  # fmt: skip
def test_latin_ascii_rule_drops_diacritics_and_spells_out_ligatures(
    value: str, normalised: str
) -> None:
    assert normalise_name(value, ASCII) == normalised


def test_none_rule_keeps_letters_and_only_folds_case_form_and_separators() -> None:
    assert normalise_name("Müller-Lüdenscheidt", NONE) == "MÜLLER LÜDENSCHEIDT"
    assert normalise_name("Mu\u0308ller", NONE) == normalise_name("Müller", NONE)
    assert normalise_name("ＡＮＮＡ", NONE) == "ANNA"


def test_claimed_components_match_the_recorded_name_they_spell() -> None:
    assert names_match(["Marie", "Elise"], ["Marie-Élise"], ICAO)
    assert names_match(["MUELLER"], ["Müller"], ICAO)
    assert not names_match(["MULLER"], ["Müller"], ICAO)
    assert names_match(["MULLER"], ["Müller"], ASCII)


def test_a_different_name_or_order_does_not_match() -> None:
    assert not names_match(["Maria"], ["Marie"], ICAO)
    assert not names_match(["Anna", "Maria"], ["Maria", "Anna"], ICAO)
    assert not names_match(["Anna"], ["Anna", "Maria"], ICAO)


def test_two_names_without_components_match_and_empty_never_matches_a_name() -> None:
    assert names_match([], [], ICAO)
    assert names_match([" "], [], ICAO)
    assert not names_match([], ["Anna"], ICAO)


@pytest.mark.parametrize("written", ["CANXXON", "CANON"])
def test_mrz_name_may_use_any_choice_the_table_offers(written: str) -> None:
    # Doc 9303 Part 3 Appendix B.4.1: CAÑON may be written CANXXON.
    assert mrz_names_match([written], ["Cañon"], truncated=False, rule=ICAO)


@pytest.mark.parametrize(
    ("written", "matches"),
    [("MUELLER", True), ("MUXXLLER", True), ("MULLER", True), ("MUEXXLLER", False)],
)
def test_mrz_choices_are_per_character_and_only_the_tables(written: str, matches: bool) -> None:
    assert mrz_names_match([written], ["Müller"], truncated=False, rule=ICAO) is matches


@pytest.mark.parametrize(
    ("mrz", "recorded"),
    [  # Doc 9303 Part 6 §4.2.3: the truncation examples, primary and secondary identifiers
        ("DEJ<K", "Dejthamrong Krasuang"),
        ("ARN<PET<CHARO", "Arnpol Petch Charonguang"),
        ("BENNELONG<WOOLOOMOOLOO<W<W", "Bennelong Wooloomooloo Warrandyte Warnambool"),
        ("BENNELONG<WOOLOOM<WAR<WARN", "Bennelong Wooloomooloo Warrandyte Warnambool"),
        ("BENNEL<WOOLO<WARRA<WARNA", "Bennelong Wooloomooloo Warrandyte Warnambool"),
        ("DIN<P", "Dingo Potoroo"),
        ("CHAYAPA", "Chayapa Dejthamrong Krasuang"),
    ],
)
def test_truncated_mrz_name_matches_the_recorded_name_it_starts(mrz: str, recorded: str) -> None:
    assert mrz_names_match(mrz.split("<"), [recorded], truncated=True, rule=ICAO)
    assert not mrz_names_match(mrz.split("<"), [recorded], truncated=False, rule=ICAO)


def test_truncated_mrz_name_must_still_start_each_recorded_word() -> None:
    recorded = ["Bennelong Wooloomooloo"]
    assert not mrz_names_match(["BENNELONG", "WX"], recorded, truncated=True, rule=ICAO)
    assert not mrz_names_match(["BENNELONG", "W", "W"], recorded, truncated=True, rule=ICAO)
    assert not mrz_names_match(["WOOLOOMOOLOO"], recorded, truncated=True, rule=ICAO)


def test_truncation_may_stop_inside_a_transliterated_letter() -> None:
    assert mrz_names_match(["MU"], ["Müller"], truncated=True, rule=ICAO)


def test_an_empty_mrz_identifier_matches_only_an_empty_recorded_one() -> None:
    assert mrz_names_match([], [], truncated=True, rule=ICAO)
    assert not mrz_names_match([], ["Anna"], truncated=True, rule=ICAO)


def test_specimen_names_match_their_registry_spelling() -> None:
    assert mrz_names_match(["ERIKSSON"], ["Eriksson"], truncated=False, rule=ICAO)
    assert mrz_names_match(["ANNA", "MARIA"], ["Anna", "Maria"], truncated=False, rule=ICAO)
    assert mrz_names_match(["ANNA", "MARIA"], ["Anna Maria"], truncated=False, rule=ICAO)


# --- properties ------------------------------------------------------------------------------

names = st.text(max_size=40)
rules = st.sampled_from(RULES).map(NameComparison)
latin_words = st.lists(
    st.text("abcdefghijklmnopqrstuvwxyzäåæñöøüßþéèçłœ", min_size=1, max_size=10),
    min_size=1,
    max_size=4,
)


@given(names, rules)
def test_normalise_name_is_idempotent(value: str, rule: NameComparison) -> None:
    once = normalise_name(value, rule)
    assert normalise_name(once, rule) == once


@given(st.lists(names, max_size=3), st.lists(names, max_size=3), rules)
def test_names_match_is_symmetric_and_reflexive(
    left: list[str], right: list[str], rule: NameComparison
) -> None:
    assert names_match(left, right, rule) == names_match(right, left, rule)
    assert names_match(left, left, rule)


@given(latin_words)
def test_the_icao_rendering_of_a_latin_name_matches_it_as_an_mrz_name(words: list[str]) -> None:
    written = normalise_name(" ".join(words), ICAO).split()
    assert mrz_names_match(written, words, truncated=False, rule=ICAO)
    cut = [word[: max(1, len(word) // 2)] for word in written]
    assert mrz_names_match(cut[:-1] or cut, words, truncated=True, rule=ICAO)
