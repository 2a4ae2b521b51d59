"""Refresh the console's message catalogues from its pages and code.

    python scripts/console_messages.py          # rewrite console/locale/console.pot, merge fr
    python scripts/console_messages.py --check  # exit 1 if a message lacks a translation

Babel extracts every ``_()`` of ``console/templates`` and ``console/*.py`` into the
template; each language's ``.po`` keeps its translations and gains the new messages
empty, which ``--check`` (and a test) refuses.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "console" / "locale"
TEMPLATE = LOCALE / "console.pot"
LANGUAGES = ("fr",)


def catalogue(language: str) -> Path:
    return LOCALE / language / "LC_MESSAGES" / "console.po"


def untranslated(language: str) -> list[str]:
    with TEMPLATE.open("rb") as f:
        template = read_po(f)
    with catalogue(language).open("rb") as f:
        translated = read_po(f, locale=language)
    return [
        str(m.id)
        for m in template
        if m.id and not (translated.get(m.id) is not None and translated.get(m.id).string)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if not args.check:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "babel.messages.frontend",
                "extract",
                "-F",
                "console/babel.cfg",
                "-k",
                "_",
                "--no-location",
                "--omit-header",
                "-o",
                str(TEMPLATE),
                ".",
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        with TEMPLATE.open("rb") as f:
            template = read_po(f)
        for language in LANGUAGES:
            with catalogue(language).open("rb") as f:
                old = read_po(f, locale=language)
            old.update(template, no_fuzzy_matching=True)
            with catalogue(language).open("wb") as f:
                write_po(f, old, omit_header=True, no_location=True, ignore_obsolete=True)
    missing = {language: untranslated(language) for language in LANGUAGES}
    for language, ids in missing.items():
        for message in ids:
            print(f"{catalogue(language).relative_to(ROOT)}: no translation for {message!r}")
    return 1 if any(missing.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
