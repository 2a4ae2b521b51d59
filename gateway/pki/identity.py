"""How Pouch names states and the principals their CAs certify.

Guarantees:

* A state code is exactly two ASCII uppercase letters (ISO 3166-1 alpha-2 shape);
  anything else, including look-alike Unicode letters and trailing newlines, is
  refused with a :class:`ValueError` that states the rule.
* A local client name matches ``[a-z0-9][a-z0-9-]{0,62}``, so it is safe as a file
  name and as the last segment of a URI.
* Every SAN URI Pouch issues or checks is built here, so issuing and checking can
  never disagree on spelling.
"""

from __future__ import annotations

import re

_STATE_CODE = re.compile(r"[A-Z]{2}")
_CLIENT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_PREFIX = "urn:pouch:state:"


def validate_state_code(code: str) -> str:
    """``code`` if it is an ISO 3166-1 alpha-2 shaped code, else :class:`ValueError`."""
    if not isinstance(code, str) or _STATE_CODE.fullmatch(code) is None:
        raise ValueError(
            f"invalid state code {code!r}: must be ISO 3166-1 alpha-2, "
            "exactly two ASCII uppercase letters (e.g. 'FR')"
        )
    return code


def validate_client_name(name: str) -> str:
    """``name`` if it matches ``[a-z0-9][a-z0-9-]{0,62}``, else :class:`ValueError`."""
    if not isinstance(name, str) or _CLIENT_NAME.fullmatch(name) is None:
        raise ValueError(
            f"invalid client name {name!r}: must match [a-z0-9][a-z0-9-]{{0,62}} "
            "(lowercase ASCII letters, digits and hyphens, not starting with a hyphen)"
        )
    return name


def gateway_uri(state: str) -> str:
    return f"{_PREFIX}{validate_state_code(state)}:gateway"


def client_uri(state: str, name: str) -> str:
    return f"{_PREFIX}{validate_state_code(state)}:client:{validate_client_name(name)}"


def signing_uri(state: str) -> str:
    return f"{_PREFIX}{validate_state_code(state)}:signing"


def audit_uri(state: str) -> str:
    return f"{_PREFIX}{validate_state_code(state)}:audit"


def witness_uri(state: str) -> str:
    return f"{_PREFIX}{validate_state_code(state)}:witness"


def state_of_uri(uri: str) -> str | None:
    """The state a ``urn:pouch:state:<CC>:...`` URI claims, or None if it is not one."""
    if not uri.startswith(_PREFIX):
        return None
    code = uri[len(_PREFIX) : len(_PREFIX) + 2]
    if _STATE_CODE.fullmatch(code) is None or uri[len(_PREFIX) + 2 : len(_PREFIX) + 3] != ":":
        return None
    return code
