"""The console in a real browser, against live gateways, providers and consoles.

Debian's chromium (Playwright) signs officers in at their state's OpenID Connect
provider (oidc-provider under Node.js, its own login form), and works as they would:
an LU consul opens a lost-documents request; a BE consul finds it at the top of the
desk and works it to the end while the LU page follows each step live; the LU consul
acknowledges the costs. Also: the auditor's evidence checked in the browser, the
security properties the console promises, and axe-core on every page type.

Screenshots go to ``$POUCH_SCREENSHOT_DIR`` (default: the test's temporary folder);
they are never committed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, FilePayload, Page, Route, expect

from pouch_devtools.console_site import ConsoleSite
from pouch_devtools.demo.deployment import free_port
from tests.browser.conftest import run_axe
from tests.browser.console_deployment import LU_BE, LU_FR, Deployment, running_deployment, sign_in

LIVE_TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[Deployment]:
    with running_deployment(tmp_path_factory.mktemp("console")) as running:
        yield running


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("POUCH_SCREENSHOT_DIR")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def officer(
    browser: Browser, console: ConsoleSite, username: str, *, locale: str = "en-GB"
) -> Iterator[Page]:
    context = browser.new_context(ignore_https_errors=True, locale=locale)
    try:
        page = context.new_page()
        sign_in(page, console, username)
        yield page
    finally:
        context.close()


def until(check: Callable[[], bool], *, timeout_s: float = 20.0, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def open_request(page: Page, console: ConsoleSite, family_name: str, summary: str) -> str:
    page.goto(f"{console.url}/cases/new")
    page.get_by_label("Partner and agreement").select_option(f"{LU_BE}|BE")
    page.get_by_label("Purpose (from the agreement)").select_option(
        label="consular_assistance (BE)"
    )
    page.get_by_label("Kind of assistance").select_option("lost_documents")
    page.get_by_label("Country of the assisting mission (ISO 3166)").fill("TH")
    page.get_by_label("What is needed").fill(summary)
    page.get_by_label("Given names").fill("Anne")
    page.get_by_label("Family names").fill(family_name)
    page.get_by_label("Date of birth").fill("1990-04-01")
    page.get_by_label("Where the person is (town)").fill("Bangkok")
    page.get_by_role("button", name="Send the request").click()
    expect(page.locator("#case-state")).to_have_attribute("data-state", "submitted")
    return page.url.rsplit("/", 1)[1]


def csrf_token(page: Page) -> str:
    return page.locator("input[name=csrftoken]").first.input_value()


def case_state(page: Page) -> Any:
    return expect(page.locator("#case-state"))


def test_a_lost_documents_request_is_worked_by_both_consulates_live(
    deployment: Deployment, browser: Browser, screenshots: Path
) -> None:
    lu, be = deployment.consoles["LU"], deployment.consoles["BE"]
    canary = f"Canary{uuid.uuid4().hex[:12]}"
    requested: list[str] = []
    titles: list[str] = []
    with (
        officer(browser, lu, "lu-consul") as lu_page,
        officer(browser, be, "be-consul") as be_page,
    ):
        for page in (lu_page, be_page):
            page.on("request", lambda r: requested.append(r.url))
            page.on("load", lambda p: titles.append(p.title()))
        case_id = open_request(lu_page, lu, canary, f"Passport lost in Bangkok ({canary})")

        # The requesting state's officer is not offered the representing state's moves,
        # and the gateway refuses one forced through the form's own path.
        for label in ("Acknowledge the request", "Accept the case", "Complete the case"):
            expect(lu_page.get_by_role("button", name=label)).to_have_count(0)
        expect(lu_page.get_by_role("button", name="Cancel the request")).to_have_count(1)
        forced = lu_page.request.post(
            f"{lu.url}/cases/{case_id}/transition",
            form={"csrftoken": csrf_token(lu_page), "target": "acknowledged"},
        )
        assert forced.status == 409
        assert "ILLEGAL_TRANSITION" in forced.text()

        # BE's consul finds the new request at the top of the desk.
        def on_top() -> bool:
            be_page.goto(f"{be.url}/cases")
            rows = be_page.locator("#cases tbody tr")
            return rows.count() > 0 and rows.first.get_attribute("data-case-id") == case_id

        until(on_top, what="the request at the top of BE's desk")
        expect(be_page.locator("#cases tbody tr").first).to_contain_text("Lost documents")
        be_page.screenshot(path=str(screenshots / "desk.png"), full_page=True)
        be_page.get_by_role("link", name=case_id).click()

        def step(label: str, state: str) -> None:
            be_page.get_by_role("button", name=label).click()
            case_state(be_page).to_have_attribute("data-state", state)
            # The LU page is not reloaded: the change arrives by server-sent events.
            case_state(lu_page).to_have_attribute("data-state", state, timeout=LIVE_TIMEOUT_MS)

        step("Acknowledge the request", "acknowledged")
        step("Accept the case", "accepted")
        be_page.get_by_label("New note").fill("Appointment booked at the embassy")
        be_page.set_input_files(
            "#note-attachment",
            files=[
                FilePayload(
                    name="appointment.pdf", mimeType="application/pdf", buffer=b"%PDF-1.4\n"
                )
            ],
        )
        be_page.get_by_role("button", name="Add the note").click()
        expect(be_page.locator("#notes")).to_contain_text("Appointment booked at the embassy")
        expect(lu_page.locator("#notes")).to_contain_text(
            "Appointment booked at the embassy", timeout=LIVE_TIMEOUT_MS
        )
        with lu_page.expect_download() as download:
            lu_page.locator("#notes a[download]").first.click()
        assert Path(download.value.path()).read_bytes() == b"%PDF-1.4\n"
        step("Start work", "in_progress")
        step("Complete the case", "completed")
        be_page.get_by_label("Amount").fill("45.50")
        be_page.get_by_label("Cost category").select_option("TRAVEL_DOCUMENT_FEE")
        be_page.get_by_role("button", name="Claim the costs").click()
        acknowledge = lu_page.get_by_role("button", name="Acknowledge the costs")
        expect(acknowledge).to_be_visible(timeout=LIVE_TIMEOUT_MS)
        expect(lu_page.locator("#costs")).to_contain_text("45.50 EUR")
        expect(lu_page.locator("#live-status")).to_have_text("The case was updated: costs claimed.")
        lu_page.screenshot(path=str(screenshots / "case.png"), full_page=True)
        acknowledge.click()
        expect(lu_page.locator("#costs")).to_contain_text("yes")
        expect(be_page.locator("#costs td").filter(has_text="yes")).to_have_count(
            1, timeout=LIVE_TIMEOUT_MS
        )
        expect(lu_page.locator("#history")).to_contain_text("completed")

        storage = [
            p.evaluate("() => JSON.stringify([{...localStorage}, {...sessionStorage}])")
            for p in (lu_page, be_page)
        ]
        cookies = lu_page.context.cookies() + be_page.context.cookies()

    # The officer acted: LU's audit log names the consul, through the console.
    with officer(browser, lu, "lu-auditor") as audit_page:
        audit_page.goto(f"{lu.url}/audit?exchange=representation&partner=BE")
        acted = audit_page.locator("#entries tbody tr").filter(
            has_text="lu-consul(client:pouch-console)"
        )
        expect(acted.first).to_be_visible()
        acted.first.locator("a").click()
        expect(audit_page.locator("dl.facts")).to_contain_text("lu-consul(client:pouch-console)")

    # The canary crossed as the person's name and the request's words, and is nowhere
    # it must not be: URLs, titles, the browsers' storage and cookies, any log line.
    assert not [u for u in requested if canary in u]
    assert not [t for t in titles if canary in t]
    assert all(canary not in s for s in storage)
    assert all(canary not in c["value"] for c in cookies)
    leaked = [p for p in deployment.log_files() if canary in p.read_text(errors="replace")]
    assert leaked == []


def test_the_auditor_checks_an_entry_in_the_browser_and_sees_tampering(
    deployment: Deployment, browser: Browser, screenshots: Path, tmp_path: Path
) -> None:
    lu = deployment.consoles["LU"]
    with officer(browser, lu, "lu-auditor") as page:
        page.goto(f"{lu.url}/audit")
        first = page.locator("#entries tbody tr a").first
        index = int(first.inner_text())

        def checked() -> bool:
            answer = page.request.get(f"{lu.url}/audit/entries/{index}/proof.json")
            return answer.status == 200

        until(checked, what="a checkpoint covering the entry")
        page.goto(f"{lu.url}/audit/entries/{index}")
        result = page.locator("#evidence-check")
        expect(result).to_have_attribute("data-state", "verified", timeout=LIVE_TIMEOUT_MS)
        expect(page.locator("#evidence-result")).to_contain_text("Verified in this browser")
        page.screenshot(path=str(screenshots / "auditor-verified-entry.png"), full_page=True)

        def tamper(change: Callable[[dict[str, Any]], None]) -> Callable[[Route], None]:
            def handle(route: Route) -> None:
                answer = route.fetch()
                body = answer.json()
                change(body)
                route.fulfill(response=answer, body=json.dumps(body))

            return handle

        def flip_proof(body: dict[str, Any]) -> None:
            if body["hashes"]:
                body["hashes"][0] = "A" * 43 + "="
            else:
                body["leaf"] = "AAAA"

        def flip_root(body: dict[str, Any]) -> None:
            lines = body["checkpoint"].split("\n")
            lines[2] = ("A" if not lines[2].startswith("A") else "B") + lines[2][1:]
            body["checkpoint"] = "\n".join(lines)

        for change, words in ((flip_proof, "FAILED"), (flip_root, "FAILED")):
            page.route("**/proof.json", tamper(change))
            page.reload()
            expect(result).to_have_attribute("data-state", "failed", timeout=LIVE_TIMEOUT_MS)
            expect(page.locator("#evidence-result")).to_contain_text(words)
            page.unroute("**/proof.json")

        # Consistency between the checkpoint seen now and one after the log grew.
        page.goto(f"{lu.url}/audit/checkpoints")
        first_size = int(page.locator("#latest-checkpoint").get_attribute("data-size") or "0")
        with officer(browser, lu, "lu-consul") as consul:
            open_request(consul, lu, "Consistency", "Grows the log")
            consul.get_by_label("Reason").select_option("REQUEST_WITHDRAWN")
            consul.get_by_role("button", name="Cancel the request").click()
            case_state(consul).to_have_attribute("data-state", "cancelled")
        second_size = first_size

        def grown() -> bool:
            nonlocal second_size
            page.goto(f"{lu.url}/audit/checkpoints")
            second_size = int(page.locator("#latest-checkpoint").get_attribute("data-size") or "0")
            return second_size > first_size

        until(grown, what="a published checkpoint of the grown log")
        form = page.locator("#consistency-check")

        def check_consistency() -> None:
            page.get_by_label("Older tree size").fill(str(first_size))
            page.get_by_label("Newer tree size").fill(str(second_size))
            page.get_by_role("button", name="Check consistency").click()

        check_consistency()
        expect(form).to_have_attribute("data-state", "verified", timeout=LIVE_TIMEOUT_MS)
        expect(page.locator("#consistency-result")).to_contain_text(f"{second_size} entries")

        def flip_consistency(body: dict[str, Any]) -> None:
            body["hashes"] = [("A" if h[0] != "A" else "B") + h[1:] for h in body["hashes"]]

        page.route("**/consistency.json*", tamper(flip_consistency))
        check_consistency()
        expect(form).to_have_attribute("data-state", "failed", timeout=LIVE_TIMEOUT_MS)
        expect(page.locator("#consistency-result")).to_contain_text("FAILED")

        # The exported bundle verifies offline against the states' trust bundles.
        page.goto(f"{lu.url}/audit")
        with page.expect_download() as download:
            page.get_by_role("link", name="Export a bundle for pouch audit verify").click()
        exported = tmp_path / "lu-audit-bundle.json"
        download.value.save_as(exported)
    sites = deployment.sites
    verify = [sys.executable, "-m", "gateway", "audit", "verify", str(exported)]
    for state in ("LU", "BE", "FR"):
        verify += ["--bundle", str(sites[state].pki.bundle)]
    verified = subprocess.run(verify, capture_output=True, text=True, timeout=120, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "VERIFIED" in verified.stdout


def test_forms_without_their_token_are_refused_and_cookies_and_headers_are_strict(
    deployment: Deployment, browser: Browser
) -> None:
    lu = deployment.consoles["LU"]
    with officer(browser, lu, "lu-consul") as page:
        session = [c for c in page.context.cookies() if c["name"] == "__Host-pouch-session"]
        assert len(session) == 1
        assert session[0]["secure"] and session[0]["httpOnly"]
        assert session[0]["sameSite"] == "Strict"
        answer = page.request.get(f"{lu.url}/cases")
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert answer.headers["cache-control"] == "no-store"
        refused = page.request.post(
            f"{lu.url}/preferences", form={"language": "fr", "back": "/cases"}
        )
        assert refused.status == 403
        assert "CSRF_TOKEN" in refused.text()
        token = csrf_token(page)
        wrong = page.request.post(
            f"{lu.url}/preferences", form={"csrftoken": token[::-1], "back": "/cases"}
        )
        assert wrong.status == 403
        page.goto(f"{lu.url}/cases")
        page.get_by_role("button", name="Sign out").click()
        page.get_by_role("button", name="Sign out").click()  # the provider asks to confirm
        expect(page).to_have_url(re.compile(r"/signed-out(\?.*)?$"))
        page.goto(f"{lu.url}/cases")
        expect(page).to_have_url(re.compile(r"/sign-in$"))


def test_a_partner_auditor_cannot_reach_another_partnerships_entries(
    deployment: Deployment, browser: Browser
) -> None:
    lu = deployment.consoles["LU"]
    with officer(browser, lu, "lu-auditor") as page:
        page.goto(f"{lu.url}/audit?agreement={LU_FR}")
        foreign = int(page.locator("#entries tbody tr a").first.inner_text())
    with officer(browser, lu, "be-auditor-at-lu") as page:
        page.goto(f"{lu.url}/audit")
        agreements = set(page.locator("#entries tbody tr td:nth-child(5)").all_inner_texts())
        assert agreements <= {LU_BE}
        page.goto(f"{lu.url}/audit?agreement={LU_FR}")
        expect(page.locator("#entries")).to_have_count(0)
        response = page.goto(f"{lu.url}/audit/entries/{foreign}")
        assert response is not None and response.status == 404
        expect(page.locator("#reason-code")).to_have_text("NOT_FOUND")
        assert page.request.get(f"{lu.url}/audit/entries/{foreign}/proof.json").status == 404


def test_pages_are_in_french_for_a_french_speaking_officer(
    deployment: Deployment, browser: Browser
) -> None:
    be = deployment.consoles["BE"]
    context = browser.new_context(ignore_https_errors=True, locale="fr-BE")
    try:
        page = context.new_page()
        page.goto(f"{be.url}/sign-in")
        expect(page.locator("html")).to_have_attribute("lang", "fr")
        expect(page.get_by_role("heading", level=1)).to_have_text("Connexion")
        page.get_by_label("Langue").select_option("en")
        page.get_by_role("button", name="Appliquer").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    finally:
        context.close()


def test_every_page_type_passes_axe(
    deployment: Deployment, browser: Browser, screenshots: Path
) -> None:
    lu = deployment.consoles["LU"]
    found: dict[str, list[dict[str, Any]]] = {}
    context = browser.new_context(ignore_https_errors=True)
    try:
        page = context.new_page()
        page.goto(f"{lu.url}/sign-in")
        found["sign-in"] = run_axe(page)
    finally:
        context.close()
    with officer(browser, lu, "lu-consul") as page:
        case_id = open_request(page, lu, "Axe", "Checked by axe")
        found["case"] = run_axe(page)
        page.goto(f"{lu.url}/cases")
        found["desk"] = run_axe(page)
        page.goto(f"{lu.url}/cases/new")
        found["new request"] = run_axe(page)
        page.goto(f"{lu.url}/cases/{case_id}")
        page.get_by_label("Reason").select_option("REQUEST_WITHDRAWN")
        page.get_by_role("button", name="Cancel the request").click()
        case_state(page).to_have_attribute("data-state", "cancelled")
        page.goto(f"{lu.url}/cases/no-such-case")
        found["error"] = run_axe(page)
    with officer(browser, lu, "lu-auditor") as page:
        page.goto(f"{lu.url}/audit")
        found["audit log"] = run_axe(page)
        page.locator("#entries tbody tr a").first.click()
        found["audit entry"] = run_axe(page)
        page.goto(f"{lu.url}/audit/checkpoints")
        found["checkpoints"] = run_axe(page)
    with officer(browser, lu, "lu-operator") as page:
        page.goto(f"{lu.url}/operator")
        expect(page.locator("#partners")).to_contain_text("BE")
        page.screenshot(path=str(screenshots / "operator.png"), full_page=True)
        found["operator"] = run_axe(page)
    assert {name: v for name, v in found.items() if v} == {}


def test_pouch_console_check_reaches_the_gateway_and_the_provider_or_says_which_not(
    deployment: Deployment, tmp_path: Path
) -> None:
    lu = deployment.consoles["LU"]

    def check(config: Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "gateway", "console", "--config", str(config), "--check"]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    sound = check(lu.config_path)
    assert sound.returncode == 0, sound.stdout + sound.stderr
    assert sound.stdout.count("OK ") == 2 and "SERVING" in sound.stdout
    closed = tmp_path / "console.toml"
    text = lu.config_path.read_text(encoding="utf-8")
    target = deployment.sites["LU"].local_target
    closed.write_text(text.replace(target, f"127.0.0.1:{free_port()}"), encoding="utf-8")
    for name in ("oidc-client-secret",):
        shutil.copy(lu.config_path.parent / name, tmp_path / name)
    refused = check(closed)
    assert refused.returncode == 1
    assert "FAIL gateway" in refused.stdout and "UNAVAILABLE" in refused.stdout
    assert "OK   identity provider" in refused.stdout
    assert "Traceback" not in refused.stdout + refused.stderr
