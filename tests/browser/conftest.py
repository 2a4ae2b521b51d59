"""A real browser for the console's pages: Debian's chromium, driven by Playwright.

Playwright's own browser downloads are never used: the tests launch the chromium the
system provides (``POUCH_CHROMIUM``, else ``/usr/bin/chromium``), headless and without
any background traffic. Without it the tests are skipped locally and fail under CI
(``CI=true``), where a missing browser is a broken pipeline, not a pass.

One browser serves a test module; each test gets its own context (cookies, storage,
routes), closed when it ends, so tests share no state and run in any order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.browser.evidence_site import SignedLog, Site, build_signed_log, serving
from tests.needs import require_chromium

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERIOUS_IMPACTS = ("serious", "critical")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless; one per test module (tests each open a context)."""
    path = require_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(path), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a context of its own, closed after the test."""
    context = browser.new_context(ignore_https_errors=True)
    try:
        yield context.new_page()
    finally:
        context.close()


_AXE_RUN = """async () => {
    const results = await axe.run(document, { resultTypes: ["violations"] });
    return results.violations.map((v) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        nodes: v.nodes.map((n) => n.target.join(" ")),
    }));
}"""


def run_axe(page: Page) -> list[dict[str, Any]]:
    """The serious and critical accessibility violations axe-core finds on ``page``.

    axe-core is evaluated through the browser's debugging protocol, which the page's
    CSP (``script-src 'self'``) does not govern, so the page under test keeps its own.
    """
    # Imported here: the development tools are not imported at collection time.
    from pouch_devtools.browser_assets import axe_script

    if not page.evaluate("() => typeof axe === 'object'"):
        page.evaluate(f"() => {{ {axe_script()}\n}}")
    violations: list[dict[str, Any]] = page.evaluate(_AXE_RUN)
    return [v for v in violations if v["impact"] in SERIOUS_IMPACTS]


@pytest.fixture(scope="module")
def signed_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignedLog]:
    """The evidence tests' log, built once per module and never written again."""
    signed, engine = build_signed_log(tmp_path_factory.mktemp("browser-log"))
    try:
        yield signed
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def site(signed_log: SignedLog) -> Iterator[Site]:
    with serving(signed_log) as served:
        yield served
