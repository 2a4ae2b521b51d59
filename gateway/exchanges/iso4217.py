"""The active ISO 4217 currency codes in which a representation's costs may be claimed.

The codes come from ISO 4217 list one as published by the ISO 4217 maintenance agency,
carried by the ``iso4217`` package (:data:`PUBLISHED` is its data's date; a new release
of the package brings a new list, e.g. ``XCG`` for the Caribbean guilder since 2025,
and no ``BGN`` since Bulgaria adopted the euro on 2026-01-01). Only currencies a
consulate can be reimbursed in are kept: not the funds codes ISO marks as such (``BOV``,
``CLF``, ``USN`` ...), not the codes without minor units (precious metals such as
``XAU``, special drawing rights, bond-market units, the testing code ``XTS`` and "no
currency" ``XXX``), and not the units of account :data:`UNITS_OF_ACCOUNT` that ISO
lists with minor units but that no one pays in. Codes are upper case.
"""

from __future__ import annotations

from datetime import date

import iso4217

PUBLISHED: date = iso4217.__published__

UNITS_OF_ACCOUNT = frozenset(
    {
        "UYW",  # Unidad Previsional: an index unit of Uruguay, not marked as a fund by ISO
        "XAD",  # Arab Accounting Dinar: the Arab Monetary Fund's unit of account
    }
)


def _funds_codes() -> frozenset[str]:
    # The enum does not carry ISO's IsFund flag; the table it is parsed from does.
    return frozenset(
        code
        for entry in iso4217.raw_xml.iter("CcyNtry")
        if (name := entry.find("CcyNm")) is not None
        and name.get("IsFund") == "true"
        and (code := entry.findtext("Ccy"))
    )


_NOT_PAID_IN = _funds_codes() | UNITS_OF_ACCOUNT

CURRENCY_CODES: frozenset[str] = frozenset(
    currency.code
    for currency in iso4217.Currency
    if currency.exponent is not None and currency.code not in _NOT_PAID_IN
)


def is_currency_code(code: str) -> bool:
    return code in CURRENCY_CODES
