"""Hostile agreement files: one issue naming the file, the line, the key and the rule.

Each test first loads the valid example from the same path, then shows the hostile
variant refused with exactly one :class:`AgreementFileError` issue, so a parser's
own exception (``RecursionError``, pyyaml's ``ReaderError``, a ``KeyError`` from a
tagged scalar) cannot pass for a refusal. The subprocess tests run ``pouch agreement
check`` and ``pouch serve`` as an operator would; the fuzz targets mutate the example
and assert that nothing but ``AgreementFileError`` ever comes out.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.agreements import (
    EXCHANGES_VALIDATOR,
    AgreementFileError,
    load_agreement,
    parse_agreement_text,
)
from gateway.agreements.yaml_tree import MAX_AGREEMENT_BYTES
from pouch_devtools.demo.deployment import prepare_sites
from tests.fuzz_budget import examples
from tests.unit.agreements import POLICIES

EXAMPLE = (POLICIES / "at-be-civil-identity.yaml").read_text(encoding="utf-8")
POUCH = Path(sys.executable).with_name("pouch")


def line_of(marker: str, text: str = EXAMPLE) -> int:
    """The line of the example on which ``marker`` first appears."""
    return text[: text.index(marker)].count("\n") + 1


def write(directory: Path, content: str | bytes, name: str = "agreement.yaml") -> Path:
    path = directory / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def refusal(directory: Path, content: str | bytes) -> str:
    """The one issue refusing ``content``, after the example loads from the same path."""
    load_agreement(write(directory, EXAMPLE), exchanges_validator=EXCHANGES_VALIDATOR)
    path = write(directory, content)
    with pytest.raises(AgreementFileError) as caught:
        load_agreement(path, exchanges_validator=EXCHANGES_VALIDATOR)
    (issue,) = caught.value.issues
    assert str(caught.value).startswith(f"{path}:"), str(caught.value)
    return str(issue).removeprefix(str(path))


_TITLE = line_of("title:")
_QUOTA = line_of("registry_update: 500")


def test_agreement_with_control_character_names_file_and_line(tmp_path: Path) -> None:
    text = EXAMPLE.replace("title: Austria", "title: Aus\x01tria", 1)
    assert refusal(tmp_path, text) == (
        f":{_TITLE}: (top level): control character U+0001 is not allowed"
    )


def test_agreement_with_nul_byte_names_file_and_line(tmp_path: Path) -> None:
    text = EXAMPLE.replace("title: Austria", "title: Aus\x00tria", 1)
    assert refusal(tmp_path, text) == (
        f":{_TITLE}: (top level): control character U+0000 is not allowed"
    )


def test_agreement_with_escaped_control_character_names_key_and_line(tmp_path: Path) -> None:
    text = re.sub(r"title: .*", lambda _: 'title: "Austria\\e[2J"', EXAMPLE, count=1)
    assert refusal(tmp_path, text) == f":{_TITLE}: title: control character U+001B is not allowed"


def test_agreement_with_lone_surrogate_escape_names_key_and_line(tmp_path: Path) -> None:
    text = re.sub(r"title: .*", lambda _: 'title: "Austria\\ud800"', EXAMPLE, count=1)
    assert refusal(tmp_path, text) == f":{_TITLE}: title: lone surrogate U+D800 is not allowed"


def test_agreement_with_lone_surrogate_in_a_key_names_its_mapping(tmp_path: Path) -> None:
    text = EXAMPLE.replace("event_type: allow", '"event\\ud800": allow', 1)
    message = refusal(tmp_path, text)
    assert message == (
        f':{line_of("event_type")}: exchanges.civil_record."AT->BE".fields: '
        "a key holds lone surrogate U+D800, which is not allowed"
    )


def test_agreement_text_with_raw_lone_surrogate_names_line() -> None:
    text = EXAMPLE.replace("title: Austria", "title: Aus\ud800tria", 1)
    with pytest.raises(AgreementFileError) as caught:
        parse_agreement_text(text, file="f.yaml", exchanges_validator=EXCHANGES_VALIDATOR)
    assert (
        str(caught.value) == f"f.yaml:{_TITLE}: (top level): lone surrogate U+D800 is not allowed"
    )


def test_agreement_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    data = EXAMPLE.encode("utf-8").replace("title: Austria–".encode(), b"title: Austria\x96", 1)
    assert refusal(tmp_path, data) == f":{_TITLE}: (top level): file is not UTF-8 text"


def test_agreement_with_deep_flow_nesting_names_line(tmp_path: Path) -> None:
    text = EXAMPLE.replace("parties: [AT, BE]", "parties: " + "[" * 5000 + "]" * 5000, 1)
    assert refusal(tmp_path, text) == (
        f":{line_of('parties:')}: (top level): invalid YAML: nested deeper than 32 levels"
    )


def test_agreement_with_deep_block_nesting_names_line(tmp_path: Path) -> None:
    nested = "".join(f"{' ' * depth}k{depth}:\n" for depth in range(200)) + " " * 200 + "1\n"
    message = refusal(tmp_path, EXAMPLE + nested)
    match = re.fullmatch(
        r":(\d+): \(top level\): invalid YAML: nested deeper than 32 levels", message
    )
    assert match is not None, message
    assert int(match[1]) > EXAMPLE.count("\n")


def test_agreement_billion_laughs_is_refused_at_the_first_alias(tmp_path: Path) -> None:
    laughs = 'lol0: &lol0 "lol"\n' + "".join(
        f"lol{n}: &lol{n} [{', '.join([f'*lol{n - 1}'] * 9)}]\n" for n in range(1, 10)
    )
    message = refusal(tmp_path, EXAMPLE + laughs)
    first_alias = EXAMPLE.count("\n") + 2
    assert message == f":{first_alias}: (top level): invalid YAML: aliases are not allowed"


def test_agreement_larger_than_the_limit_is_refused(tmp_path: Path) -> None:
    padding = "# padding\n" * (MAX_AGREEMENT_BYTES // 10 + 1)
    assert refusal(tmp_path, EXAMPLE + padding) == (
        f":1: (top level): file is larger than the limit of {MAX_AGREEMENT_BYTES} bytes"
    )


def test_agreement_with_huge_integer_names_key_and_line(tmp_path: Path) -> None:
    text = EXAMPLE.replace("registry_update: 500", "registry_update: " + "9" * 5000, 1)
    assert refusal(tmp_path, text) == (
        f':{_QUOTA}: exchanges.civil_record."AT->BE".quota_per_day.registry_update: '
        "number longer than 64 characters"
    )


@pytest.mark.parametrize(
    ("tagged", "rule"),
    [
        ("!!bool maybe", "not a valid boolean (true or false)"),
        ("!!timestamp soon", "not a valid date (YYYY-MM-DD)"),
        ("!!int many", "not a valid integer"),
    ],
)
def test_agreement_with_malformed_tagged_scalar_names_key_and_line(
    tmp_path: Path, tagged: str, rule: str
) -> None:
    text = EXAMPLE.replace("registry_update: 500", f"registry_update: {tagged}", 1)
    assert refusal(tmp_path, text) == (
        f':{_QUOTA}: exchanges.civil_record."AT->BE".quota_per_day.registry_update: {rule}'
    )


_HOSTILE = {
    "control-character": EXAMPLE.replace("title: Austria", "title: Aus\x01tria", 1),
    "deep-nesting": EXAMPLE.replace("parties: [AT, BE]", "parties: " + "[" * 5000 + "]" * 5000, 1),
    "huge-integer": EXAMPLE.replace("registry_update: 500", "registry_update: " + "9" * 5000, 1),
}


@pytest.mark.parametrize("name", sorted(_HOSTILE))
def test_pouch_agreement_check_on_hostile_file_prints_one_line_naming_it(
    tmp_path: Path, name: str
) -> None:
    path = write(tmp_path, _HOSTILE[name])
    result = subprocess.run(
        [str(POUCH), "agreement", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"{path}:"), line


def test_pouch_serve_with_hostile_agreement_prints_one_line_naming_it(tmp_path: Path) -> None:
    sites = prepare_sites(tmp_path, ["AT", "BE"], now=datetime.now(UTC), agreements=[("AT", "BE")])
    site = sites["AT"]
    path = write(site.agreements_dir, _HOSTILE["deep-nesting"], name="hostile.yaml")
    result = subprocess.run(
        [str(POUCH), "serve", "--config", str(site.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    naming = [line for line in result.stderr.splitlines() if str(path) in line]
    assert naming == [
        f"Error: agreements: cannot load: {path}:{line_of('parties:')}: (top level): "
        "invalid YAML: nested deeper than 32 levels"
    ], result.stderr


def _check_refusal(error: AgreementFileError, file: str) -> None:
    for issue in error.issues:
        shown = str(issue)
        assert shown.startswith(f"{file}:") and "\n" not in shown, shown
        # Python's words (exception and class names, its own limits) are not the operator's.
        assert "Error" not in shown and "<class" not in shown and "sys." not in shown, shown


def _load_bytes(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = write(Path(directory), content)
        try:
            load_agreement(path, exchanges_validator=EXCHANGES_VALIDATOR)
        except AgreementFileError as e:
            _check_refusal(e, str(path))


def _parse(text: str) -> None:
    try:
        parse_agreement_text(text, file="f.yaml", exchanges_validator=EXCHANGES_VALIDATOR)
    except AgreementFileError as e:
        _check_refusal(e, "f.yaml")


_EXAMPLE_BYTES = EXAMPLE.encode("utf-8")


@pytest.mark.fuzz
@settings(max_examples=examples(300))
@given(
    flips=st.lists(
        st.tuples(st.integers(0, len(_EXAMPLE_BYTES) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    )
)
def test_agreement_with_flipped_bytes_only_ever_raises_agreement_file_error(
    flips: list[tuple[int, int]],
) -> None:
    data = bytearray(_EXAMPLE_BYTES)
    for position, value in flips:
        data[position] = value
    _load_bytes(bytes(data))


# Mutations put where the parser reads a value or a key, so that it meets them before
# any syntax error: control characters (literal and escaped), nesting, long numbers,
# anchors and aliases, tags.
_FRAGMENT = st.one_of(
    st.sampled_from(["\x00", "\x01", "\x1b", "\x7f", "\x85", "\ufeff", "\u2028", "\ud800"]),
    st.sampled_from(['"\\0"', '"\\e"', '"\\ud800"', '"\\U0010FFFF"', '"\\x85"', '"\\uDFFF"']),
    st.integers(min_value=1, max_value=3000).flatmap(
        lambda n: st.sampled_from(["[" * n + "]" * n, "{a: " * n + "1" + "}" * n, "- " * n])
    ),
    st.integers(min_value=1, max_value=6000).flatmap(
        lambda n: st.sampled_from(["9" * n, "0x" + "f" * n, "1:" * n + "1", "1." + "0" * n])
    ),
    st.sampled_from(["&a ", "*a", "!!binary ", "!!python/none ", "!!bool ", "!!timestamp ", "? "]),
    st.text(max_size=8),
)
_VALUE_STARTS = [m.end() for m in re.finditer(r": ", EXAMPLE)]
_LINE_STARTS = [0] + [m.end() for m in re.finditer(r"\n *", EXAMPLE)]
_WHERE = st.one_of(
    st.sampled_from(_VALUE_STARTS),
    st.sampled_from(_LINE_STARTS),
    st.integers(0, len(EXAMPLE)),
)


@pytest.mark.fuzz
@settings(max_examples=examples(300))
@given(inserts=st.lists(st.tuples(_WHERE, _FRAGMENT), min_size=1, max_size=3))
def test_agreement_with_inserted_hostile_text_only_ever_raises_agreement_file_error(
    inserts: list[tuple[int, str]],
) -> None:
    text = EXAMPLE
    for position, fragment in sorted(inserts, reverse=True):
        text = text[:position] + fragment + text[position:]
    _parse(text)


def _key_paths(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _key_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _key_paths(item, (*path, index))
    return found


_DOCUMENT = yaml.safe_load(EXAMPLE)
_PATHS = [path for path in _key_paths(_DOCUMENT) if path]
_STRUCTURE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.dates().map(date.isoformat)
    | st.text(max_size=12)
    | st.text(st.characters(max_codepoint=0x9F), max_size=6),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _replaced(document: Any, path: tuple[str | int, ...], value: Any) -> Any:
    if not path:
        return value
    head, *rest = path
    if isinstance(document, dict):
        return {
            k: _replaced(v, tuple(rest), value) if k == head else v for k, v in document.items()
        }
    return [_replaced(v, tuple(rest), value) if i == head else v for i, v in enumerate(document)]


@pytest.mark.fuzz
@settings(max_examples=examples(300))
@given(path=st.sampled_from(_PATHS), value=_STRUCTURE)
def test_agreement_with_random_structure_in_a_key_only_ever_raises_agreement_file_error(
    path: tuple[str | int, ...], value: Any
) -> None:
    # JSON is YAML: the document is written as one flow mapping, escapes and all.
    _parse(json.dumps(_replaced(_DOCUMENT, path, value), default=str, allow_nan=True))
