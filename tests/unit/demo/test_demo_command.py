"""``pouch demo`` and a gateway installed without the development tools."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from gateway.cli.demo import INSTALL_HINT
from gateway.cli.main import cli


class _NotInstalled:
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] == "pouch_devtools":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def test_without_the_development_tools_demo_says_how_to_install_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if pouch-devtools were not installed: nothing of it loaded, and no finder finds it.
    for name in [m for m in sys.modules if m.split(".")[0] == "pouch_devtools"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NotInstalled(), *sys.meta_path])

    result = CliRunner().invoke(cli, ["demo"])

    assert result.exit_code == 1
    assert result.output == f"Error: {INSTALL_HINT}\n"
    assert "pip install -e ./devtools" in INSTALL_HINT


def test_the_pouch_command_loads_no_development_tool() -> None:
    code = (
        "import sys, gateway.cli.main; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pouch_devtools'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
