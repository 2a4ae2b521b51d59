"""A development identity provider, for operators who do not run one yet.

It holds one ES256 (P-256) key and publishes its public half as a JWKS that
:class:`gateway.pki.tokens.JwksKeys` accepts. It mints access tokens in the shape the
gateway verifies: ``iss``, ``aud``, ``sub``, ``iat``, ``nbf``, ``exp``, ``jti``,
``scope`` (space-separated) and ``cnf["x5t#S256"]`` binding the token to one client
certificate (RFC 8705).

Guarantees: the private key file is created with mode 0600 (never wider, not even
for an instant) and appears atomically, so a crash leaves either no key or a whole
one; an existing key is never replaced, because tokens already issued depend on it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.pki.keys import write_private_key, write_public_file
from gateway.pki.tokens import PARTNER_STATE_CLAIM, cert_thumbprint

KEY_FILE = "idp.key"
JWKS_FILE = "jwks.json"
ALGORITHM = "ES256"
MAX_LIFETIME_S = 24 * 3600
_MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class DevelopmentIdp:
    """Where a development identity provider lives and the ``kid`` of its key."""

    directory: Path
    key_path: Path
    jwks_path: Path
    kid: str


def create_development_idp(out_dir: Path, *, kid: str | None = None) -> DevelopmentIdp:
    """Create ``idp.key`` (PKCS#8 PEM, 0600) and ``jwks.json`` in ``out_dir``.

    ``kid`` defaults to the RFC 7638 thumbprint of the public key. Raises
    :class:`FileExistsError` if ``out_dir`` already holds an identity provider key.
    """
    if kid is not None and not kid.strip():
        raise ValueError("a key id must not be empty")
    key_path = out_dir / KEY_FILE
    jwks_path = out_dir / JWKS_FILE
    if key_path.exists():
        raise FileExistsError(f"{key_path} already exists; refusing to replace an IdP key")
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_key = ec.generate_private_key(ec.SECP256R1())
    public_jwk = _public_jwk(private_key.public_key())
    kid = kid if kid is not None else _jwk_thumbprint(public_jwk)
    jwks = {"keys": [{**public_jwk, "kid": kid, "alg": ALGORITHM, "use": "sig"}]}
    write_private_key(key_path, private_key, overwrite=False)
    jwks_text = json.dumps(jwks, indent=2) + "\n"
    write_public_file(jwks_path, jwks_text.encode("utf-8"))
    return DevelopmentIdp(directory=out_dir, key_path=key_path, jwks_path=jwks_path, kid=kid)


def mint_token(
    *,
    key_path: Path,
    issuer: str,
    audience: str,
    subject: str,
    scopes: Sequence[str],
    client_cert_pem: bytes,
    lifetime_s: int,
    now: float,
    kid: str | None = None,
    jwks_path: Path | None = None,
    client_id: str | None = None,
    partner_state: str | None = None,
) -> str:
    """Sign an access token bound to ``client_cert_pem``; exactly one of kid/jwks_path.

    With ``jwks_path``, the ``kid`` is that of the JWKS entry holding this key's
    public half, so a token is never labelled with another key's id.
    """
    if (kid is None) == (jwks_path is None):
        raise ValueError("give exactly one of a key id or the JWKS the key is published in")
    if not issuer or not audience or not subject:
        raise ValueError("issuer, audience and subject must not be empty")
    if not 0 < lifetime_s <= MAX_LIFETIME_S:
        raise ValueError(f"the lifetime must be between 1 and {MAX_LIFETIME_S} seconds")
    for scope in scopes:
        if not scope or any(c.isspace() for c in scope):
            raise ValueError("a scope must be a non-empty word without spaces")
    private_key = _load_private_key(key_path)
    if jwks_path is not None:
        kid = _published_kid(jwks_path, _public_jwk(private_key.public_key()))
    if kid is None:
        raise ValueError("no key id for the token")
    try:
        certificate = x509.load_pem_x509_certificate(client_cert_pem)
    except ValueError as e:
        raise ValueError("the client certificate is not a PEM X.509 certificate") from e
    thumbprint = cert_thumbprint(certificate.public_bytes(serialization.Encoding.DER))
    issued_at = int(now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + lifetime_s,
        "jti": str(uuid.uuid4()),
        "scope": " ".join(dict.fromkeys(scopes)),
        "cnf": {"x5t#S256": thumbprint},
    }
    if client_id is not None:
        claims["client_id"] = client_id
    if partner_state is not None:
        claims[PARTNER_STATE_CLAIM] = partner_state
    return jwt.encode(
        claims, private_key, algorithm=ALGORITHM, headers={"kid": kid, "typ": "at+jwt"}
    )


def _load_private_key(key_path: Path) -> ec.EllipticCurvePrivateKey:
    with key_path.open("rb") as f:
        data = f.read(_MAX_FILE_BYTES)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{key_path} is not an unencrypted PEM private key") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{key_path} is not a P-256 key; the development IdP signs ES256")
    return key


def _published_kid(jwks_path: Path, public_jwk: dict[str, str]) -> str:
    with jwks_path.open("rb") as f:
        data = f.read(_MAX_FILE_BYTES)
    try:
        document = json.loads(data)
    except ValueError as e:
        raise ValueError(f"{jwks_path} is not valid JSON") from e
    members = document.get("keys") if isinstance(document, dict) else None
    for member in members if isinstance(members, list) else []:
        if (
            isinstance(member, dict)
            and all(member.get(name) == value for name, value in public_jwk.items())
            and member.get("alg") == ALGORITHM
            and isinstance(member.get("kid"), str)
        ):
            kid: str = member["kid"]
            return kid
    raise ValueError(f"{jwks_path} does not publish this identity provider's key")


def _public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }


def _jwk_thumbprint(public_jwk: dict[str, str]) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, without whitespace."""
    canonical = json.dumps(
        {name: public_jwk[name] for name in ("crv", "kty", "x", "y")},
        separators=(",", ":"),
        sort_keys=True,
    )
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def private_signing_jwk(idp: DevelopmentIdp) -> dict[str, str]:
    """The identity provider's private key as a JWK with its ``kid``, for an OpenID
    Connect provider that signs the officers' tokens with the same key (tests, demo).

    The JWK holds the private scalar ``d``: it is written only where the key file is,
    never logged.
    """
    private_key = serialization.load_pem_private_key(idp.key_path.read_bytes(), password=None)
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{idp.key_path} does not hold a P-256 key")
    d = private_key.private_numbers().private_value.to_bytes(32, "big")
    return {
        **_public_jwk(private_key.public_key()),
        "d": _b64url(d),
        "kid": idp.kid,
    }
