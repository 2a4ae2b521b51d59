"""The console's parts on their own: configuration, sessions, languages, dates, forms.

The pages themselves are tested in a real browser (tests/browser/test_console.py);
these are the rules a browser cannot see: what a bad configuration file is told, when a
session ends, how a language is chosen, and that no POST route escapes the form token.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from babel.messages.pofile import read_po
from starlette.routing import Route
from starlette.testclient import TestClient

from console import i18n
from console.config import ConsoleConfigError, check_console_files, load_console_settings
from console.sessions import MAX_ANONYMOUS, SESSION_COOKIE, Officer, SessionStore, cookie_header
from console.web import build_app
from gateway.pki.layout import init_state, issue_client, issue_server
from pouch_devtools.demo.deployment import free_port

ROOT = Path(__file__).resolve().parents[3]


def write_config(folder: Path, **changes: str) -> Path:
    for name in ("server.crt", "server.key", "ca.crt", "client.crt", "client.key", "bundle.json"):
        (folder / name).write_text("x", encoding="utf-8")
    (folder / "secret").write_text("s3cret\n", encoding="utf-8")
    values = {
        "state": '"BE"',
        "listen": '"127.0.0.1:8443"',
        "public_url": '"https://console.be.example:8443"',
        "time_zone": '"Europe/Brussels"',
        "target": '"127.0.0.1:7001"',
        "issuer": '"https://idp.be.example"',
        "scopes": '["representation:act", "audit:read"]',
        **changes,
    }
    path = folder / "console.toml"
    path.write_text(
        f"""[console]
state = {values["state"]}
listen = {values["listen"]}
public_url = {values["public_url"]}
tls_certificate = "server.crt"
tls_key = "server.key"
time_zone = {values["time_zone"]}

[gateway]
target = {values["target"]}
ca = "ca.crt"
certificate = "client.crt"
key = "client.key"
trust_bundle = "bundle.json"

[oidc]
issuer = {values["issuer"]}
client_id = "pouch-console"
client_secret_file = "secret"
scopes = {values["scopes"]}
""",
        encoding="utf-8",
    )
    return path


def test_a_sound_configuration_loads_with_paths_from_its_folder(tmp_path: Path) -> None:
    settings = load_console_settings(write_config(tmp_path))
    assert settings.console.state == "BE"
    assert settings.gateway.ca == tmp_path / "ca.crt"
    assert settings.client_secret == "s3cret"
    assert settings.console.public_url == "https://console.be.example:8443"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"state": '"be"'}, "console.state"),
        ({"listen": '"127.0.0.1:99999"'}, "console.listen"),
        ({"public_url": '"http://console.be.example"'}, "console.public_url"),
        ({"time_zone": '"Mars/Olympus"'}, "console.time_zone"),
        ({"issuer": '"https://idp.be.example?x=1"'}, "oidc.issuer"),
        ({"scopes": '["civil:submit"]'}, "oidc.scopes"),
    ],
)
def test_a_rule_broken_is_one_line_naming_the_key(
    tmp_path: Path, change: dict[str, str], named: str
) -> None:
    with pytest.raises(ConsoleConfigError) as refused:
        load_console_settings(write_config(tmp_path, **change))
    message = str(refused.value)
    assert named in message and "\n" not in message and "Error" not in message


def test_a_missing_file_and_an_unknown_key_are_named(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    (tmp_path / "client.key").unlink()
    with pytest.raises(ConsoleConfigError, match=r"gateway\.key: .*client\.key"):
        load_console_settings(path)
    path.write_text(path.read_text() + "\n[extra]\nx = 1\n", encoding="utf-8")
    (tmp_path / "client.key").write_text("x")
    with pytest.raises(ConsoleConfigError, match="extra"):
        load_console_settings(path)
    with pytest.raises(ConsoleConfigError, match="no such configuration file"):
        load_console_settings(tmp_path / "absent.toml")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def officer(expires_at: float) -> Officer:
    return Officer("be-consul", "B. Consul", frozenset(), "token", token_expires_at=expires_at)


def test_a_session_ends_after_its_idle_time_and_at_the_tokens_expiry() -> None:
    clock = Clock()
    store = SessionStore(idle_s=900, clock=clock)
    session = store.new()
    session.officer = officer(clock.now + 3600)
    clock.now += 899
    assert store.get(session.id) is session  # used: its idle clock restarts
    clock.now += 899
    assert store.get(session.id) is session
    clock.now += 901
    assert store.get(session.id) is None
    again = store.new()
    again.officer = officer(clock.now + 60)
    clock.now += 61
    assert store.get(again.id) is None
    assert store.get("") is None and store.get("unknown") is None


def test_visitors_not_signed_in_never_push_out_an_officers_session() -> None:
    store = SessionStore(idle_s=900, clock=Clock())
    signed_in = store.new()
    signed_in.officer = officer(2_000_000.0)
    for _ in range(MAX_ANONYMOUS + 10):
        store.new(anonymous=True)
    assert store.get(signed_in.id) is signed_in
    assert len(store) == MAX_ANONYMOUS + 1


def test_session_cookies_carry_every_flag() -> None:
    header = cookie_header("__Host-pouch-session", "abc", same_site="Strict", max_age=900)
    assert (
        header == "__Host-pouch-session=abc; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=900"
    )


@pytest.mark.parametrize(
    ("chosen", "accept", "language"),
    [
        (None, "fr-BE,fr;q=0.9,en;q=0.8", "fr"),
        (None, "de-DE,de;q=0.9", "en"),
        (None, "nl-BE, fr;q=0.5", "fr"),
        ("en", "fr-FR", "en"),
        ("xx", "fr", "fr"),
        (None, None, "en"),
    ],
)
def test_the_officers_choice_comes_first_then_the_browsers(
    chosen: str | None, accept: str | None, language: str
) -> None:
    assert i18n.choose_language(chosen, accept) == language


def test_a_date_is_local_with_the_utc_instant_on_hover() -> None:
    moment = datetime(2026, 12, 6, 21, 5, tzinfo=UTC)
    html = str(i18n.when(moment, "fr", "Europe/Brussels"))
    assert 'datetime="2026-12-06T21:05:00Z"' in html
    assert 'title="2026-12-06T21:05:00Z UTC"' in html
    assert "22:05" in html  # Brussels is UTC+1 in December
    assert str(i18n.when(None, "en", "UTC")) == "—"


def test_every_message_of_the_pages_has_a_french_translation() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/console_messages.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with (ROOT / "console" / "locale" / "fr" / "LC_MESSAGES" / "console.po").open("rb") as f:
        french = {m.id: m.string for m in read_po(f, locale="fr") if m.id}
    assert len(french) > 200
    # Placeholders survive translation.
    for message, translated in french.items():
        for placeholder in ("{size}", "{root}", "{reason}", "{event}", "%(name)s", "%(id)s"):
            if isinstance(message, str) and placeholder in message:
                assert isinstance(translated, str) and placeholder in translated, message


def real_config_at(tmp_path: Path, **changes: str) -> Path:
    """A console of state BE whose PKI is real; no gateway or provider runs."""
    now = datetime.now(UTC)
    state = init_state(
        "BE",
        tmp_path / "pki",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        peer_endpoint="127.0.0.1:1",
        crl_location=None,
        now=now,
    )
    issue_client(state.root, "console", now=now)
    cert, key = issue_server(
        state.root, "console", dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=now
    )
    path = write_config(tmp_path, **changes)
    (tmp_path / "secret").chmod(0o600)
    text = path.read_text()
    for name, real in {
        "server.crt": cert,
        "server.key": key,
        "ca.crt": state.ca_cert,
        "client.crt": state.client_cert("console"),
        "client.key": state.client_key("console"),
        "bundle.json": state.bundle,
    }.items():
        text = text.replace(f'"{name}"', f'"{real}"')
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def real_config(tmp_path: Path) -> Path:
    return real_config_at(tmp_path)


@pytest.fixture
def console_app(real_config: Path) -> Any:
    return build_app(load_console_settings(real_config))


def test_key_files_must_be_private_and_match_their_certificates(real_config: Path) -> None:
    settings = load_console_settings(real_config)
    now = datetime.now(UTC)
    check_console_files(settings, now=now)
    settings.gateway.key.chmod(0o644)
    with pytest.raises(ConsoleConfigError, match=r"gateway\.key: .* mode 0644; .*chmod 600"):
        check_console_files(settings, now=now)
    settings.gateway.key.chmod(0o600)
    swapped = real_config.read_text().replace(
        str(settings.console.tls_key), str(settings.gateway.key)
    )
    real_config.write_text(swapped, encoding="utf-8")
    with pytest.raises(ConsoleConfigError, match=r"console\.tls_key: "):
        check_console_files(load_console_settings(real_config), now=now)


def test_no_post_route_escapes_the_form_token(console_app: Any) -> None:
    routes = console_app.app.router.routes
    posts = [r for r in routes if isinstance(r, Route) and "POST" in (r.methods or ())]
    assert len(posts) >= 8
    assert [r.path for r in posts if not getattr(r.endpoint, "pouch_form_checked", False)] == []


def test_a_form_needs_its_sessions_token_and_sends_back_only_to_a_local_path(
    console_app: Any,
) -> None:
    with TestClient(console_app, base_url="https://testserver") as client:
        page = client.get("/sign-in")
        assert page.status_code == 200
        assert "default-src 'none'" in page.headers["content-security-policy"]
        token = re.search(r'name="csrftoken" value="([^"]+)"', page.text)
        assert token is not None
        sent = {"csrftoken": token.group(1), "language": "fr"}
        for back, target in (
            ("/cases", "/cases"),
            ("//evil.example/x", "/"),
            ("/\\evil.example", "/"),
            ("https://evil.example", "/"),
        ):
            answer = client.post(
                "/preferences", data={**sent, "back": back}, follow_redirects=False
            )
            assert (answer.status_code, answer.headers["location"]) == (303, target)
        assert "Langue" in client.get("/sign-in").text  # the choice was kept
        assert client.post("/preferences", data={"language": "en"}).status_code == 403
        wrong = {"csrftoken": token.group(1)[::-1], "language": "en"}
        assert client.post("/preferences", data=wrong).status_code == 403
    registry = console_app.console.metrics.registry
    assert registry.get_sample_value("pouch_console_forms_refused_total") == 2
    refused = {"route": "/preferences", "method": "POST", "status": "403"}
    assert registry.get_sample_value("pouch_console_requests_total", refused) == 2
    assert registry.get_sample_value("pouch_console_sessions") == 1
    with TestClient(console_app, base_url="https://testserver") as stranger:
        # Another visitor's token is not this visitor's.
        stranger.get("/sign-in")
        assert stranger.post("/preferences", data=sent).status_code == 403


def test_pouch_console_refuses_a_bad_file_with_one_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, listen='"nowhere"')
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "console", "--config", str(path), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "console.listen" in lines[0] and "Traceback" not in done.stderr


# The console is a client of the gateway: it reads the contract, the trust bundle and a
# few pure rules, never the server, its storage or its delivery.
CONSOLE_MAY_NOT_IMPORT = (
    "gateway.server",
    "gateway.store",
    "gateway.delivery",
    "gateway.cli",
    "gateway.policy",
    "gateway.agreements",
)


def test_the_console_reaches_the_gateway_only_through_its_api() -> None:
    found = []
    for path in sorted((ROOT / "console").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                if name.startswith(CONSOLE_MAY_NOT_IMPORT) or (
                    name.startswith("gateway.exchanges")
                    and name != "gateway.exchanges.case_machine"
                ):
                    found.append(f"{path.relative_to(ROOT)}: {name}")
    assert found == []


def console_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The structured events the console logged (``console.web.event``)."""
    return [r.__dict__["pouch_event"] for r in caplog.records if "pouch_event" in r.__dict__]


def signed_in(app: Any, client: TestClient, scopes: frozenset[str]) -> None:
    """An officer's session put straight into the console's store (no provider runs)."""
    session = app.console.sessions.new()
    session.officer = Officer("be-consul", "B. Consul", scopes, "token", time.time() + 600)
    client.cookies.set(SESSION_COOKIE, session.id)


@pytest.fixture
def unreachable_app(tmp_path: Path) -> Any:
    """A console whose gateway and identity provider listen nowhere."""
    closed = free_port()
    path = real_config_at(
        tmp_path, target=f'"127.0.0.1:{closed}"', issuer=f'"https://127.0.0.1:{closed}"'
    )
    return build_app(load_console_settings(path))


def test_an_unreachable_identity_provider_is_a_page_counted_and_logged(
    unreachable_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    registry = unreachable_app.console.metrics.registry
    with TestClient(unreachable_app, base_url="https://testserver") as client:
        answer = client.get("/auth/login", follow_redirects=False)
        assert answer.status_code == 502
        assert "The identity provider could not be reached." in answer.text
        expired = client.get("/auth/callback?code=x&state=y")
        assert expired.status_code == 400
        # Signing out does not wait on the provider: the session ends here all the same.
        signed_in(unreachable_app, client, frozenset({"admin"}))
        token = re.search(r'name="csrftoken" value="([^"]+)"', client.get("/signed-out").text)
        assert token is not None
        out = client.post("/sign-out", data={"csrftoken": token.group(1)}, follow_redirects=False)
        assert (out.status_code, out.headers["location"]) == (303, "/signed-out")
        assert client.get("/cases", follow_redirects=False).headers["location"] == "/sign-in"
    outcomes = {"provider_unreachable": 1.0, "expired": 1.0}
    for outcome, count in outcomes.items():
        assert (
            registry.get_sample_value("pouch_console_sign_ins_total", {"outcome": outcome}) == count
        )
    events = [getattr(r, "pouch_event", {}).get("event") for r in caplog.records]
    assert {"console_sign_in_unavailable", "console_sign_in_refused"} <= set(events)
    assert "console_sign_out_local_only" in events


def test_an_unreachable_gateway_is_a_page_counted_and_logged(
    unreachable_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(unreachable_app, base_url="https://testserver") as client:
        signed_in(unreachable_app, client, frozenset({"representation:act"}))
        answer = client.get("/cases")
    assert answer.status_code == 502
    assert "The gateway could not be reached" in answer.text
    registry = unreachable_app.console.metrics.registry
    labels = {"status": "UNAVAILABLE", "reason": "-"}
    assert registry.get_sample_value("pouch_console_gateway_refusals_total", labels) == 1
    (refused,) = [e for e in console_events(caplog) if e.get("event") == "console_refused"]
    assert refused == {
        "event": "console_refused",
        "route": "/cases",
        "status": "UNAVAILABLE",
    }


def test_a_live_stream_the_gateway_cannot_serve_says_so_counted_and_logged(
    unreachable_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(unreachable_app, base_url="https://testserver") as client:
        signed_in(unreachable_app, client, frozenset({"representation:act"}))
        with client.stream("GET", "/cases/c-1/events") as answer:
            body = "".join(answer.iter_text())
    assert "event: refused" in body
    registry = unreachable_app.console.metrics.registry
    labels = {"status": "UNAVAILABLE", "reason": "-"}
    assert registry.get_sample_value("pouch_console_gateway_refusals_total", labels) == 1
    routes = [e.get("route") for e in console_events(caplog) if e.get("event") == "console_refused"]
    assert routes == ["/cases/{case_id}/events"]
