"""Languages, message catalogues and dates, as each officer reads them.

The catalogues are gettext ``.po`` files under ``console/locale`` (Babel reads them;
``pybabel extract`` refreshes the template from the pages and code). The language is
the officer's choice, else the browser's ``Accept-Language``, else English. Dates are
shown in the officer's time zone, with the UTC instant in the element's title.
"""

from __future__ import annotations

import functools
import io
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, negotiate_locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from markupsafe import Markup, escape

LANGUAGES = ("en", "fr")
DEFAULT_LANGUAGE = "en"
LANGUAGE_NAMES = {"en": "English", "fr": "Français"}
_LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "console"


@functools.cache
def translations(language: str) -> Translations:
    """The catalogue of ``language``; English is the source text itself."""
    po_file = _LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if language == DEFAULT_LANGUAGE or not po_file.exists():
        return Translations()
    with po_file.open("rb") as f:
        catalog = read_po(f, locale=language, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)


def is_time_zone(name: str) -> bool:
    """Whether ``name`` is an IANA time zone this machine knows (``Europe/Brussels``)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def choose_language(chosen: str | None, accept_language: str | None) -> str:
    if chosen in LANGUAGES:
        return chosen
    preferred = []
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().replace("-", "_")
        if tag:
            preferred.append(tag)
    match = negotiate_locale(preferred, list(LANGUAGES), sep="_")
    if match is None:
        # "fr_BE" asks for French too.
        for tag in preferred:
            base = tag.split("_")[0].lower()
            if base in LANGUAGES:
                return base
        return DEFAULT_LANGUAGE
    return match


def when(moment: datetime | None, language: str, zone: str) -> Markup:
    """A ``<time>`` element: the local time in words, the UTC instant on hover."""
    if moment is None:
        return Markup("—")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    utc = moment.astimezone(UTC)
    local = format_datetime(
        moment, format="medium", tzinfo=ZoneInfo(zone), locale=Locale.parse(language)
    )
    iso = utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Markup('<time datetime="{iso}" title="{title}">{local}</time>').format(
        iso=iso, title=f"{iso} UTC", local=escape(local)
    )
