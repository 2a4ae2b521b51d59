"""What a test needs from the machine: Debian's chromium, the identity provider's
Node.js packages. Missing, it is skipped here and fails under CI (``CI=true``), where a
skipped browser or sign-in test would hide a broken console."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM_ENV = "POUCH_CHROMIUM"
DEFAULT_CHROMIUM = Path("/usr/bin/chromium")


def missing(reason: str) -> None:
    """Fail under CI, skip elsewhere; never returns."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def chromium_path() -> Path:
    """The chromium to launch: ``POUCH_CHROMIUM`` if set, else Debian's."""
    configured = os.environ.get(CHROMIUM_ENV)
    return Path(configured) if configured else DEFAULT_CHROMIUM


def require_chromium() -> Path:
    path = chromium_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        missing(f"no chromium at {path}: .ci/run installs Debian's chromium")
    return path


def require_node_modules() -> None:
    # Imported here: the development tools are not imported at collection time.
    from pouch_devtools.oidc_provider import INSTALL_COMMAND, node_modules_present

    if not node_modules_present():
        missing(f"the identity provider's Node.js packages are missing: run `{INSTALL_COMMAND}`")
