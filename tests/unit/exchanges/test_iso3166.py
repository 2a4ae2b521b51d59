"""The ISO 3166-1 tables: the alpha-3 map covers exactly the assigned alpha-2 codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.exchanges.iso3166 import ALPHA2_CODES, ALPHA3_TO_ALPHA2

_ISO_CODES = Path("/usr/share/iso-codes/json/iso_3166-1.json")


def test_alpha3_table_maps_one_to_one_onto_the_alpha2_codes() -> None:
    assert set(ALPHA3_TO_ALPHA2.values()) == ALPHA2_CODES
    assert len(ALPHA3_TO_ALPHA2) == len(ALPHA2_CODES) == 249


def test_alpha3_codes_are_three_upper_case_letters() -> None:
    assert all(re.fullmatch(r"[A-Z]{3}", code) for code in ALPHA3_TO_ALPHA2)


def test_mrz_only_codes_are_not_iso_codes() -> None:
    # Doc 9303 Part 3 §5 codes that ISO 3166-1 does not assign must not pass for countries.
    for code in ("UTO", "XXA", "XXB", "XXC", "XXX", "UNO", "UNA", "UNK", "EUE", "RKS", "GBD", "D"):
        assert code not in ALPHA3_TO_ALPHA2


@pytest.mark.skipif(not _ISO_CODES.is_file(), reason="no iso-codes data on this system")
def test_alpha3_table_agrees_with_the_debian_iso_codes_list() -> None:
    entries = json.loads(_ISO_CODES.read_text(encoding="utf-8"))["3166-1"]
    assert {e["alpha_3"]: e["alpha_2"] for e in entries} == ALPHA3_TO_ALPHA2
