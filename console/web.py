"""The console as one ASGI application: pages, sign-in, headers, errors.

Every response carries a strict Content-Security-Policy (scripts and styles from the
console itself only, nothing inline, no frames), ``no-store`` caching, no referrer and
no MIME sniffing. Every POST route is made by :func:`form_route`, which refuses a form
without the session's CSRF token (a synchronizer token kept with the session on the
server, compared in constant time) before the handler runs. Log lines name the route's
template (``/cases/{case_id}``), never a query string, a form value or a person.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console import i18n
from console.auth import make_oauth
from console.config import ConsoleSettings
from console.gateway_calls import GatewayConnection, GatewayRefusal
from console.metrics import ConsoleMetrics
from console.sessions import (
    SESSION_COOKIE,
    Officer,
    Session,
    SessionStore,
    cookie_header,
)

_log = logging.getLogger("console")


def event(name: str, *, level: int = logging.INFO, **fields: object) -> None:
    """One structured log line (``pouch serve``'s formats): ids and codes, never a value
    an officer typed, a person's data or a query string."""
    present = {k: v for k, v in fields.items() if v is not None}
    _log.log(level, name, extra={"pouch_event": {"event": name, **present}})


_HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self' {issuer}; frame-ancestors 'none'; "
    "base-uri 'none'"
)
CSRF_FIELD = "csrftoken"
_LOCAL_PATH = re.compile(r"/(?:[A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-.]+)*)?")
# Forms carry at most a note's attachments; the handler checks each one's own limit.
MAX_FORM_FILES = 5


@dataclass
class Console:
    """What every handler reaches through ``request.app.state.console``."""

    settings: ConsoleSettings
    sessions: SessionStore
    gateway: GatewayConnection
    oauth: Any
    environments: dict[str, Environment] = field(default_factory=dict)
    log_keys: tuple[str, ...] = ()
    log_origin: str = ""
    metrics: ConsoleMetrics = field(default_factory=ConsoleMetrics)


class NotSignedIn(Exception):
    pass


class NotAllowed(Exception):
    """The officer's scopes do not allow this page or action (the first scope named)."""


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def session_of(request: Request) -> Session | None:
    session: Session | None = request.scope.get("pouch_session")
    return session


def officer_of(request: Request, *any_of: str) -> Officer:
    """The signed-in officer, holding at least one of ``any_of`` when named."""
    session = session_of(request)
    if session is None or session.officer is None:
        raise NotSignedIn()
    officer = session.officer
    if any_of and not officer.scopes.intersection(any_of):
        raise NotAllowed(any_of[0])
    return officer


def language_of(request: Request) -> str:
    session = session_of(request)
    return i18n.choose_language(
        session.language if session else None, request.headers.get("accept-language")
    )


def zone_of(request: Request) -> str:
    session = session_of(request)
    if session is not None and session.time_zone:
        return session.time_zone
    return console_of(request).settings.console.time_zone


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    console = console_of(request)
    language = language_of(request)
    zone = zone_of(request)
    session = session_of(request)
    officer = session.officer if session else None
    if session is None:
        # A form needs a session to carry its token: a visitor not signed in gets one.
        session = console.sessions.new(anonymous=True)
        request.scope["pouch_session"] = session
        request.scope["pouch_new_session"] = session
    html = (
        console.environments[language]
        .get_template(template)
        .render(
            request=request,
            language=language,
            languages=i18n.LANGUAGE_NAMES,
            zone=zone,
            officer=officer,
            state=console.settings.console.state,
            csrf_field=CSRF_FIELD,
            csrf_token=session.csrf_token,
            when=lambda moment: i18n.when(moment, language, zone),
            **context,
        )
    )
    return HTMLResponse(html, status_code=status_code)


def _environment(language: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(i18n.translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


async def preferences(request: Request) -> Response:
    session = session_of(request)
    form = await request.form()
    if session is not None:
        language = form.get("language")
        if isinstance(language, str) and language in i18n.LANGUAGES:
            session.language = language
        zone = form.get("time_zone")
        if isinstance(zone, str) and i18n.is_time_zone(zone):
            session.time_zone = zone
    back = form.get("back")
    # Only a path of this console: "//host" and "/\\host" would leave it.
    target = back if isinstance(back, str) and _LOCAL_PATH.fullmatch(back) else "/"
    return RedirectResponse(target, status_code=303)


async def home(request: Request) -> Response:
    officer = officer_of(request)
    if officer.scopes & {"representation:request", "representation:act"}:
        return RedirectResponse("/cases", status_code=303)
    if "audit:read" in officer.scopes:
        return RedirectResponse("/audit", status_code=303)
    if "admin" in officer.scopes:
        return RedirectResponse("/operator", status_code=303)
    return render(request, "error.html", status_code=403, refusal=None, problem="no-scope")


# --- the application ------------------------------------------------------------------


class ConsoleApp:
    """The application as served: finds the officer's session from its cookie, adds the
    security headers, logs and counts each request."""

    def __init__(self, app: ASGIApp, console: Console) -> None:
        self.app = app
        self.console = console
        self.csp = CSP.format(issuer=console.settings.oidc.issuer)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        scope["pouch_session"] = self.console.sessions.get(request.cookies.get(SESSION_COOKIE))
        started = time.monotonic()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", self.csp.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"strict-transport-security", b"max-age=31536000"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                new = scope.get("pouch_new_session")
                if new is not None:
                    idle = self.console.settings.console.session_idle_minutes * 60
                    cookie = cookie_header(SESSION_COOKIE, new.id, same_site="Strict", max_age=idle)
                    headers.append((b"set-cookie", cookie.encode()))
                if not any(name == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            route = getattr(scope.get("route"), "path", "(static or unknown)")
            event(
                "console_request",
                method=scope.get("method"),
                route=route,
                status=status,
                seconds=round(time.monotonic() - started, 3),
            )
            self.console.metrics.requests.labels(route, scope.get("method", "?"), status).inc()


def refusal_seen(request: Request, refusal: GatewayRefusal) -> None:
    """A refusal an officer is shown, on a page or a live stream: one event, counted."""
    event(
        "console_refused",
        level=logging.WARNING,
        route=getattr(request.scope.get("route"), "path", "?"),
        status=refusal.status,
        reason=refusal.reason or None,
    )
    console_of(request).metrics.gateway_refusals.labels(refusal.status, refusal.reason or "-").inc()


def _error_handlers() -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    async def not_signed_in(request: Request, exc: Exception) -> Response:
        if request.method == "GET" and request.headers.get("accept", "").startswith(
            "text/event-stream"
        ):
            return Response(status_code=401)
        return RedirectResponse("/sign-in", status_code=303)

    async def csrf_refused(request: Request, exc: Exception) -> Response:
        event("console_form_refused", level=logging.WARNING, reason="CSRF_TOKEN")
        console_of(request).metrics.forms_refused.inc()
        return render(request, "error.html", status_code=403, refusal=None, problem="csrf")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return render(request, "error.html", status_code=403, refusal=None, problem="scope")

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayRefusal)
        refusal_seen(request, exc)
        status = 502 if exc.unreached else _HTTP_STATUS.get(exc.status, 400)
        return render(request, "error.html", status_code=status, refusal=exc, problem=None)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return render(request, "error.html", status_code=status, refusal=None, problem=str(status))

    async def unexpected(request: Request, exc: Exception) -> Response:
        route = request.scope.get("route")
        event(
            "console_error",
            level=logging.ERROR,
            route=getattr(route, "path", "?"),
            error=type(exc).__name__,
        )
        return render(request, "error.html", status_code=500, refusal=None, problem="500")

    from starlette.exceptions import HTTPException

    return {
        Exception: unexpected,
        NotSignedIn: not_signed_in,
        NotAllowed: not_allowed,
        CsrfRefused: csrf_refused,
        GatewayRefusal: refused,
        HTTPException: http_error,
    }


_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 409,
    "NOT_FOUND": 404,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
}


class CsrfRefused(Exception):
    pass


def form_route(path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> Route:
    """A POST route whose handler runs only for a form carrying the session's token."""

    async def checked(request: Request) -> Response:
        session = session_of(request)
        limit = console_of(request).settings.console.max_attachment_bytes
        form = await request.form(max_files=MAX_FORM_FILES, max_part_size=limit + 1024)
        sent = form.get(CSRF_FIELD)
        if (
            session is None
            or not isinstance(sent, str)
            or not hmac.compare_digest(sent.encode(), session.csrf_token.encode())
        ):
            raise CsrfRefused()
        return await endpoint(request)

    checked.__name__ = endpoint.__name__
    checked.pouch_form_checked = True  # type: ignore[attr-defined]
    return Route(path, checked, methods=["POST"])


def build_app(settings: ConsoleSettings) -> ConsoleApp:
    """The whole console for ``settings``."""
    from console import audit_view, case_actions, desk, operator_view, sign_in, trust

    log_origin, log_keys = trust.log_keys(settings.gateway.trust_bundle)
    console = Console(
        settings=settings,
        sessions=SessionStore(idle_s=settings.console.session_idle_minutes * 60),
        gateway=GatewayConnection(settings.gateway),
        oauth=make_oauth(settings),
        environments={language: _environment(language) for language in i18n.LANGUAGES},
        log_keys=log_keys,
        log_origin=log_origin,
    )
    all_routes: list[BaseRoute] = [
        Route("/", home),
        *sign_in.routes,
        form_route("/preferences", preferences),
        # /cases/new before /cases/{case_id}
        *case_actions.routes,
        *desk.routes,
        *audit_view.routes,
        *operator_view.routes,
        Mount("/static", app=StaticFiles(directory=_HERE / "static"), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await console.gateway.close()

    app = Starlette(routes=all_routes, exception_handlers=_error_handlers(), lifespan=lifespan)
    app.state.console = console
    console.metrics.count_sessions(lambda: len(console.sessions))
    return ConsoleApp(app, console)
