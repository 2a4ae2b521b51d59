"""Costs are claimed only in currencies of ISO 4217 list one as currently published."""

from __future__ import annotations

from datetime import date

import iso4217
import pytest

from gateway.exchanges.iso4217 import CURRENCY_CODES, PUBLISHED, is_currency_code


def test_table_is_the_published_list_from_2026_or_later() -> None:
    assert date(2026, 1, 1) <= PUBLISHED == iso4217.__published__


def test_every_code_is_a_currency_of_the_published_list() -> None:
    published = {c.code for c in iso4217.Currency}
    assert CURRENCY_CODES.issubset(published)
    assert {"EUR", "USD", "CHF", "JPY", "CVE", "VED"} <= CURRENCY_CODES


def test_caribbean_guilder_in_circulation_since_2025_is_accepted() -> None:
    assert is_currency_code("XCG")


@pytest.mark.parametrize(
    "withdrawn",
    [
        "BGN",  # Bulgaria adopted the euro on 2026-01-01
        "ANG",  # replaced by the Caribbean guilder
        "HRK",  # Croatia adopted the euro in 2023
    ],
)
def test_withdrawn_currency_is_refused(withdrawn: str) -> None:
    assert not is_currency_code(withdrawn)


@pytest.mark.parametrize(
    "not_money",
    [
        "BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN", "UYI",  # funds codes
        "UYW", "XAD",  # units of account
        "XAU", "XAG", "XPD", "XPT",  # precious metals
        "XDR", "XSU", "XUA", "XBA",  # drawing rights, bond-market units
        "XTS", "XXX",  # testing, no currency
    ],
)  # fmt: skip
def test_code_no_one_is_reimbursed_in_is_refused(not_money: str) -> None:
    assert not is_currency_code(not_money)


def test_lower_case_code_is_refused() -> None:
    assert is_currency_code("EUR")
    assert not is_currency_code("eur")
