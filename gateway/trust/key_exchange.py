"""The key exchange under a peer call: which group its TLS connection negotiated.

A recording of today's traffic can be decrypted by whoever later holds a large
quantum computer if its session keys came from an elliptic-curve exchange alone
("harvest now, decrypt later"). A hybrid group such as X25519MLKEM768 joins X25519
to ML-KEM-768 (FIPS 203): the session keys stay secret while either one holds.
gRPC's TLS offers and prefers it at both ends since grpcio 1.83; a partner on an
older stack falls back to a classical group, such as ``prime256v1``.

gRPC's TLS layer puts the group's name in each call's auth context
(``ssl_negotiated_key_exchange_group``). A name that is absent, or not shaped like
one (the TLS library's own table supplies it, so that would be a bug), reads as
:data:`UNKNOWN_GROUP`; so whatever is read can label a metric. Only names in
:data:`HYBRID_KEY_EXCHANGE_GROUPS` pass :func:`require_hybrid`: an unknown group is
refused, not assumed hybrid.

Usage, in a listener's authentication stage::

    group = negotiated_group(context.auth_context())
    require_hybrid(group)  # where [peer_api] require_hybrid_key_exchange is on
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from gateway.errors import PermissionRejected

HYBRID_KEY_EXCHANGE_GROUPS = frozenset(
    {"X25519MLKEM768", "SecP256r1MLKEM768", "SecP384r1MLKEM1024"}
)
"""The post-quantum hybrid groups of TLS 1.3 (an elliptic curve joined to ML-KEM), by
the names TLS libraries report; a pure ML-KEM group is not hybrid and not listed."""

UNKNOWN_GROUP = "unknown"

AUTH_CONTEXT_KEY = "ssl_negotiated_key_exchange_group"

_GROUP_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class KeyExchangeNotHybrid(PermissionRejected):
    """A peer connection whose key exchange is not a post-quantum hybrid, where one is
    required. Retrying cannot help: the partner's TLS stack offers no hybrid group."""

    reason = "KEY_EXCHANGE_NOT_HYBRID"


def negotiated_group(auth_context: Mapping[str, Iterable[bytes]]) -> str:
    """The group name the connection's TLS handshake negotiated, or :data:`UNKNOWN_GROUP`."""
    values = list(auth_context.get(AUTH_CONTEXT_KEY, ()))
    if len(values) != 1:
        return UNKNOWN_GROUP
    name = values[0].decode("ascii", errors="replace")
    return name if _GROUP_NAME.match(name) else UNKNOWN_GROUP


def require_hybrid(group: str) -> None:
    """Refuse ``group`` unless it is one of :data:`HYBRID_KEY_EXCHANGE_GROUPS`."""
    if group not in HYBRID_KEY_EXCHANGE_GROUPS:
        raise KeyExchangeNotHybrid(
            f"the TLS connection negotiated the key exchange group {group}, which is not a "
            "post-quantum hybrid; this gateway's [peer_api] require_hybrid_key_exchange "
            f"admits only {', '.join(sorted(HYBRID_KEY_EXCHANGE_GROUPS))}"
        )
