"""``deploy/pouch.service`` keeps its hardening: a unit edited into running as root, with
a writable file system or with capabilities, fails here before it reaches a host."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "pouch.service"
SYSUSERS = ROOT / "deploy" / "pouch.sysusers"
INSTALLED_POUCH = "/opt/pouch/bin/pouch"


def directives(text: str) -> dict[str, list[str]]:
    """``Section.Key`` to every value given, in order (systemd lets a key repeat)."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return directives(UNIT.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("User", "pouch"),
        ("Group", "pouch"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/var/lib/pouch"),
        ("StateDirectory", "pouch"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("RestrictSUIDSGID", "yes"),
        ("UMask", "0077"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ],
)
def test_the_unit_is_hardened(service: dict[str, list[str]], key: str, value: str) -> None:
    assert value in service.get(f"Service.{key}", []), f"{key}={value} missing from {UNIT}"


def test_the_unit_runs_pouch_serve_with_its_configuration_and_nothing_writable_else(
    service: dict[str, list[str]],
) -> None:
    (start,) = service["Service.ExecStart"]
    assert start.startswith(f"{INSTALLED_POUCH} serve --config /etc/pouch/gateway.toml")
    assert service["Service.ReadWritePaths"] == ["/var/lib/pouch"]
    # No directive undoes the hardening: no root, no added capability, no privilege.
    assert "root" not in service["Service.User"]
    assert "PermissionsStartOnly" not in "".join(service)
    assert not any(value.startswith(("+", "!")) for value in service["Service.ExecStart"])


def test_the_sysusers_file_makes_the_units_user() -> None:
    lines = [
        line.split()
        for line in SYSUSERS.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert [fields[:2] for fields in lines] == [["u", "pouch"]]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at the installed pouch.
    pouch = Path(sys.executable).parent / "pouch"
    unit = tmp_path / "pouch.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED_POUCH, str(pouch)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "pouch.service" not in result.stderr, result.stderr


CONSOLE_UNIT = ROOT / "deploy" / "pouch-console.service"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("User", "pouch"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("UMask", "0077"),
    ],
)
def test_the_console_unit_is_hardened_and_writes_nothing(key: str, value: str) -> None:
    console = directives(CONSOLE_UNIT.read_text(encoding="utf-8"))
    assert value in console.get(f"Service.{key}", []), f"{key}={value} missing from {CONSOLE_UNIT}"
    (start,) = console["Service.ExecStart"]
    assert start.startswith(f"{INSTALLED_POUCH} console --config /etc/pouch/console.toml")
    assert "Service.ReadWritePaths" not in console and "Service.StateDirectory" not in console


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_console_unit(tmp_path: Path) -> None:
    pouch = Path(sys.executable).parent / "pouch"
    unit = tmp_path / "pouch-console.service"
    text = CONSOLE_UNIT.read_text(encoding="utf-8").replace(INSTALLED_POUCH, str(pouch))
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "pouch-console.service" not in result.stderr, result.stderr
