"""A local caller as the gateway sees it once its token has been verified.

A :class:`Principal` is only built from a :class:`~gateway.pki.tokens.VerifiedToken`,
which already passed every check, including the binding to the client certificate
presented on the connection. Scope strings the gateway does not know are dropped,
never guessed at; no scope implies another (``admin`` does not grant ``civil:submit``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.errors import PermissionRejected
from gateway.pki.tokens import VerifiedToken


class Scope(StrEnum):
    """What a local caller's token may allow, DESIGN.md section 3."""

    CIVIL_SUBMIT = "civil:submit"
    IDENTITY_QUERY = "identity:query"
    REPRESENTATION_REQUEST = "representation:request"
    REPRESENTATION_ACT = "representation:act"
    AUDIT_READ = "audit:read"
    ADMIN = "admin"


_SCOPES_BY_VALUE: dict[str, Scope] = {scope.value: scope for scope in Scope}


@dataclass(frozen=True)
class Principal:
    """An authenticated local caller of ``state`` (ISO 3166-1 alpha-2)."""

    state: str
    subject: str
    client_id: str | None
    scopes: frozenset[Scope]
    cert_thumbprint: str
    # Set for a partner state's auditor: limits what the audit API shows.
    partner_state: str | None = None

    def __post_init__(self) -> None:
        if not (len(self.state) == 2 and self.state.isascii() and self.state.isupper()):
            raise ValueError("a state is named by its ISO 3166-1 alpha-2 code")
        if not self.subject:
            raise ValueError("a principal needs a subject")
        if not self.cert_thumbprint:
            raise ValueError("a principal is always bound to a client certificate")

    @property
    def acting(self) -> str:
        """Who acted, as the audit log names it: the token's subject, and the client it
        acted through when that is another (an officer signed in at the console):
        ``be-consul(client:pouch-console)``, one token as an audit field must be."""
        if self.client_id and self.client_id != self.subject:
            return f"{self.subject}(client:{self.client_id})"
        return self.subject

    @classmethod
    def from_token(cls, state: str, verified: VerifiedToken) -> Principal:
        return cls(
            state=state,
            subject=verified.subject,
            client_id=verified.client_id,
            scopes=frozenset(_SCOPES_BY_VALUE[s] for s in verified.scopes if s in _SCOPES_BY_VALUE),
            cert_thumbprint=verified.cert_thumbprint,
            partner_state=verified.partner_state,
        )


def require_scope(principal: Principal, scope: Scope) -> None:
    """Raise :class:`~gateway.errors.PermissionRejected` unless ``principal`` has ``scope``."""
    if scope not in principal.scopes:
        raise PermissionRejected(f"the token lacks the scope '{scope}'", reason="SCOPE_MISSING")
