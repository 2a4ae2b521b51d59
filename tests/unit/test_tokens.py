"""Local callers' tokens: every forged, stale or misdirected token is refused."""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import hmac
import json
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from gateway.errors import AuthenticationRejected, PermissionRejected
from gateway.pki.idp import create_development_idp, mint_token
from gateway.pki.tokens import (
    InvalidJwks,
    JwksKeys,
    JwksWatcher,
    TokenVerifier,
    VerifiedToken,
    cert_thumbprint,
)
from gateway.trust.principal import Principal, Scope, require_scope

NOW = 1_760_000_000.0
ISSUER = "https://idp.example.fr"
AUDIENCE = "urn:pouch:state:FR:gateway"
SUBJECT = "clerk-4711"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_client_cert(common_name: str = "registry-clerk") -> tuple[bytes, bytes]:
    """A self-signed ECDSA certificate, as (DER, PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = datetime.datetime.fromtimestamp(NOW, tz=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(days=1))
        .not_valid_after(start + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER), cert.public_bytes(
        serialization.Encoding.PEM
    )


@dataclass
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def jwk(self) -> dict[str, Any]:
        public = jwt.algorithms.ECAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "alg": "ES256", "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(
            claims, self.private_key, algorithm="ES256", headers={"kid": self.kid, **header}
        )


def write_jwks(path: Path, *jwks: dict[str, Any]) -> Path:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(json.dumps({"keys": list(jwks)}))
    tmp.replace(path)
    return path


@dataclass
class Setup:
    key: SigningKey
    jwks_path: Path
    cert_der: bytes
    cert_pem: bytes
    verifier: TokenVerifier

    def claims(self, **overrides: Any) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": SUBJECT,
            "iat": int(NOW) - 10,
            "nbf": int(NOW) - 10,
            "exp": int(NOW) + 600,
            "jti": "3f1c7c38-3a7d-4c55-9a3c-0d9a3f6b8e11",
            "scope": "civil:submit identity:query",
            "cnf": {"x5t#S256": cert_thumbprint(self.cert_der)},
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, **overrides: Any) -> str:
        return self.key.sign(self.claims(**overrides))


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    key = SigningKey(kid="idp-2025-01")
    jwks_path = write_jwks(tmp_path / "jwks.json", key.jwk())
    cert_der, cert_pem = make_client_cert()
    verifier = TokenVerifier(
        JwksKeys.from_file(jwks_path), issuer=ISSUER, audience=AUDIENCE, clock=lambda: NOW
    )
    return Setup(key, jwks_path, cert_der, cert_pem, verifier)


def assert_refused(
    setup: Setup, token: str, reason: str, *, cert_der: bytes | None = None
) -> AuthenticationRejected:
    with pytest.raises(AuthenticationRejected) as excinfo:
        setup.verifier.verify(token, client_cert_der=cert_der or setup.cert_der)
    error = excinfo.value
    assert error.reason == reason
    message = str(error)
    assert message == error.message
    # No 8-character run of the token, nor the subject it names, leaks into the message.
    assert not any(message[i : i + 8] in token for i in range(len(message) - 7))
    assert SUBJECT not in message
    assert "Traceback" not in message
    return error


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = (
        _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
    )
    return signing_input + "." + _b64url(sign(signing_input.encode()))


# Accepted tokens


def test_valid_token_yields_principal_with_scopes(setup: Setup) -> None:
    token = setup.token(scope="civil:submit audit:read unknown:scope", client_id="civil-app")
    verified = setup.verifier.verify(token, client_cert_der=setup.cert_der)
    assert verified == VerifiedToken(
        subject=SUBJECT,
        issuer=ISSUER,
        scopes=frozenset({"civil:submit", "audit:read", "unknown:scope"}),
        client_id="civil-app",
        expires_at=NOW + 600,
        cert_thumbprint=cert_thumbprint(setup.cert_der),
        token_id="3f1c7c38-3a7d-4c55-9a3c-0d9a3f6b8e11",
    )
    principal = Principal.from_token("FR", verified)
    assert principal.scopes == frozenset({Scope.CIVIL_SUBMIT, Scope.AUDIT_READ})
    assert principal.subject == SUBJECT
    assert principal.client_id == "civil-app"
    assert principal.state == "FR"
    require_scope(principal, Scope.CIVIL_SUBMIT)


def test_token_with_audience_list_containing_gateway_is_accepted(setup: Setup) -> None:
    token = setup.token(aud=["urn:other", AUDIENCE])
    assert setup.verifier.verify(token, client_cert_der=setup.cert_der).subject == SUBJECT


def test_token_expired_within_leeway_is_accepted(setup: Setup) -> None:
    token = setup.token(exp=int(NOW) - 20, iat=int(NOW) - 600, nbf=None)
    assert setup.verifier.verify(token, client_cert_der=setup.cert_der).expires_at == NOW - 20


def test_missing_scope_is_permission_denied(setup: Setup) -> None:
    verified = setup.verifier.verify(
        setup.token(scope="identity:query"), client_cert_der=setup.cert_der
    )
    principal = Principal.from_token("FR", verified)
    with pytest.raises(PermissionRejected) as excinfo:
        require_scope(principal, Scope.CIVIL_SUBMIT)
    assert excinfo.value.reason == "SCOPE_MISSING"
    assert excinfo.value.message == "the token lacks the scope 'civil:submit'"


def test_admin_scope_does_not_imply_other_scopes(setup: Setup) -> None:
    verified = setup.verifier.verify(setup.token(scope="admin"), client_cert_der=setup.cert_der)
    with pytest.raises(PermissionRejected):
        require_scope(Principal.from_token("FR", verified), Scope.REPRESENTATION_ACT)


def test_token_without_scope_claim_grants_nothing(setup: Setup) -> None:
    verified = setup.verifier.verify(setup.token(scope=None), client_cert_der=setup.cert_der)
    assert Principal.from_token("FR", verified).scopes == frozenset()


# Refused tokens, in the order the verifier checks them


@pytest.mark.parametrize(
    "token",
    ["", "not-a-jwt", "a.b", "a.b.c.d", "!!!.e30.e30", _b64url(b"[1]") + ".e30.", "x" * 9000],
)
def test_malformed_token_is_refused(setup: Setup, token: str) -> None:
    assert_refused(setup, token, "TOKEN_MALFORMED")


def test_token_with_alg_none_is_refused(setup: Setup) -> None:
    for alg in ("none", "None", "NONE"):
        token = forge({"alg": alg, "kid": setup.key.kid}, setup.claims(), lambda _: b"")
        assert_refused(setup, token, "TOKEN_ALGORITHM")


def test_token_hmac_signed_with_public_key_is_refused(setup: Setup) -> None:
    secrets = [setup.key.public_pem(), json.dumps(setup.key.jwk()).encode()]
    for secret in secrets:
        for alg, digest in (("HS256", "sha256"), ("HS512", "sha512")):
            token = forge(
                {"alg": alg, "typ": "JWT", "kid": setup.key.kid},
                setup.claims(scope="admin"),
                functools.partial(hmac.digest, secret, digest=digest),
            )
            assert_refused(setup, token, "TOKEN_ALGORITHM")


def test_token_with_algorithm_other_than_its_keys_is_refused(tmp_path: Path, setup: Setup) -> None:
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_jwk = jwt.algorithms.OKPAlgorithm.to_jwk(ed_key.public_key(), as_dict=True)
    write_jwks(setup.jwks_path, {**ed_jwk, "kid": "ed-1", "alg": "EdDSA"})
    verifier = TokenVerifier(
        JwksKeys.from_file(setup.jwks_path), issuer=ISSUER, audience=AUDIENCE, clock=lambda: NOW
    )
    token = SigningKey(kid="ed-1").sign(setup.claims())
    with pytest.raises(AuthenticationRejected) as excinfo:
        verifier.verify(token, client_cert_der=setup.cert_der)
    assert excinfo.value.reason == "TOKEN_ALGORITHM"


def test_token_with_algorithm_outside_allow_list_is_refused(setup: Setup) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    token = jwt.encode(setup.claims(), key, algorithm="ES384", headers={"kid": setup.key.kid})
    assert_refused(setup, token, "TOKEN_ALGORITHM")


def test_token_with_unknown_kid_is_refused(setup: Setup) -> None:
    assert_refused(setup, SigningKey(kid="idp-2099-01").sign(setup.claims()), "TOKEN_KEY_UNKNOWN")


def test_token_without_kid_is_refused(setup: Setup) -> None:
    token = jwt.encode(setup.claims(), setup.key.private_key, algorithm="ES256")
    assert_refused(setup, token, "TOKEN_KEY_UNKNOWN")


def test_token_signed_by_other_key_with_same_kid_is_refused(setup: Setup) -> None:
    impostor = SigningKey(kid=setup.key.kid)
    assert_refused(setup, impostor.sign(setup.claims(scope="admin")), "TOKEN_SIGNATURE")


def test_token_with_altered_claims_is_refused(setup: Setup) -> None:
    header, _, signature = setup.token().split(".")
    payload = _b64url(json.dumps(setup.claims(scope="admin")).encode())
    assert_refused(setup, f"{header}.{payload}.{signature}", "TOKEN_SIGNATURE")


def test_expired_token_is_refused(setup: Setup) -> None:
    token = setup.token(exp=int(NOW) - 31, iat=int(NOW) - 600, nbf=None)
    error = assert_refused(setup, token, "TOKEN_EXPIRED")
    assert error.message == "token expired"


def test_token_without_expiry_is_refused(setup: Setup) -> None:
    assert_refused(setup, setup.token(exp=None), "TOKEN_EXPIRED")


@pytest.mark.parametrize("exp", ["Infinity", "NaN", "true", '"2099-01-01"'])
def test_token_with_non_numeric_expiry_is_refused(setup: Setup, exp: str) -> None:
    claims = json.dumps(setup.claims(exp=0)).replace('"exp": 0', f'"exp": {exp}')
    token = jwt.api_jws.encode(
        claims.encode(), setup.key.private_key, algorithm="ES256", headers={"kid": setup.key.kid}
    )
    assert_refused(setup, token, "TOKEN_MALFORMED")


def test_token_not_yet_valid_is_refused(setup: Setup) -> None:
    token = setup.token(nbf=int(NOW) + 120, iat=int(NOW))
    assert_refused(setup, token, "TOKEN_NOT_YET_VALID")


def test_token_issued_in_the_future_is_refused(setup: Setup) -> None:
    assert_refused(setup, setup.token(iat=int(NOW) + 120, nbf=None), "TOKEN_NOT_YET_VALID")


def test_token_issued_after_its_expiry_is_refused(setup: Setup) -> None:
    token = setup.token(iat=int(NOW), nbf=None, exp=int(NOW) - 5)
    assert_refused(setup, token, "TOKEN_MALFORMED")


def test_token_from_other_issuer_is_refused(setup: Setup) -> None:
    assert_refused(setup, setup.token(iss="https://idp.example.de"), "TOKEN_ISSUER")


def test_token_without_issuer_is_refused(setup: Setup) -> None:
    assert_refused(setup, setup.token(iss=None), "TOKEN_ISSUER")


@pytest.mark.parametrize("aud", ["urn:pouch:state:DE:gateway", ["urn:a", "urn:b"], [], 7])
def test_token_for_other_audience_is_refused(setup: Setup, aud: object) -> None:
    error = assert_refused(setup, setup.token(aud=aud), "TOKEN_AUDIENCE")
    assert error.message == "token audience does not match this gateway"


def test_token_without_binding_is_refused(setup: Setup) -> None:
    for cnf in (None, {}, {"x5t#S256": ""}, {"jkt": "abc"}, "x5t"):
        assert_refused(setup, setup.token(cnf=cnf), "TOKEN_BINDING")


def test_token_bound_to_other_certificate_is_refused(setup: Setup) -> None:
    other_der, _ = make_client_cert("someone-else")
    assert_refused(setup, setup.token(), "TOKEN_BINDING", cert_der=other_der)


def test_token_without_subject_is_refused(setup: Setup) -> None:
    assert_refused(setup, setup.token(sub=None), "TOKEN_MALFORMED")


def test_token_refusal_does_not_name_the_key_id(setup: Setup) -> None:
    error = assert_refused(
        setup, SigningKey(kid="kid-secret-ish").sign(setup.claims()), "TOKEN_KEY_UNKNOWN"
    )
    assert "kid-secret-ish" not in error.message


# Configuration


def test_verifier_refuses_hmac_or_none_in_allow_list(setup: Setup) -> None:
    keys = JwksKeys.from_file(setup.jwks_path)
    for algorithms in (frozenset({"ES256", "HS256"}), frozenset({"none"}), frozenset()):
        with pytest.raises(ValueError, match="algorithm"):
            TokenVerifier(
                keys, issuer=ISSUER, audience=AUDIENCE, algorithms=algorithms, clock=lambda: NOW
            )


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"alg": None}, "has no 'alg'"),
        ({"alg": "HS256"}, "outside the allow-list"),
        ({"alg": "ES384"}, "outside the allow-list"),
        ({"alg": "RS256"}, "key type"),
        ({"kid": None}, "has no 'kid'"),
        ({"use": "enc"}, "not a signature key"),
        ({"d": "AAAA"}, "private key material"),
        ({"x": "AAAA"}, "cannot be loaded"),
        ({"y": None}, "cannot be loaded"),
        ({"crv": "P-384"}, "curve"),
    ],
)
def test_jwks_with_unsafe_key_is_refused(tmp_path: Path, change: dict[str, Any], rule: str) -> None:
    jwk = {**SigningKey(kid="k1").jwk(), **change}
    path = write_jwks(tmp_path / "jwks.json", {k: v for k, v in jwk.items() if v is not None})
    with pytest.raises(InvalidJwks, match=rule):
        JwksKeys.from_file(path)


def test_jwks_with_duplicate_kid_is_refused(tmp_path: Path) -> None:
    path = write_jwks(tmp_path / "jwks.json", SigningKey("k1").jwk(), SigningKey("k1").jwk())
    with pytest.raises(InvalidJwks, match="same kid"):
        JwksKeys.from_file(path)


def test_jwks_watcher_picks_up_rotated_key(setup: Setup) -> None:
    watcher = JwksWatcher(setup.jwks_path)
    verifier = TokenVerifier(watcher, issuer=ISSUER, audience=AUDIENCE, clock=lambda: NOW)
    verifier.verify(setup.token(), client_cert_der=setup.cert_der)
    rotated = SigningKey(kid="idp-2025-02")
    rotated_token = rotated.sign(setup.claims())
    with pytest.raises(AuthenticationRejected):
        verifier.verify(rotated_token, client_cert_der=setup.cert_der)

    write_jwks(setup.jwks_path, rotated.jwk())
    assert verifier.verify(rotated_token, client_cert_der=setup.cert_der).subject == SUBJECT
    with pytest.raises(AuthenticationRejected) as excinfo:
        verifier.verify(setup.token(), client_cert_der=setup.cert_der)
    assert excinfo.value.reason == "TOKEN_KEY_UNKNOWN"


def test_jwks_watcher_keeps_last_good_keys_when_file_turns_bad(setup: Setup) -> None:
    watcher = JwksWatcher(setup.jwks_path)
    setup.jwks_path.write_text(
        '{"keys": [{"kty": "oct", "alg": "HS256", "kid": "x", "k": "c2VjcmV0"}]}'
    )
    assert watcher.current().kids == {setup.key.kid}
    setup.jwks_path.unlink()
    assert watcher.current().kids == {setup.key.kid}
    write_jwks(setup.jwks_path, SigningKey("after-repair").jwk())
    assert watcher.current().kids == {"after-repair"}


def test_jwks_watcher_refuses_to_start_without_good_keys(tmp_path: Path) -> None:
    (tmp_path / "jwks.json").write_text("{}")
    with pytest.raises(InvalidJwks):
        JwksWatcher(tmp_path / "jwks.json")
    with pytest.raises(InvalidJwks):
        JwksWatcher(tmp_path / "absent.json")


def test_cert_thumbprint_is_rfc8705_x5t_s256() -> None:
    der, _ = make_client_cert()
    expected = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
    assert cert_thumbprint(der) == expected
    assert len(expected) == 43


# Development identity provider


def test_idp_key_written_mode_0600(tmp_path: Path) -> None:
    idp = create_development_idp(tmp_path / "idp")
    assert stat.S_IMODE(idp.key_path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in idp.key_path.read_bytes()
    assert b"PRIVATE" not in idp.jwks_path.read_bytes()
    assert [p.name for p in sorted(idp.directory.iterdir())] == ["idp.key", "jwks.json"]
    assert JwksKeys.from_file(idp.jwks_path).kids == {idp.kid}


def test_idp_refuses_to_replace_existing_key(tmp_path: Path) -> None:
    idp = create_development_idp(tmp_path, kid="first")
    before = idp.key_path.read_bytes()
    with pytest.raises(FileExistsError):
        create_development_idp(tmp_path, kid="second")
    assert idp.key_path.read_bytes() == before


def test_idp_minted_token_verifies_and_is_bound(tmp_path: Path) -> None:
    idp = create_development_idp(tmp_path, kid="dev-1")
    cert_der, cert_pem = make_client_cert()
    token = mint_token(
        key_path=idp.key_path,
        jwks_path=idp.jwks_path,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject=SUBJECT,
        scopes=["civil:submit", "audit:read"],
        client_cert_pem=cert_pem,
        lifetime_s=300,
        now=NOW,
        client_id="civil-app",
    )
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "dev-1", "typ": "at+jwt"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert {"iat", "nbf", "exp", "jti"} <= claims.keys()
    verifier = TokenVerifier(
        JwksKeys.from_file(idp.jwks_path), issuer=ISSUER, audience=AUDIENCE, clock=lambda: NOW
    )
    verified = verifier.verify(token, client_cert_der=cert_der)
    assert verified.scopes == {"civil:submit", "audit:read"}
    assert verified.client_id == "civil-app"
    assert verified.expires_at == NOW + 300
    with pytest.raises(AuthenticationRejected):
        verifier.verify(token, client_cert_der=make_client_cert()[0])


def test_idp_refuses_kid_of_a_key_it_does_not_hold(tmp_path: Path) -> None:
    idp = create_development_idp(tmp_path / "a")
    other = create_development_idp(tmp_path / "b")
    with pytest.raises(ValueError, match="does not publish"):
        mint_token(
            key_path=idp.key_path,
            jwks_path=other.jwks_path,
            issuer=ISSUER,
            audience=AUDIENCE,
            subject=SUBJECT,
            scopes=["admin"],
            client_cert_pem=make_client_cert()[1],
            lifetime_s=300,
            now=NOW,
        )


# A token's verified signature is remembered; nothing else about it is.


def test_a_token_verified_before_is_refused_once_its_key_is_removed(setup: Setup) -> None:
    verifier = TokenVerifier(
        JwksWatcher(setup.jwks_path), issuer=ISSUER, audience=AUDIENCE, clock=lambda: NOW
    )
    token = setup.token()
    verifier.verify(token, client_cert_der=setup.cert_der)

    write_jwks(setup.jwks_path, SigningKey(kid="idp-2025-02").jwk())

    with pytest.raises(AuthenticationRejected) as excinfo:
        verifier.verify(token, client_cert_der=setup.cert_der)
    assert excinfo.value.reason == "TOKEN_KEY_UNKNOWN"


def test_a_token_verified_before_is_refused_once_it_expires(setup: Setup) -> None:
    now = [NOW]
    verifier = TokenVerifier(
        JwksKeys.from_file(setup.jwks_path), issuer=ISSUER, audience=AUDIENCE, clock=lambda: now[0]
    )
    token = setup.token(exp=int(NOW) + 60)
    verifier.verify(token, client_cert_der=setup.cert_der)

    now[0] = NOW + 60 + 31  # past the expiry and the 30 s leeway

    with pytest.raises(AuthenticationRejected) as excinfo:
        verifier.verify(token, client_cert_der=setup.cert_der)
    assert excinfo.value.reason == "TOKEN_EXPIRED"


def test_a_token_verified_before_is_refused_with_another_certificate(setup: Setup) -> None:
    token = setup.token()
    setup.verifier.verify(token, client_cert_der=setup.cert_der)
    other_der, _ = make_client_cert("someone-else")

    assert_refused(setup, token, "TOKEN_BINDING", cert_der=other_der)
