"""Sign-in at the state's identity provider: OpenID Connect code flow with PKCE (S256).

Authlib does the protocol: discovery, state, nonce, the PKCE verifier, the token
request and the ID token's signature and claims. The console's TLS client certificate
is presented at the token endpoint, so the provider binds the officer's access token to
it (RFC 8705) and the gateway accepts that token only from the console's connection.

The officer's scopes are the access token's ``scope`` claim, the ones the provider
granted for the officer's role: the console shows only what those scopes allow, and the
gateway decides every call on the same token.
"""

from __future__ import annotations

import ssl
import time
import warnings
from typing import Any

import httpx
from authlib.deprecate import AuthlibDeprecationWarning

with warnings.catch_warnings():
    # Authlib 1.9 asks for httpx2, a fork; httpx, which it still supports, is what we use.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.starlette_client import OAuth

from console.config import ConsoleSettings
from console.sessions import Officer


class SignInFailed(Exception):
    """The provider's answer could not make a session; the message names the step."""


PROVIDER_UNREACHABLE: tuple[type[Exception], ...] = (httpx.HTTPError, OSError)
"""What Authlib's calls to the provider raise when it does not answer (httpx's errors
are not ``OSError``s)."""


def provider_tls(settings: ConsoleSettings) -> ssl.SSLContext:
    """Trusting the provider's CA (or the system's), presenting the console's certificate."""
    if settings.oidc.ca is not None:
        context = ssl.create_default_context(cafile=str(settings.oidc.ca))
    else:
        context = ssl.create_default_context()
    context.load_cert_chain(str(settings.gateway.certificate), str(settings.gateway.key))
    return context


def make_oauth(settings: ConsoleSettings) -> Any:
    """The registered provider client (Authlib's Starlette app) named ``idp``."""
    oauth = OAuth()
    scopes = [
        "openid",
        "profile",
        *[s for s in settings.oidc.scopes if s not in ("openid", "profile")],
    ]
    oauth.register(
        name="idp",
        client_id=settings.oidc.client_id,
        client_secret=settings.client_secret,
        server_metadata_url=f"{settings.oidc.issuer}/.well-known/openid-configuration",
        client_kwargs={
            "scope": " ".join(scopes),
            "code_challenge_method": "S256",
            "token_endpoint_auth_method": "client_secret_basic",
            "verify": provider_tls(settings),
            "timeout": 15.0,
        },
    )
    return oauth.idp


def officer_from(token: dict[str, Any], *, now: float | None = None) -> Officer:
    """The officer of a token response Authlib has checked (ID token, nonce, issuer).

    The scopes are those the provider says it granted (the response's ``scope``); the
    access token's own signature and claims are the gateway's to check, on every call.
    """
    userinfo = token.get("userinfo")
    access_token = token.get("access_token")
    if not isinstance(userinfo, dict) or not isinstance(access_token, str):
        raise SignInFailed("the identity provider returned no ID token or no access token")
    subject = userinfo.get("sub")
    if not isinstance(subject, str) or not subject:
        raise SignInFailed("the ID token names no subject")
    scope = token.get("scope", "")
    expires_at = token.get("expires_at")
    if not isinstance(scope, str) or not isinstance(expires_at, int | float):
        raise SignInFailed("the token response names no scope or no expiry")
    name = userinfo.get("name")
    now = time.time() if now is None else now
    return Officer(
        subject=subject,
        name=name if isinstance(name, str) and name else subject,
        scopes=frozenset(s for s in scope.split(" ") if s),
        access_token=access_token,
        token_expires_at=float(min(expires_at, now + 12 * 3600)),
        id_token=str(token.get("id_token", "")),
    )


__all__ = [
    "PROVIDER_UNREACHABLE",
    "OAuthError",
    "SignInFailed",
    "make_oauth",
    "officer_from",
    "provider_tls",
]
