"""Scripts the console's browser tests inject into a page, read from ``devtools/node``.

``axe_script()`` is axe-core's ``axe.min.js``, installed (with the identity provider)
by ``npm ci --prefix devtools/node``; a test evaluates it in the page, then runs
``axe.run()`` for the page's accessibility violations. Nothing is fetched from the
network: a missing package raises :class:`~pouch_devtools.oidc_provider.NodeModulesMissing`
naming that command.
"""

from __future__ import annotations

from pouch_devtools.oidc_provider import INSTALL_COMMAND, NODE_DIR, NodeModulesMissing

AXE_SCRIPT = NODE_DIR / "node_modules" / "axe-core" / "axe.min.js"


def axe_script() -> str:
    """The text of axe-core's ``axe.min.js``."""
    try:
        return AXE_SCRIPT.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise NodeModulesMissing(
            f"axe-core is not installed ({AXE_SCRIPT} is missing); run `{INSTALL_COMMAND}`"
        ) from e


__all__ = ["AXE_SCRIPT", "axe_script"]
