"""Refresh the console's message catalogues from its pages and code.

    python scripts/console_messages.py          # rewrite console/locale/console.pot, merge fr
    python scripts/console_messages.py --check  # exit 1 if a message lacks a translation

Babel extracts every ``_()`` of ``console/templates`` and ``console/*.py`` into the
template; each language's ``.po`` keeps its translations and gains the new messages
empty. ``--check`` extracts afresh (into a temporary file), so a page changed without
its catalogue fails it, as it fails the test suite.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "console" / "locale"
TEMPLATE = LOCALE / "console.pot"
LANGUAGES = ("fr",)


def catalogue(language: str) -> Path:
    return LOCALE / language / "LC_MESSAGES" / "console.po"


def extract(into: Path) -> Catalog:
    """The messages of the console's pages and code, written to ``into``."""
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
            str(into),
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    with into.open("rb") as f:
        return read_po(f)


def untranslated(template: Catalog, language: str) -> list[str]:
    with catalogue(language).open("rb") as f:
        translated = read_po(f, locale=language)
    missing = []
    for message in template:
        found = translated.get(message.id) if message.id else None
        if message.id and (found is None or not found.string):
            missing.append(str(message.id))
    return missing


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as scratch:
            template = extract(Path(scratch) / "console.pot")
    else:
        template = extract(TEMPLATE)
        for language in LANGUAGES:
            with catalogue(language).open("rb") as f:
                old = read_po(f, locale=language)
            old.update(template, no_fuzzy_matching=True)
            with catalogue(language).open("wb") as f:
                write_po(f, old, omit_header=True, no_location=True, ignore_obsolete=True)
    missing = {language: untranslated(template, language) for language in LANGUAGES}
    for language, ids in missing.items():
        for message in ids:
            print(f"{catalogue(language).relative_to(ROOT)}: no translation for {message!r}")
    return 1 if any(missing.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
