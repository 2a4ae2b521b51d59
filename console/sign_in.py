"""Sign-in at the state's identity provider, and sign-out.

``/auth/login`` starts the authorization code flow with PKCE (Authlib keeps its state,
nonce and verifier in a login entry of ten minutes, :data:`LOGIN_COOKIE`);
``/auth/callback`` finishes it, makes a new session for the officer (a new id: a
session fixed before sign-in is dropped) and answers a page rather than a redirect, so
the Strict session cookie is sent on the next navigation. ``/sign-out`` drops the
session and ends the one at the provider.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from console.auth import PROVIDER_UNREACHABLE, OAuthError, SignInFailed, officer_from
from console.sessions import LOGIN_COOKIE, LOGIN_LIFETIME_S, SESSION_COOKIE, cookie_header
from console.web import console_of, event, form_route, language_of, render, session_of


async def sign_in_page(request: Request) -> Response:
    session = session_of(request)
    if session is not None and session.officer is not None:
        return RedirectResponse("/", status_code=303)
    return render(request, "sign_in.html", issuer=console_of(request).settings.oidc.issuer)


async def login(request: Request) -> Response:
    """Start a sign-in: a fresh login entry (Lax cookie) holding Authlib's state."""
    console = console_of(request)
    entry = console.sessions.new(anonymous=True)
    request.scope["session"] = entry.login
    extra: dict[str, str] = {}
    if console.settings.oidc.resource:
        extra["resource"] = console.settings.oidc.resource
    language = language_of(request)
    try:
        response: Response = await console.oauth.authorize_redirect(
            request,
            f"{console.settings.console.public_url}/auth/callback",
            ui_locales=language,
            **extra,
        )
    except (OAuthError, ValueError, *PROVIDER_UNREACHABLE) as e:
        console.sessions.drop(entry.id)
        return _provider_unreachable(request, e)
    response.headers.append(
        "set-cookie",
        cookie_header(LOGIN_COOKIE, entry.id, same_site="Lax", max_age=int(LOGIN_LIFETIME_S)),
    )
    return response


async def callback(request: Request) -> Response:
    console = console_of(request)
    entry = console.sessions.get(request.cookies.get(LOGIN_COOKIE))
    if entry is None or not entry.login:
        event("console_sign_in_refused", level=logging.WARNING, reason="LOGIN_EXPIRED")
        console.metrics.sign_ins.labels("expired").inc()
        return render(request, "error.html", status_code=400, refusal=None, problem="login-expired")
    request.scope["session"] = entry.login
    try:
        token = await console.oauth.authorize_access_token(request)
        officer = officer_from(token)
    except PROVIDER_UNREACHABLE as e:
        console.sessions.drop(entry.id)
        return _provider_unreachable(request, e)
    except (OAuthError, SignInFailed) as e:
        event("console_sign_in_refused", level=logging.WARNING, error=type(e).__name__)
        console.metrics.sign_ins.labels("refused").inc()
        return render(request, "error.html", status_code=401, refusal=None, problem="sign-in")
    finally:
        console.sessions.drop(entry.id)
    old = session_of(request)
    session = console.sessions.new()
    session.officer = officer
    if old is not None:
        session.language, session.time_zone = old.language, old.time_zone
        console.sessions.drop(old.id)
    request.scope["pouch_session"] = session
    event("console_sign_in", officer=officer.subject)
    console.metrics.sign_ins.labels("signed_in").inc()
    idle = console.settings.console.session_idle_minutes * 60
    # A page, not a redirect: after the provider's cross-site redirect, a Strict cookie
    # is sent only on a navigation this site starts.
    response = render(request, "signed_in.html")
    response.headers.append(
        "set-cookie", cookie_header(SESSION_COOKIE, session.id, same_site="Strict", max_age=idle)
    )
    response.headers.append(
        "set-cookie", cookie_header(LOGIN_COOKIE, "", same_site="Lax", max_age=0)
    )
    return response


async def sign_out(request: Request) -> Response:
    console = console_of(request)
    session = session_of(request)
    id_token = ""
    if session is not None:
        if session.officer is not None:
            id_token = session.officer.id_token
            event("console_sign_out", officer=session.officer.subject)
        console.sessions.drop(session.id)
    target = "/signed-out"
    try:
        metadata = await console.oauth.load_server_metadata()
        end_session = metadata.get("end_session_endpoint")
    except (OAuthError, ValueError, *PROVIDER_UNREACHABLE) as e:
        # Signed out here all the same; the provider's own session outlives it.
        event("console_sign_out_local_only", level=logging.WARNING, error=type(e).__name__)
        end_session = None
    if isinstance(end_session, str) and id_token:
        result = await console.oauth.create_logout_url(
            post_logout_redirect_uri=f"{console.settings.console.public_url}/signed-out",
            id_token_hint=id_token,
        )
        target = result["url"]
    response = RedirectResponse(target, status_code=303)
    response.headers.append(
        "set-cookie", cookie_header(SESSION_COOKIE, "", same_site="Strict", max_age=0)
    )
    return response


def _provider_unreachable(request: Request, error: Exception) -> Response:
    event("console_sign_in_unavailable", level=logging.WARNING, error=type(error).__name__)
    console_of(request).metrics.sign_ins.labels("provider_unreachable").inc()
    return render(request, "error.html", status_code=502, refusal=None, problem="idp")


async def signed_out(request: Request) -> Response:
    return render(request, "signed_out.html")


routes = [
    Route("/sign-in", sign_in_page),
    Route("/auth/login", login),
    Route("/auth/callback", callback),
    form_route("/sign-out", sign_out),
    Route("/signed-out", signed_out),
]
