"""The console's identity provider, run for real: oidc-provider under Node.js.

A state LU's PKI (``pouch pki init``'s code) issues the provider's server certificate
for 127.0.0.1 and two client certificates, ``console`` and ``other-console``. The
provider runs as its own process (:class:`pouch_devtools.oidc_provider.IdentityProvider`);
a relying party does the authorization code flow with PKCE through Authlib over mutual
TLS, and an officer signs in by posting the provider's own form. What comes back must
pass the gateway's own :class:`gateway.pki.tokens.TokenVerifier`.

Each test signs in with its own browser (its own cookies) and its own code; the provider
process is shared by the module (about 0.5 s to start).

Without ``npm ci --prefix devtools/node`` the tests are skipped, and fail under
``CI=true``, where a skipped sign-in test would hide a broken console.
"""

from __future__ import annotations

import ssl
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import jwt
import pytest

# Authlib ships no type information; whether pyproject's mypy section ignores it or not.
from authlib.common.security import generate_token  # type: ignore[import-untyped, unused-ignore]
from authlib.deprecate import AuthlibDeprecationWarning  # type: ignore[import-untyped, unused-ignore]
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from gateway.errors import AuthenticationRejected
from gateway.pki.keys import certificate_der, load_certificate
from gateway.pki.layout import init_state, issue_client, issue_server
from gateway.pki.tokens import JwksKeys, TokenVerifier
from pouch_devtools.demo.deployment import free_port
from pouch_devtools.oidc_provider import (
    Account,
    Client,
    IdentityProvider,
    ProviderTls,
)
from tests.needs import require_chromium, require_node_modules

with warnings.catch_warnings():
    # Authlib 1.9 warns that it runs on httpx rather than httpx2; httpx is what we have.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import (  # type: ignore[import-untyped, unused-ignore]
        OAuth2Client,
        OAuthError,
    )

STATE = "LU"
RESOURCE = "pouch:LU"
CLIENT_ID = "console"
CLIENT_SECRET = "console-secret-for-tests"
POST_CLIENT_ID = "console-secret-in-body"
REDIRECT_URI = "https://127.0.0.1:1/auth/callback"
SIGNED_OUT_URI = "https://127.0.0.1:1/signed-out"
CLERK = Account(
    username="clerk.lu",
    password="correct horse battery staple",
    name="Anne Clerk",
    scopes=("civil:submit", "identity:query"),
)
AUDITOR = Account(
    username="auditor.be",
    password="another long passphrase",
    name="Bert Auditor",
    scopes=("audit:read",),
    partner_state="BE",
)
REQUESTED = "openid profile civil:submit identity:query admin"


@dataclass(frozen=True)
class Pki:
    ca: Path
    console_cert: Path
    console_key: Path
    other_cert: Path
    other_key: Path
    stranger_cert: Path
    stranger_key: Path
    server_cert: Path
    server_key: Path

    def tls(self, *, client: str | None) -> ssl.SSLContext:
        """Trusting LU's CA; presenting ``console``'s, ``other``'s or ``stranger``'s (FR's
        CA) certificate, or none."""
        context = ssl.create_default_context(cafile=str(self.ca))
        identities = {
            "console": (self.console_cert, self.console_key),
            "other": (self.other_cert, self.other_key),
            "stranger": (self.stranger_cert, self.stranger_key),
        }
        if client is not None:
            cert, key = identities[client]
            context.load_cert_chain(str(cert), str(key))
        return context


@dataclass(frozen=True)
class Running:
    provider: IdentityProvider
    pki: Pki
    discovery: dict[str, Any]
    jwks_file: Path

    def relying_party(
        self,
        *,
        client: str | None = "console",
        client_id: str = CLIENT_ID,
        secret: str = CLIENT_SECRET,
        auth_method: str = "client_secret_basic",
    ) -> OAuth2Client:
        """The console as a relying party, presenting ``client``'s certificate."""
        return OAuth2Client(
            client_id=client_id,
            client_secret=secret,
            token_endpoint_auth_method=auth_method,
            scope=REQUESTED,
            redirect_uri=REDIRECT_URI,
            code_challenge_method="S256",
            verify=self.pki.tls(client=client),
            timeout=10.0,
        )

    def browser(self) -> httpx.Client:
        """An officer's browser: its own cookies, no client certificate."""
        return httpx.Client(verify=self.pki.tls(client=None), timeout=10.0)

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(
            JwksKeys.from_file(self.jwks_file),
            issuer=self.provider.issuer,
            audience=RESOURCE,
            clock=time.time,
        )


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """LU's PKI and its provider, shared by the module (the process is read-only to the
    tests: each signs in with its own browser and redeems its own code)."""
    require_node_modules()
    root = tmp_path_factory.mktemp("identity-provider")
    now = datetime.now(UTC)
    directory = init_state(
        STATE,
        root / "pki",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        peer_endpoint="127.0.0.1:1",
        crl_location=None,
        now=now,
    )
    server_cert, server_key = issue_server(
        directory.root,
        "identity-provider",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        now=now,
    )
    console_cert, console_key = issue_client(directory.root, "console", now=now)
    other_cert, other_key = issue_client(directory.root, "other-console", now=now)
    stranger = init_state(
        "FR",
        root / "stranger",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        peer_endpoint="127.0.0.1:1",
        crl_location=None,
        now=now,
    )
    stranger_cert, stranger_key = issue_client(stranger.root, "console", now=now)
    pki = Pki(
        directory.ca_cert,
        console_cert,
        console_key,
        other_cert,
        other_key,
        stranger_cert,
        stranger_key,
        server_cert,
        server_key,
    )
    provider = IdentityProvider(
        root / "idp",
        tls=ProviderTls(cert=server_cert, key=server_key, client_ca=directory.ca_cert),
        resource=RESOURCE,
        clients=[
            Client(
                CLIENT_ID,
                CLIENT_SECRET,
                redirect_uris=(REDIRECT_URI,),
                post_logout_redirect_uris=(SIGNED_OUT_URI,),
            ),
            Client(
                POST_CLIENT_ID,
                CLIENT_SECRET,
                redirect_uris=(REDIRECT_URI,),
                token_endpoint_auth_method="client_secret_post",
            ),
        ],
        accounts=[CLERK, AUDITOR],
        access_token_ttl_s=300,
    )
    with provider:
        jwks_file = provider.write_jwks(root / "jwks.json", ca=pki.ca)
        yield Running(provider, pki, provider.discovery(ca=pki.ca), jwks_file)


class _Forms(HTMLParser):
    """The forms of a page: action, inputs by name, and which ids have a label."""

    def __init__(self) -> None:
        super().__init__()
        self.lang: str | None = None
        self.forms: list[dict[str, Any]] = []
        self.labelled: set[str] = set()
        self.inputs: list[dict[str, str | None]] = []
        self.alerts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        elif tag == "form":
            self.forms.append({"action": a.get("action"), "id": a.get("id"), "fields": {}})
        elif tag == "label" and a.get("for"):
            self.labelled.add(str(a["for"]))
        elif tag == "input":
            self.inputs.append(a)
            if self.forms and a.get("name"):
                self.forms[-1]["fields"][a["name"]] = a.get("value") or ""
        if a.get("role") == "alert":
            self.alerts += 1


def _page(html: str) -> _Forms:
    forms = _Forms()
    forms.feed(html)
    return forms


def _follow(browser: httpx.Client, url: str, *, until: str) -> httpx.Response:
    """Follow the provider's redirects until a page, or a redirect to ``until``."""
    for _ in range(10):
        response = browser.get(url)
        location = response.headers.get("location")
        if response.status_code not in (302, 303) or location is None:
            return response
        url = urljoin(url, location)
        if url.startswith(until):
            return response
    raise AssertionError("the provider redirected more than ten times")


def _post_login(
    browser: httpx.Client, login_page: httpx.Response, username: str, password: str
) -> httpx.Response:
    form = _page(login_page.text).forms[0]
    action = urljoin(str(login_page.url), form["action"])
    return browser.post(action, data={"username": username, "password": password})


def _sign_in(running: Running, rp: OAuth2Client, account: Account) -> tuple[str, str]:
    """(the redirect back to the console with the code, the PKCE verifier)."""
    verifier = generate_token(48)
    url, _state = rp.create_authorization_url(
        running.discovery["authorization_endpoint"], code_verifier=verifier, nonce=generate_token()
    )
    with running.browser() as browser:
        login_page = _follow(browser, url, until=REDIRECT_URI)
        assert login_page.status_code == 200
        answer = _post_login(browser, login_page, account.username, account.password)
        assert answer.status_code == 303, answer.text
        back = _follow(
            browser, urljoin(str(answer.url), answer.headers["location"]), until=REDIRECT_URI
        )
    location = back.headers.get("location", "")
    assert location.startswith(REDIRECT_URI), back.text
    return location, verifier


def _console_cert_der(running: Running, which: str = "console") -> bytes:
    path = running.pki.console_cert if which == "console" else running.pki.other_cert
    return certificate_der(load_certificate(path))


def test_node_modules_are_installed() -> None:
    """A red line of its own under CI, besides every test's fixture error."""
    require_node_modules()


def test_provider_keeps_the_configured_signing_key_port_and_issuer(
    running: Running, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = {**ECAlgorithm.to_jwk(key, as_dict=True), "kid": "lu-idp-2026"}
    port = free_port()
    issuer = f"https://127.0.0.1:{port}"
    pki = running.pki
    with IdentityProvider(
        tmp_path / "idp",
        tls=ProviderTls(cert=pki.server_cert, key=pki.server_key, client_ca=pki.ca),
        resource=RESOURCE,
        clients=[Client(CLIENT_ID, CLIENT_SECRET, redirect_uris=(REDIRECT_URI,))],
        accounts=[CLERK],
        port=port,
        issuer=issuer,
        signing_jwk=jwk,
    ) as provider:
        assert provider.issuer == issuer
        assert provider.discovery(ca=pki.ca)["issuer"] == issuer
        written = JwksKeys.from_file(provider.write_jwks(tmp_path / "jwks.json", ca=pki.ca))
    assert written.kids == {"lu-idp-2026"}
    published = written.get("lu-idp-2026")
    assert published is not None
    assert published.key.public_numbers() == key.public_key().public_numbers()


def test_discovery_names_the_endpoints_and_only_s256(running: Running) -> None:
    d = running.discovery
    issuer = running.provider.issuer
    assert d["issuer"] == issuer
    for endpoint, path in [
        ("authorization_endpoint", "/auth"),
        ("token_endpoint", "/token"),
        ("jwks_uri", "/jwks"),
        ("userinfo_endpoint", "/me"),
        ("end_session_endpoint", "/session/end"),
    ]:
        assert d[endpoint] == issuer + path
    assert d["code_challenge_methods_supported"] == ["S256"]
    assert d["response_types_supported"] == ["code"]
    assert d["tls_client_certificate_bound_access_tokens"] is True
    assert set(d["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
    }


def test_officer_signs_in_and_the_gateway_accepts_the_bound_token(running: Running) -> None:
    with running.relying_party() as rp:
        back, verifier = _sign_in(running, rp, CLERK)
        token = rp.fetch_token(
            running.discovery["token_endpoint"], authorization_response=back, code_verifier=verifier
        )
    access_token = token["access_token"]
    assert jwt.get_unverified_header(access_token)["typ"] == "at+jwt"
    verified = running.verifier().verify(access_token, client_cert_der=_console_cert_der(running))
    assert verified.subject == CLERK.username
    assert verified.issuer == running.provider.issuer
    # "admin" was asked for and is not the clerk's: it is left out, not refused.
    assert verified.scopes == {"civil:submit", "identity:query"}
    assert verified.client_id == CLIENT_ID
    assert verified.partner_state is None
    assert verified.token_id
    assert set(token["scope"].split()) == {"civil:submit", "identity:query"}
    claims = jwt.decode(access_token, options={"verify_signature": False})
    assert {"sub", "aud", "scope", "client_id", "iss", "exp", "iat", "jti", "cnf"} <= set(claims)


def test_id_token_names_the_officer(running: Running) -> None:
    with running.relying_party() as rp:
        back, verifier = _sign_in(running, rp, CLERK)
        token = rp.fetch_token(
            running.discovery["token_endpoint"], authorization_response=back, code_verifier=verifier
        )
    id_token = token["id_token"]
    kid = jwt.get_unverified_header(id_token)["kid"]
    key = JwksKeys.from_file(running.jwks_file).get(kid)
    assert key is not None
    claims = jwt.decode(
        id_token, key=key, algorithms=["ES256"], audience=CLIENT_ID, issuer=running.provider.issuer
    )
    assert claims["sub"] == CLERK.username
    assert claims["name"] == CLERK.name


def test_partner_auditor_token_names_the_partner_state(running: Running) -> None:
    with running.relying_party() as rp:
        back, verifier = _sign_in(running, rp, AUDITOR)
        token = rp.fetch_token(
            running.discovery["token_endpoint"], authorization_response=back, code_verifier=verifier
        )
    verified = running.verifier().verify(
        token["access_token"], client_cert_der=_console_cert_der(running)
    )
    assert verified.partner_state == "BE"
    # None of the clerk's scopes asked for is the auditor's.
    assert verified.scopes == frozenset()


def test_wrong_password_signs_nobody_in(running: Running) -> None:
    with running.relying_party() as rp, running.browser() as browser:
        url, _ = rp.create_authorization_url(
            running.discovery["authorization_endpoint"], code_verifier=generate_token(48)
        )
        login_page = _follow(browser, url, until=REDIRECT_URI)
        refused = _post_login(browser, login_page, CLERK.username, "wrong password")
        assert refused.status_code == 200
        assert "location" not in refused.headers
        page = _page(refused.text)
        assert page.alerts == 1
        assert CLERK.password not in refused.text
        unknown = _post_login(browser, refused, "nobody", CLERK.password)
        assert unknown.status_code == 200
        assert _page(unknown.text).alerts == 1
        accepted = _post_login(browser, unknown, CLERK.username, CLERK.password)
        assert accepted.status_code == 303


def test_login_form_is_labelled_and_declares_its_language(running: Running) -> None:
    with running.relying_party() as rp, running.browser() as browser:
        url, _ = rp.create_authorization_url(
            running.discovery["authorization_endpoint"], code_verifier=generate_token(48)
        )
        login_page = _follow(browser, url, until=REDIRECT_URI)
    page = _page(login_page.text)
    assert page.lang == "en"
    assert set(page.forms[0]["fields"]) == {"username", "password"}
    for field in page.inputs:
        assert field["id"] in page.labelled, f"input {field['name']} has no label"
    assert {f["autocomplete"] for f in page.inputs} == {"username", "current-password"}


def test_wrong_client_secret_is_refused(running: Running) -> None:
    endpoint = running.discovery["token_endpoint"]
    with running.relying_party() as rp:
        back, verifier = _sign_in(running, rp, CLERK)
    with running.relying_party(secret="not-the-secret") as impostor, pytest.raises(OAuthError) as e:
        impostor.fetch_token(endpoint, authorization_response=back, code_verifier=verifier)
    assert e.value.error == "invalid_client"
    with running.relying_party() as rp:
        assert rp.fetch_token(endpoint, authorization_response=back, code_verifier=verifier)


def test_client_sending_its_secret_in_the_body_gets_a_bound_token(running: Running) -> None:
    with running.relying_party(client_id=POST_CLIENT_ID, auth_method="client_secret_post") as rp:
        back, verifier = _sign_in(running, rp, CLERK)
        token = rp.fetch_token(
            running.discovery["token_endpoint"], authorization_response=back, code_verifier=verifier
        )
    verified = running.verifier().verify(
        token["access_token"], client_cert_der=_console_cert_der(running)
    )
    assert verified.client_id == POST_CLIENT_ID


def test_token_request_with_wrong_pkce_verifier_is_refused(running: Running) -> None:
    with running.relying_party() as rp:
        back, verifier = _sign_in(running, rp, CLERK)
        endpoint = running.discovery["token_endpoint"]
        with pytest.raises(OAuthError) as refused:
            rp.fetch_token(endpoint, authorization_response=back, code_verifier=generate_token(48))
        assert refused.value.error == "invalid_grant"
        # The same code with its own verifier: the refusal was the verifier's alone.
        token = rp.fetch_token(endpoint, authorization_response=back, code_verifier=verifier)
    assert token["access_token"]


def test_authorization_request_without_pkce_is_refused(running: Running) -> None:
    with running.relying_party() as rp, running.browser() as browser:
        with_pkce, _ = rp.create_authorization_url(
            running.discovery["authorization_endpoint"], code_verifier=generate_token(48)
        )
        assert _follow(browser, with_pkce, until=REDIRECT_URI).status_code == 200
        without, _ = rp.create_authorization_url(running.discovery["authorization_endpoint"])
        answer = _follow(browser, without, until=REDIRECT_URI)
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query["error"] == ["invalid_request"]
    assert "code" not in query


def test_token_request_without_client_certificate_is_refused(running: Running) -> None:
    with running.relying_party() as rp:
        back, verifier = _sign_in(running, rp, CLERK)
    endpoint = running.discovery["token_endpoint"]
    with running.relying_party(client=None) as anonymous, pytest.raises(OAuthError) as refused:
        anonymous.fetch_token(endpoint, authorization_response=back, code_verifier=verifier)
    assert refused.value.error == "invalid_grant"
    with running.relying_party() as rp:
        token = rp.fetch_token(endpoint, authorization_response=back, code_verifier=verifier)
    assert token["access_token"]


def test_certificate_of_a_ca_not_trusted_binds_no_token(running: Running) -> None:
    with running.relying_party() as rp:
        back, verifier = _sign_in(running, rp, CLERK)
    endpoint = running.discovery["token_endpoint"]
    with running.relying_party(client="stranger") as stranger, pytest.raises(OAuthError) as refused:
        stranger.fetch_token(endpoint, authorization_response=back, code_verifier=verifier)
    assert refused.value.error == "invalid_grant"
    with running.relying_party() as rp:
        token = rp.fetch_token(endpoint, authorization_response=back, code_verifier=verifier)
    assert token["access_token"]


def test_authorization_for_another_gateway_is_refused(running: Running) -> None:
    endpoint = running.discovery["authorization_endpoint"]
    with running.relying_party() as rp, running.browser() as browser:
        ours, _ = rp.create_authorization_url(
            endpoint, code_verifier=generate_token(48), resource=RESOURCE
        )
        assert _follow(browser, ours, until=REDIRECT_URI).status_code == 200
        theirs, _ = rp.create_authorization_url(
            endpoint, code_verifier=generate_token(48), resource="pouch:BE"
        )
        answer = _follow(browser, theirs, until=REDIRECT_URI)
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query["error"] == ["invalid_target"]


def test_token_presented_with_another_certificate_fails_binding(running: Running) -> None:
    with running.relying_party() as rp:
        back, verifier = _sign_in(running, rp, CLERK)
        token = rp.fetch_token(
            running.discovery["token_endpoint"], authorization_response=back, code_verifier=verifier
        )
    verifier_ = running.verifier()
    access_token = token["access_token"]
    verifier_.verify(access_token, client_cert_der=_console_cert_der(running))
    with pytest.raises(AuthenticationRejected) as refused:
        verifier_.verify(access_token, client_cert_der=_console_cert_der(running, "other"))
    assert refused.value.reason == "TOKEN_BINDING"


def test_token_of_a_console_with_another_certificate_is_bound_to_it(running: Running) -> None:
    with running.relying_party(client="other") as rp:
        back, verifier = _sign_in(running, rp, CLERK)
        token = rp.fetch_token(
            running.discovery["token_endpoint"], authorization_response=back, code_verifier=verifier
        )
    verifier_ = running.verifier()
    verifier_.verify(token["access_token"], client_cert_der=_console_cert_der(running, "other"))
    with pytest.raises(AuthenticationRejected) as refused:
        verifier_.verify(token["access_token"], client_cert_der=_console_cert_der(running))
    assert refused.value.reason == "TOKEN_BINDING"


def test_sign_out_returns_to_the_registered_uri_and_ends_the_session(running: Running) -> None:
    with running.relying_party() as rp, running.browser() as browser:
        verifier = generate_token(48)
        url, _ = rp.create_authorization_url(
            running.discovery["authorization_endpoint"], code_verifier=verifier
        )
        login_page = _follow(browser, url, until=REDIRECT_URI)
        answer = _post_login(browser, login_page, CLERK.username, CLERK.password)
        back = _follow(
            browser, urljoin(str(answer.url), answer.headers["location"]), until=REDIRECT_URI
        )
        token = rp.fetch_token(
            running.discovery["token_endpoint"],
            authorization_response=back.headers["location"],
            code_verifier=verifier,
        )
        end = browser.get(
            running.discovery["end_session_endpoint"],
            params={
                "id_token_hint": token["id_token"],
                "post_logout_redirect_uri": SIGNED_OUT_URI,
                "state": "after-sign-out",
            },
        )
        assert end.status_code == 200
        confirm = _page(end.text).forms[0]
        signed_out = browser.post(
            urljoin(str(end.url), confirm["action"]), data={**confirm["fields"], "logout": "yes"}
        )
        assert signed_out.status_code == 303
        assert signed_out.headers["location"] == f"{SIGNED_OUT_URI}?state=after-sign-out"
        # Signed out: the next sign-in asks for the password again.
        again, _ = rp.create_authorization_url(
            running.discovery["authorization_endpoint"], code_verifier=generate_token(48)
        )
        login_again = _page(_follow(browser, again, until=REDIRECT_URI).text)
    assert "password" in login_again.forms[0]["fields"]


def test_officer_signs_in_from_a_browser_on_accessible_pages(running: Running) -> None:
    """Chromium follows what httpx does not check: the pages' CSP on the redirects after
    the form, cookies across the redirects, and axe-core's reading of each page."""
    # Imported here: the browser tests' launcher, and Playwright only when it runs.
    from playwright.sync_api import Route, sync_playwright

    from tests.browser.conftest import CHROMIUM_ARGS, run_axe

    path = require_chromium()
    verifier = generate_token(48)
    with running.relying_party() as rp:
        url, _ = rp.create_authorization_url(
            running.discovery["authorization_endpoint"], code_verifier=verifier
        )
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(path), headless=True, args=CHROMIUM_ARGS
            )
            try:
                context = browser.new_context(ignore_https_errors=True)

                def console_callback(route: Route) -> None:
                    route.fulfill(status=200, content_type="text/html", body="<p>back</p>")

                context.route(f"{REDIRECT_URI}**", console_callback)
                page = context.new_page()
                page.goto(url)
                page.get_by_label("Username").fill(CLERK.username)
                page.get_by_label("Password").fill("wrong password")
                page.get_by_role("button", name="Sign in").click()
                assert page.get_by_role("alert").is_visible()
                # The sign-in page with its error: the first page's form and its alert.
                assert run_axe(page) == []
                page.get_by_label("Password").fill(CLERK.password)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url(f"{REDIRECT_URI}**", timeout=10_000)
                back = page.url
            finally:
                browser.close()
        token = rp.fetch_token(
            running.discovery["token_endpoint"], authorization_response=back, code_verifier=verifier
        )
    verified = running.verifier().verify(
        token["access_token"], client_cert_der=_console_cert_der(running)
    )
    assert verified.subject == CLERK.username
