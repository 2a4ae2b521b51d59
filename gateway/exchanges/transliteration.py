"""Transliteration tables for comparing names, as data.

``ICAO_LATIN`` and ``ICAO_CYRILLIC`` are the tables of ICAO Doc 9303 Part 3 (Eighth
Edition, 2021), section 6, "Transliterations recommended for use by States": 6.A
"Transliteration of multinational Latin-based characters" and 6.B "Transliteration of
Cyrillic characters". Keys are the upper-case characters the standard lists; a caller
looks a lower-case letter up by its upper case.

Where 6.A offers a choice (``Ä``: "AE or A"), the value lists every choice in the
standard's order: the first is the one a name is normalised to, and the others are
accepted when a name is compared with an MRZ, since the issuing State chose one of them.
Where 6.B makes an exception for one language (``Г``: "G (except Belorussian, Serbian, and
Ukrainian = H)"), only the general rule is kept: the language of a name is not known
when it is compared.

``LATIN_ASCII`` holds the letters that Unicode NFKD cannot reduce to a base letter and
its combining marks (a letter with a stroke, a ligature, a thorn), for the plain
"Latin to ASCII" comparison.
"""

from __future__ import annotations

# Doc 9303 Part 3, section 6.A (Unicode 00C0 to 017D, and 1E9E), in the table's order.
# fmt: off
ICAO_LATIN: dict[str, tuple[str, ...]] = {
    "À": ("A",), "Á": ("A",), "Â": ("A",), "Ã": ("A",), "Ä": ("AE", "A"), "Å": ("AA", "A"),
    "Æ": ("AE",), "Ç": ("C",), "È": ("E",), "É": ("E",), "Ê": ("E",), "Ë": ("E",),
    "Ì": ("I",), "Í": ("I",), "Î": ("I",), "Ï": ("I",), "Ð": ("D",), "Ñ": ("N", "NXX"),
    "Ò": ("O",), "Ó": ("O",), "Ô": ("O",), "Õ": ("O",), "Ö": ("OE", "O"), "Ø": ("OE",),
    "Ù": ("U",), "Ú": ("U",), "Û": ("U",), "Ü": ("UE", "UXX", "U"), "Ý": ("Y",),
    "Þ": ("TH",),
    "Ā": ("A",), "Ă": ("A",), "Ą": ("A",), "Ć": ("C",), "Ĉ": ("C",), "Ċ": ("C",),
    "Č": ("C",), "Ď": ("D",), "Đ": ("D",), "Ē": ("E",), "Ĕ": ("E",), "Ė": ("E",),
    "Ę": ("E",), "Ě": ("E",), "Ĝ": ("G",), "Ğ": ("G",), "Ġ": ("G",), "Ģ": ("G",),
    "Ĥ": ("H",), "Ħ": ("H",), "Ĩ": ("I",), "Ī": ("I",), "Ĭ": ("I",), "Į": ("I",),
    "İ": ("I",), "ı": ("I",), "Ĳ": ("IJ",), "Ĵ": ("J",), "Ķ": ("K",), "Ĺ": ("L",),
    "Ļ": ("L",), "Ľ": ("L",), "Ŀ": ("L",), "Ł": ("L",), "Ń": ("N",), "Ņ": ("N",),
    "Ň": ("N",), "Ŋ": ("N",), "Ō": ("O",), "Ŏ": ("O",), "Ő": ("O",), "Œ": ("OE",),
    "Ŕ": ("R",), "Ŗ": ("R",), "Ř": ("R",), "Ś": ("S",), "Ŝ": ("S",), "Ş": ("S",),
    "Š": ("S",), "Ţ": ("T",), "Ť": ("T",), "Ŧ": ("T",), "Ũ": ("U",), "Ū": ("U",),
    "Ŭ": ("U",), "Ů": ("U",), "Ű": ("U",), "Ų": ("U",), "Ŵ": ("W",), "Ŷ": ("Y",),
    "Ÿ": ("Y",), "Ź": ("Z",), "Ż": ("Z",), "Ž": ("Z",), "ẞ": ("SS",),
    # Not a row of its own: the lower case of ẞ, listed so no upper-casing rule decides it.
    "ß": ("SS",),
}

# Doc 9303 Part 3, section 6.B, by code point (0401 to 04BA), general rule of each row.
ICAO_CYRILLIC: dict[str, str] = {
    "Ё": "E", "Ђ": "D", "Є": "IE", "Ѕ": "DZ", "І": "I", "Ї": "I", "Ј": "J", "Љ": "LJ",
    "Њ": "NJ", "Ќ": "K", "Ў": "U", "Џ": "DZ",
    "А": "A", "Б": "B", "В": "V", "Г": "G", "Д": "D", "Е": "E", "Ж": "ZH", "З": "Z",
    "И": "I", "Й": "I", "К": "K", "Л": "L", "М": "M", "Н": "N", "О": "O", "П": "P",
    "Р": "R", "С": "S", "Т": "T", "У": "U", "Ф": "F", "Х": "KH", "Ц": "TS", "Ч": "CH",
    "Ш": "SH", "Щ": "SHCH", "Ъ": "IE", "Ы": "Y", "Э": "E", "Ю": "IU", "Я": "IA",
    "Ѫ": "U", "Ѵ": "Y", "Ґ": "G", "Ғ": "G", "Һ": "C",
    # Not in 6.B: the soft sign has no sound of its own and MRZs leave it out.
    "Ь": "",
}

# Letters NFKD leaves whole; everything else loses its marks.
LATIN_ASCII: dict[str, str] = {
    "ß": "SS", "ẞ": "SS", "Æ": "AE", "Ø": "O", "Œ": "OE", "Þ": "TH", "Ð": "D", "Ł": "L",
    "Đ": "D", "Ħ": "H", "Ŧ": "T", "ı": "I",
}
# fmt: on
