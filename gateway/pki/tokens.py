"""Verification of local callers' access tokens: JWTs bound to the caller's certificate.

A local caller presents a client certificate from its state's internal CA and a JWT
from the state's identity provider. :class:`TokenVerifier` accepts the token only if
every check below passes, in this order, each failing with its own stable reason
code on :class:`~gateway.errors.AuthenticationRejected`:

1. well-formed compact JWS with a JSON header (``TOKEN_MALFORMED``);
2. header ``alg`` in the allow-list; never ``none``, never HMAC (``TOKEN_ALGORITHM``);
3. header ``kid`` names a key of the JWKS (``TOKEN_KEY_UNKNOWN``);
4. header ``alg`` equals the algorithm fixed by that key's JWK (``TOKEN_ALGORITHM``);
5. signature (``TOKEN_SIGNATURE``);
6. ``exp`` present and not past, by the injected clock with leeway (``TOKEN_EXPIRED``);
7. ``nbf``, if present, not in the future; ``iat``, if present, not in the future
   (``TOKEN_NOT_YET_VALID``) and not after ``exp`` (``TOKEN_MALFORMED``);
8. ``iss`` equals the configured issuer (``TOKEN_ISSUER``);
9. ``aud`` contains the configured audience (``TOKEN_AUDIENCE``);
10. ``cnf["x5t#S256"]`` present and equal, in constant time, to the SHA-256 thumbprint
    of the presented client certificate, RFC 8705 (``TOKEN_BINDING``).

Messages name the rule that failed and never carry the token, a claim value or key
material. Keys come only from a local JWKS file (never from ``jku``/``jwk``/``x5u``
headers); every JWK must declare its ``alg``, and a key is only ever used with it.
Nothing derived from a token is cached: every call verifies from scratch.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import jwt
from jwt.exceptions import (
    InvalidAlgorithmError,
    InvalidKeyError,
    InvalidSignatureError,
    MissingRequiredClaimError,
    PyJWTError,
)
from jwt.types import Options

from gateway.errors import AuthenticationRejected

_log = logging.getLogger(__name__)

DEFAULT_ALGORITHMS: frozenset[str] = frozenset({"ES256", "EdDSA", "RS256", "PS256"})
# Asymmetric algorithms only: a JWKS is public, so an HMAC key in it would be a secret
# everybody holds.
SUPPORTED_ALGORITHMS: frozenset[str] = frozenset(
    {"ES256", "ES384", "ES512", "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)
_KEY_TYPES: Mapping[str, str] = {
    "ES256": "EC",
    "ES384": "EC",
    "ES512": "EC",
    "EdDSA": "OKP",
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
}
_EC_CURVES: Mapping[str, str] = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]
_MISSING_CLAIM_REASONS: Mapping[str, tuple[str, str]] = {
    "exp": ("TOKEN_EXPIRED", "token has no expiry"),
    "iss": ("TOKEN_ISSUER", "token has no issuer"),
    "aud": ("TOKEN_AUDIENCE", "token has no audience"),
    "sub": ("TOKEN_MALFORMED", "token has no subject"),
}
MAX_TOKEN_LENGTH = 8192
MAX_JWKS_BYTES = 1 << 20
MAX_LEEWAY_S = 300
TOKEN_CACHE_SIZE = 4096
"""Tokens whose verified claims are kept, least recently used dropped first."""


def cert_thumbprint(der: bytes) -> str:
    """RFC 8705 ``x5t#S256``: base64url, unpadded, of SHA-256 over the DER certificate."""
    digest = hashlib.sha256(der).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class InvalidJwks(ValueError):
    """A JWKS file broke a rule; the message names the file and the rule, no key data."""


@dataclass(frozen=True)
class VerifiedToken:
    """A token that passed every check, bound to the certificate it was presented with."""

    subject: str
    issuer: str
    scopes: frozenset[str]
    client_id: str | None
    expires_at: float
    cert_thumbprint: str
    token_id: str | None = None
    # A partner state's auditor: sees only what concerns agreements with that state.
    partner_state: str | None = None


class JwksSource(Protocol):
    """Where a verifier gets its keys; asked once per verification."""

    def current(self) -> JwksKeys: ...


class JwksKeys:
    """An immutable set of verification keys, indexed by ``kid``, each with a fixed alg."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, jwt.PyJWK]) -> None:
        if not keys:
            raise InvalidJwks("a JWKS needs at least one key")
        self._keys: Mapping[str, jwt.PyJWK] = MappingProxyType(dict(keys))

    @classmethod
    def from_file(cls, path: Path, *, algorithms: frozenset[str] = DEFAULT_ALGORITHMS) -> JwksKeys:
        try:
            with path.open("rb") as f:
                data = f.read(MAX_JWKS_BYTES + 1)
        except OSError as e:
            raise InvalidJwks(f"cannot read JWKS {path}: {e.strerror}") from e
        if len(data) > MAX_JWKS_BYTES:
            raise InvalidJwks(f"JWKS {path} is larger than {MAX_JWKS_BYTES} bytes")
        return cls.from_json(data, algorithms=algorithms, source=str(path))

    @classmethod
    def from_json(
        cls,
        data: bytes | str,
        *,
        algorithms: frozenset[str] = DEFAULT_ALGORITHMS,
        source: str = "JWKS",
    ) -> JwksKeys:
        try:
            document = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise InvalidJwks(f"{source} is not valid JSON") from e
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise InvalidJwks(f"{source} must be an object with a 'keys' list")
        members: list[Any] = document["keys"]
        keys: dict[str, jwt.PyJWK] = {}
        for index, member in enumerate(members):
            kid, alg = _check_jwk(member, index, algorithms=algorithms, source=source)
            if kid in keys:
                raise InvalidJwks(f"{source} holds two keys with the same kid {kid!r}")
            # One PyJWK per member rather than a PyJWKSet, which silently skips keys it
            # cannot load: a JWKS we half understand is refused, not half used.
            try:
                key = jwt.PyJWK(member, algorithm=alg)
            except (PyJWTError, ValueError, TypeError, KeyError) as e:
                raise InvalidJwks(f"{source}: key {kid!r} cannot be loaded as {alg}") from e
            if key.Algorithm.check_key_length(key.key) is not None:
                raise InvalidJwks(f"{source}: key {kid!r} is too short for {alg}")
            keys[kid] = key
        return cls(keys)

    def current(self) -> JwksKeys:
        return self

    def get(self, kid: str) -> jwt.PyJWK | None:
        return self._keys.get(kid)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)


def _check_jwk(
    member: Any, index: int, *, algorithms: frozenset[str], source: str
) -> tuple[str, str]:
    """The member's (kid, alg), if it is a public signature key we may use."""
    where = f"{source}: key #{index}"
    if not isinstance(member, dict):
        raise InvalidJwks(f"{where} is not a JSON object")
    kid = member.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidJwks(f"{where} has no 'kid'")
    alg = member.get("alg")
    if not isinstance(alg, str):
        raise InvalidJwks(f"{where} ({kid!r}) has no 'alg'; every key must fix its algorithm")
    if alg not in algorithms or alg not in SUPPORTED_ALGORITHMS:
        raise InvalidJwks(f"{where} ({kid!r}) has an algorithm outside the allow-list")
    if member.get("kty") != _KEY_TYPES[alg]:
        raise InvalidJwks(f"{where} ({kid!r}) has a key type that does not fit {alg}")
    if alg in _EC_CURVES and member.get("crv") != _EC_CURVES[alg]:
        raise InvalidJwks(f"{where} ({kid!r}) has a curve that does not fit {alg}")
    if "use" in member and member["use"] != "sig":
        raise InvalidJwks(f"{where} ({kid!r}) is not a signature key")
    if _PRIVATE_MEMBERS & member.keys():
        raise InvalidJwks(f"{where} ({kid!r}) holds private key material")
    return kid, alg


class JwksWatcher:
    """A JWKS file reloaded when it changes; a bad new file keeps the last good keys.

    The first load must succeed (the constructor raises :class:`InvalidJwks`), so a
    gateway never starts without keys. A change is a different inode, size or mtime.
    """

    def __init__(self, path: Path, *, algorithms: frozenset[str] = DEFAULT_ALGORITHMS) -> None:
        self._path = path
        self._algorithms = algorithms
        self._lock = threading.Lock()
        self._seen = self._fingerprint()
        self._keys = JwksKeys.from_file(path, algorithms=algorithms)

    def _fingerprint(self) -> tuple[int, int, int, int] | None:
        try:
            st = self._path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def current(self) -> JwksKeys:
        seen = self._fingerprint()
        if seen == self._seen:
            return self._keys
        with self._lock:
            if seen != self._seen:
                # Remember the attempt even when it fails, so a bad file is parsed
                # once per change and not on every request.
                self._seen = seen
                self._reload()
            return self._keys

    @property
    def path(self) -> Path:
        return self._path

    def reload_now(self) -> None:
        """Read the file now (a reload of the gateway): :class:`InvalidJwks` keeps the
        keys in force, as a bad change noticed by a call does."""
        with self._lock:
            self._seen = self._fingerprint()
            self._keys = JwksKeys.from_file(self._path, algorithms=self._algorithms)

    def _reload(self) -> None:
        try:
            self._keys = JwksKeys.from_file(self._path, algorithms=self._algorithms)
        except InvalidJwks as e:
            _log.warning("JWKS reload refused, keeping the previous keys: %s", e)
        else:
            _log.info("JWKS %s reloaded: %d key(s)", self._path, len(self._keys.kids))


class TokenVerifier:
    """Verifies local callers' tokens against one issuer, one audience and a JWKS."""

    def __init__(
        self,
        keys_source: JwksSource,
        *,
        issuer: str,
        audience: str,
        algorithms: frozenset[str] = DEFAULT_ALGORITHMS,
        leeway_s: int = 30,
        clock: Callable[[], float],
    ) -> None:
        if not issuer or not audience:
            raise ValueError("a token verifier needs an issuer and an audience")
        if not algorithms:
            raise ValueError("a token verifier needs at least one algorithm")
        if not algorithms <= SUPPORTED_ALGORITHMS:
            raise ValueError(
                "only asymmetric algorithms are allowed: " + ", ".join(sorted(SUPPORTED_ALGORITHMS))
            )
        if not 0 <= leeway_s <= MAX_LEEWAY_S:
            raise ValueError(f"leeway must be between 0 and {MAX_LEEWAY_S} seconds")
        self._keys_source = keys_source
        # A caller presents the same token on every call until it expires, so its
        # signature is checked once per key set (the least recently used are dropped): a
        # reloaded JWKS is another key set, and a removed key no longer verifies anything.
        # Lifetime, issuer, audience and the certificate binding are checked on every call.
        self._claims_of = functools.lru_cache(maxsize=TOKEN_CACHE_SIZE)(self._verified_claims)
        self._issuer = issuer
        self._audience = audience
        self._algorithms = frozenset(algorithms)
        self._leeway_s = leeway_s
        self._clock = clock

    def verify(self, token: str, *, client_cert_der: bytes) -> VerifiedToken:
        claims = self._claims_of(token, self._keys_source.current())
        expires_at = self._check_lifetime(claims)
        if claims["iss"] != self._issuer:
            raise _refused("TOKEN_ISSUER", "token issuer is not trusted by this gateway")
        if not _audience_contains(claims["aud"], self._audience):
            raise _refused("TOKEN_AUDIENCE", "token audience does not match this gateway")
        thumbprint = _check_binding(claims, client_cert_der)
        return VerifiedToken(
            subject=_subject(claims),
            issuer=self._issuer,
            scopes=_scopes(claims),
            client_id=_optional_string(claims, "client_id"),
            expires_at=expires_at,
            cert_thumbprint=thumbprint,
            token_id=_optional_string(claims, "jti"),
            partner_state=_partner_state(claims),
        )

    def _verified_claims(self, token: str, keys: JwksKeys) -> dict[str, Any]:
        header = _well_formed_header(token)
        alg = header.get("alg")
        if not self._is_allowed(alg):
            raise _refused("TOKEN_ALGORITHM", "token algorithm is not allowed")
        kid = header.get("kid")
        key = keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise _refused("TOKEN_KEY_UNKNOWN", "token signing key is not known to this gateway")
        if alg != key.algorithm_name:
            raise _refused("TOKEN_ALGORITHM", "token algorithm does not match its signing key")
        return _signed_claims(token, key)

    def _is_allowed(self, alg: object) -> bool:
        if not isinstance(alg, str):
            return False
        if alg.lower() == "none" or alg.upper().startswith("HS"):
            return False
        return alg in self._algorithms

    def _check_lifetime(self, claims: Mapping[str, Any]) -> float:
        now = self._clock()
        leeway = self._leeway_s
        exp = _numeric_date(claims, "exp")
        if exp is None:  # jwt.decode requires it; refused here too, not asserted
            raise _refused("TOKEN_EXPIRED", "token has no expiry")
        if exp <= now - leeway:
            raise _refused("TOKEN_EXPIRED", "token expired")
        nbf = _numeric_date(claims, "nbf")
        if nbf is not None and nbf > now + leeway:
            raise _refused("TOKEN_NOT_YET_VALID", "token is not yet valid")
        iat = _numeric_date(claims, "iat")
        if iat is not None and iat > now + leeway:
            raise _refused("TOKEN_NOT_YET_VALID", "token issue time is in the future")
        if iat is not None and iat > exp:
            raise _refused("TOKEN_MALFORMED", "token expires before it was issued")
        return exp


def _refused(reason: str, message: str) -> AuthenticationRejected:
    return AuthenticationRejected(message, reason=reason)


def _well_formed_header(token: object) -> dict[str, Any]:
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise _refused("TOKEN_MALFORMED", "token is not a well-formed JWT")
    if token.count(".") != 2:
        raise _refused("TOKEN_MALFORMED", "token is not a well-formed JWT")
    try:
        return jwt.get_unverified_header(token)
    except (PyJWTError, ValueError, RecursionError) as e:
        raise _refused("TOKEN_MALFORMED", "token is not a well-formed JWT") from e


def _signed_claims(token: str, key: jwt.PyJWK) -> dict[str, Any]:
    # Time, issuer and audience are checked afterwards, by our clock and in our order;
    # pyjwt checks the signature with the key's own algorithm and the required claims.
    options: Options = {
        "verify_signature": True,
        "require": list(_REQUIRED_CLAIMS),
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,
        "verify_iss": False,
        "verify_aud": False,
        "verify_sub": True,
        "verify_jti": True,
        "enforce_minimum_key_length": True,
    }
    try:
        return jwt.decode(token, key=key, algorithms=[key.algorithm_name], options=options)
    except InvalidAlgorithmError as e:
        raise _refused("TOKEN_ALGORITHM", "token algorithm does not match its signing key") from e
    except (InvalidSignatureError, InvalidKeyError) as e:
        raise _refused("TOKEN_SIGNATURE", "token signature is invalid") from e
    except MissingRequiredClaimError as e:
        reason, message = _MISSING_CLAIM_REASONS.get(
            e.claim, ("TOKEN_MALFORMED", "token lacks a required claim")
        )
        raise _refused(reason, message) from e
    except (PyJWTError, ValueError, RecursionError) as e:
        raise _refused("TOKEN_MALFORMED", "token claims are not well-formed") from e


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int, and json.loads accepts NaN and Infinity: none is a date.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refused("TOKEN_MALFORMED", f"token claim '{name}' is not a NumericDate")
    if not math.isfinite(value):
        raise _refused("TOKEN_MALFORMED", f"token claim '{name}' is not a NumericDate")
    return float(value)


def _audience_contains(aud: object, audience: str) -> bool:
    if isinstance(aud, str):
        return aud == audience
    if isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        return audience in aud
    return False


def _check_binding(claims: Mapping[str, Any], client_cert_der: bytes) -> str:
    cnf = claims.get("cnf")
    bound = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
    if not isinstance(bound, str) or not bound:
        raise _refused("TOKEN_BINDING", "token is not bound to a client certificate")
    if not client_cert_der:
        raise _refused("TOKEN_BINDING", "no client certificate was presented with the token")
    thumbprint = cert_thumbprint(client_cert_der)
    if not hmac.compare_digest(bound.encode("utf-8"), thumbprint.encode("ascii")):
        raise _refused("TOKEN_BINDING", "token is bound to a different client certificate")
    return thumbprint


def _subject(claims: Mapping[str, Any]) -> str:
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub:
        raise _refused("TOKEN_MALFORMED", "token has no subject")
    return sub


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    scope = claims.get("scope")
    if scope is None:
        return frozenset()
    if not isinstance(scope, str):
        raise _refused("TOKEN_MALFORMED", "token claim 'scope' is not a space-separated string")
    return frozenset(s for s in scope.split(" ") if s)


PARTNER_STATE_CLAIM = "pouch_partner_state"


def _partner_state(claims: Mapping[str, Any]) -> str | None:
    value = _optional_string(claims, PARTNER_STATE_CLAIM)
    if value is not None and not (len(value) == 2 and value.isascii() and value.isupper()):
        raise _refused(
            "TOKEN_MALFORMED", f"token claim '{PARTNER_STATE_CLAIM}' is not a state code"
        )
    return value


def _optional_string(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _refused("TOKEN_MALFORMED", f"token claim '{name}' is not a string")
    return value


__all__ = [
    "DEFAULT_ALGORITHMS",
    "SUPPORTED_ALGORITHMS",
    "InvalidJwks",
    "JwksKeys",
    "JwksSource",
    "JwksWatcher",
    "TokenVerifier",
    "VerifiedToken",
    "cert_thumbprint",
]
