"""The caller a listener's guard authenticated, handed to the handler of that call.

The guard sets exactly one of these per call before the handler runs; a handler
asking for a caller its listener does not authenticate is a bug, not a rejection.
"""

from __future__ import annotations

from contextvars import ContextVar

from gateway.trust.peer import AuthenticatedPeer
from gateway.trust.principal import Principal

_peer: ContextVar[AuthenticatedPeer] = ContextVar("pouch_authenticated_peer")
_principal: ContextVar[Principal] = ContextVar("pouch_principal")


def set_peer(peer: AuthenticatedPeer) -> None:
    _peer.set(peer)


def set_principal(principal: Principal) -> None:
    _principal.set(principal)


def authenticated_peer() -> AuthenticatedPeer:
    try:
        return _peer.get()
    except LookupError:
        raise RuntimeError("handler reached without an authenticated peer") from None


def current_principal() -> Principal:
    try:
        return _principal.get()
    except LookupError:
        raise RuntimeError("handler reached without an authenticated principal") from None
