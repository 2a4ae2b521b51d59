"""Hostile configuration files: one line naming the file, the line or key, and the rule.

Each test shows the valid file loading first, then the hostile variant refused with
a :class:`ConfigError` whose message is a single line, so a parser's own exception
(``RecursionError``, the int-string ``ValueError``, ``embedded null byte``) cannot
pass for a refusal. The subprocess tests run ``pouch serve`` as an operator would;
the fuzz targets mutate the valid file and assert that nothing but ``ConfigError``
ever comes out.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, load_settings
from gateway.config_file import MAX_CONFIG_BYTES
from tests.fuzz_budget import examples

VALID = """\
[gateway]
state = "AT"
database_url = "sqlite:///data/pouch.db"

[pki]
dir = "pki"

[local_api]
listen = "127.0.0.1:7443"

[peer_api]
listen = "127.0.0.1:7444"

[tokens]
issuer = "https://idp.at.example"
audience = "pouch:AT"
jwks_file = "idp/jwks.json"

[delivery]
batch_size = 64

[[partners]]
state = "BE"
bundle = "partners/BE/bundle.json"
"""

POUCH = Path(sys.executable).with_name("pouch")


def write(directory: Path, content: str | bytes) -> Path:
    path = directory / "gateway.toml"
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def refusal(directory: Path, content: str | bytes) -> str:
    """The message of the refusal; the valid file must load from the same place first."""
    load_settings(write(directory, VALID))
    path = write(directory, content)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}"), message
    return message.removeprefix(str(path))


def test_config_with_nul_in_path_names_key(tmp_path: Path) -> None:
    text = VALID.replace('dir = "pki"', 'dir = "pki\\u0000/../etc"')
    assert refusal(tmp_path, text) == ": pki.dir: must not contain control character U+0000"


def test_config_with_nul_in_registry_path_names_key(tmp_path: Path) -> None:
    text = VALID + '\n[registry]\nkind = "spool"\ndirectory = "spool\\u0000"\n'
    message = refusal(tmp_path, text)
    assert message == ": registry.directory: must not contain control character U+0000"


def test_config_with_nul_in_partner_path_names_key(tmp_path: Path) -> None:
    text = VALID.replace('"partners/BE/bundle.json"', '"partners/BE\\u0000"')
    message = refusal(tmp_path, text)
    assert message == ": partners[0].bundle: must not contain control character U+0000"


def test_config_with_control_character_names_file_and_line(tmp_path: Path) -> None:
    text = VALID.replace('audience = "pouch:AT"', 'audience = "pouch:AT\x1b[2J"')
    assert refusal(tmp_path, text) == ":16: control character U+001B is not allowed"


def test_config_with_control_character_in_key_does_not_print_it(tmp_path: Path) -> None:
    text = VALID.replace('[pki]\ndir = "pki"', '[pki]\ndir = "pki"\n"x\\u001b[2J" = 1')
    message = refusal(tmp_path, text)
    assert message == ": pki: a key holds control character U+001B, which is not allowed"


def test_config_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    data = VALID.replace('"pouch:AT"', '"pouch:Ö"').encode("utf-8").replace(b"\xc3\x96", b"\xd6")
    assert refusal(tmp_path, data) == ":16: file is not UTF-8 text"


def test_config_with_huge_integer_names_key_and_line(tmp_path: Path) -> None:
    text = VALID.replace("batch_size = 64", "batch_size = " + "9" * 5000)
    assert refusal(tmp_path, text) == ":20: delivery.batch_size: number longer than 64 characters"


def test_config_with_deep_array_nesting_names_line(tmp_path: Path) -> None:
    text = VALID.replace("batch_size = 64", "batch_size = " + "[" * 5000 + "]" * 5000)
    assert refusal(tmp_path, text) == ":20: delivery.batch_size: nested deeper than 16 levels"


def test_config_with_deep_inline_table_nesting_names_line(tmp_path: Path) -> None:
    text = VALID.replace("batch_size = 64", "batch_size = " + "{a = " * 3000 + "1" + "}" * 3000)
    assert refusal(tmp_path, text) == ":20: delivery.batch_size: nested deeper than 16 levels"


def test_config_with_deep_dotted_key_names_key(tmp_path: Path) -> None:
    text = VALID.replace("batch_size = 64", "batch_size = 64\n" + "a." * 5000 + "b = 1")
    message = refusal(tmp_path, text)
    assert message == ": delivery" + ".a" * 16 + ": nested deeper than 16 levels"


def test_config_larger_than_the_limit_is_refused(tmp_path: Path) -> None:
    padding = "# padding\n" * (MAX_CONFIG_BYTES // 10 + 1)
    message = refusal(tmp_path, VALID + padding)
    assert message == f": file is larger than the limit of {MAX_CONFIG_BYTES} bytes"


def test_config_with_duplicate_table_names_it_and_line(tmp_path: Path) -> None:
    message = refusal(tmp_path, VALID + '\n[pki]\ndir = "other"\n')
    assert message == ":26: not valid TOML: cannot declare pki twice"


def test_config_with_duplicate_key_names_it_and_line(tmp_path: Path) -> None:
    text = VALID.replace('state = "AT"', 'state = "AT"\nstate = "BE"')
    assert refusal(tmp_path, text) == ":3: gateway.state: not valid TOML: duplicate key"


def test_config_with_table_where_a_path_belongs_names_no_python_type(tmp_path: Path) -> None:
    message = refusal(tmp_path, VALID.replace('dir = "pki"', "dir = 5"))
    assert message == ": pki.dir: Input should be a string (a path)"


def test_config_with_value_where_a_table_belongs_names_no_python_type(tmp_path: Path) -> None:
    text = "pki = 5\n" + VALID.replace('[pki]\ndir = "pki"\n', "")
    assert refusal(tmp_path, text) == ": pki: Input should be a table"


def test_config_with_infinite_deadline_is_refused(tmp_path: Path) -> None:
    text = VALID.replace("batch_size = 64", "deadline_seconds = inf")
    assert refusal(tmp_path, text) == ": delivery.deadline_seconds: Input should be a finite number"


@pytest.mark.parametrize(
    "hostile",
    [
        VALID.replace('dir = "pki"', 'dir = "pki\\u0000"'),
        VALID.replace("batch_size = 64", "batch_size = " + "9" * 5000),
        VALID.replace("batch_size = 64", "batch_size = " + "[" * 5000 + "]" * 5000),
    ],
    ids=["nul-in-path", "huge-integer", "deep-nesting"],
)
def test_pouch_serve_with_hostile_config_prints_one_line_naming_the_file(
    tmp_path: Path, hostile: str
) -> None:
    path = write(tmp_path, hostile)
    result = subprocess.run(
        [str(POUCH), "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: {path}"), line


# Mutations of the valid file an attacker (or a careless edit) could make, put where
# the parser reads a value or a key, so that it meets them before any syntax error.
_CONTROL = st.sampled_from(["\x00", "\x01", "\x1b", "\x7f", "\x85", "\r", "\t", "\ufeff"])
_ESCAPED = st.sampled_from(["\\u0000", "\\u001b", "\\ud800", "\\U0010FFFF", "\\x01"])
_NESTING = st.integers(min_value=1, max_value=3000).flatmap(
    lambda n: st.sampled_from(
        ["[" * n + "]" * n, "{a = " * n + "1}" + "}" * (n - 1), "a." * n + "b=1\n"]
    )
)
_NUMBER = st.integers(min_value=1, max_value=6000).flatmap(
    lambda n: st.sampled_from(["9" * n, "-" + "1" * n, "0x" + "f" * n, "1." + "0" * n + "e1"])
)
_FRAGMENT = st.one_of(_CONTROL, _ESCAPED, _NESTING, _NUMBER, st.text(max_size=8))
_VALUE_STARTS = [i + 3 for i in range(len(VALID)) if VALID.startswith(" = ", i)]
_STRING_STARTS = [i + 4 for i in range(len(VALID)) if VALID.startswith(' = "', i)]
_LINE_STARTS = [0] + [i + 1 for i, c in enumerate(VALID) if c == "\n"]
_WHERE = st.one_of(
    st.sampled_from(_VALUE_STARTS),
    st.sampled_from(_STRING_STARTS),
    st.sampled_from(_LINE_STARTS),
    st.integers(0, len(VALID)),
)


def _load(content: bytes) -> None:
    """Load ``content``: it may be refused, but only by a message for the operator."""
    with tempfile.TemporaryDirectory() as directory:
        path = write(Path(directory), content)
        try:
            load_settings(path)
        except ConfigError as e:
            message = str(e)
            assert message.startswith(str(path)), message
            # Python's words (exception and class names) are not the operator's.
            assert "Error" not in message and "<class" not in message, message
            assert "instance of" not in message and "tuple" not in message, message


@pytest.mark.fuzz
@settings(max_examples=examples(300))
@given(
    flips=st.lists(
        st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8
    )
)
def test_config_with_flipped_bytes_only_ever_raises_config_error(
    flips: list[tuple[int, int]],
) -> None:
    data = bytearray(VALID.encode("utf-8"))
    for position, value in flips:
        data[position] = value
    _load(bytes(data))


@pytest.mark.fuzz
@settings(max_examples=examples(300))
@given(
    inserts=st.lists(st.tuples(_WHERE, _FRAGMENT), min_size=1, max_size=3),
)
def test_config_with_inserted_hostile_text_only_ever_raises_config_error(
    inserts: list[tuple[int, str]],
) -> None:
    text = VALID
    for position, fragment in sorted(inserts, reverse=True):
        text = text[:position] + fragment + text[position:]
    _load(text.encode("utf-8", errors="surrogatepass"))


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML's, lone surrogates included
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    assert isinstance(value, dict)
    pairs = (f"{json.dumps(key)} = {_toml_value(item)}" for key, item in value.items())
    return "{" + ", ".join(pairs) + "}"


_STRUCTURE = st.recursive(
    st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.text(st.characters(max_codepoint=0x9F), max_size=6),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
_KEYS = [
    ("gateway", "state"),
    ("gateway", "worker_threads"),
    ("pki", "dir"),
    ("tokens", "jwks_file"),
    ("tokens", "algorithms"),
    ("delivery", "batch_size"),
    ("delivery", "deadline_seconds"),
    ("storage", "sealing_key_file"),
    ("registry", "kind"),
    ("partners", "bundle"),
]


@pytest.mark.fuzz
@settings(max_examples=examples(300))
@given(key=st.sampled_from(_KEYS), value=_STRUCTURE)
def test_config_with_random_structure_in_a_key_only_ever_raises_config_error(
    key: tuple[str, str], value: object
) -> None:
    section, name = key
    table = f"[[{section}]]" if section == "partners" else f"[{section}]"
    assignment = f"{name} = {_toml_value(value)}"
    if table in VALID:
        text = VALID.replace(f"{table}\n", f"{table}\n{assignment}\n", 1)
    else:
        text = f"{VALID}\n{table}\n{assignment}\n"
    _load(text.encode("utf-8", errors="surrogatepass"))
