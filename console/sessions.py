"""Officers' sessions, kept in the console's memory: the browser holds a random id only.

Two cookies, both ``Secure`` and ``HttpOnly``, named with the ``__Host-`` prefix (no
Domain, Path ``/``, so no other host or path can set or read them):

* ``__Host-pouch-session``, ``SameSite=Strict``: the signed-in officer. Its entry holds
  the officer's id, name, scopes and access token, which never leave the server, and
  ends after ``session_idle_minutes`` without a request, at the token's expiry, or at
  sign-out.
* ``__Host-pouch-login``, ``SameSite=Lax``, ten minutes: one sign-in in progress (the
  OIDC state, nonce and PKCE verifier). It must be Lax because the identity provider
  sends the browser back with a cross-site navigation, on which a Strict cookie is
  not sent.

A library session (starsessions, Starlette's signed cookie) binds one cookie with one
SameSite rule to the whole application; the sign-in needs the second, laxer one for
one path and the officer's session the strict one everywhere, hence this store.
Nothing is written to disk: a restarted console asks officers to sign in again.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

SESSION_COOKIE = "__Host-pouch-session"
LOGIN_COOKIE = "__Host-pouch-login"
LOGIN_LIFETIME_S = 600.0
MAX_SESSIONS = 10_000
# Visitors not signed in (the sign-in page's language choice): capped apart, so a flood
# of them never pushes an officer's session out.
MAX_ANONYMOUS = 2_000


@dataclass
class Officer:
    """Who is signed in, as the identity provider said; the token stays on the server."""

    subject: str
    name: str
    scopes: frozenset[str]
    access_token: str = field(repr=False)
    token_expires_at: float
    id_token: str = field(repr=False, default="")


@dataclass
class Session:
    id: str
    last_seen: float
    officer: Officer | None = None
    language: str | None = None
    time_zone: str | None = None
    # What a sign-in in progress keeps (Authlib writes its state here).
    login: dict[str, Any] = field(default_factory=dict)
    # Every form of this session carries it; a POST without it is refused.
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)


class SessionStore:
    """Sessions by id, dropped after ``idle_s`` without use, or when the officer's
    access token expires."""

    def __init__(
        self,
        *,
        idle_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._idle_s = idle_s
        self._clock = clock
        self._sessions: MutableMapping[str, Session] = {}
        self._lock = threading.Lock()

    def new(self, *, anonymous: bool = False) -> Session:
        now = self._clock()
        with self._lock:
            self._drop_expired(now)
            pool = [s for s in self._sessions.values() if (s.officer is None) == anonymous]
            if len(pool) >= (MAX_ANONYMOUS if anonymous else MAX_SESSIONS):
                oldest = min(pool, key=lambda s: s.last_seen)
                del self._sessions[oldest.id]
            session = Session(id=secrets.token_urlsafe(32), last_seen=now)
            self._sessions[session.id] = session
            return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of ``session_id``, its idle clock restarted; None if over."""
        if not session_id:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if self._expired(session, now):
                del self._sessions[session_id]
                return None
            session.last_seen = now
            return session

    def alive(self, session_id: str) -> bool:
        """Whether the session still stands, without counting this as its use."""
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            return session is not None and not self._expired(session, now)

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        if now - session.last_seen > self._idle_s:
            return True
        return session.officer is not None and now >= session.officer.token_expires_at

    def _drop_expired(self, now: float) -> None:
        for session_id in [i for i, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[session_id]


def cookie_header(name: str, value: str, *, same_site: str, max_age: int | None) -> str:
    """A ``Set-Cookie`` value with the flags every console cookie carries."""
    parts = [f"{name}={value}", "Path=/", "Secure", "HttpOnly", f"SameSite={same_site}"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)
