"""A local caller's PEM files, checked before a connection is tried.

gRPC says only "failed to create security handshaker" when a client certificate is
not PEM or its key belongs to another certificate, and the gateway can say nothing
about a certificate that expired: the handshake fails before any call. So a client
command checks its files first and names the file and the rule:

1. the CA file holds at least one PEM certificate;
2. the certificate file holds at least one (the caller's first, then its chain), and the
   first is valid now;
3. the key file holds an unencrypted PEM private key whose public key is the first
   certificate's.

Nothing here decides trust: the gateway does, on the connection.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.pki.keys import as_utc, load_certificates_pem


class CallerFileRefused(ValueError):
    """A file breaks a rule; :attr:`path` names it."""

    def __init__(self, path: Path, rule: str) -> None:
        self.path = path
        self.rule = rule
        super().__init__(f"{path}: {rule}")


def check_caller_files(*, ca: Path, certificate: Path, key: Path, now: datetime) -> None:
    """Return if the three files can make a mutual-TLS connection, else raise
    :class:`CallerFileRefused`."""
    _certificates(ca)
    mine = _certificates(certificate)[0]
    now = as_utc(now)
    if mine.not_valid_after_utc <= now:
        raise CallerFileRefused(
            certificate, f"the certificate expired on {mine.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if mine.not_valid_before_utc > now:
        raise CallerFileRefused(
            certificate,
            f"the certificate is not valid before {mine.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
        )
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except OSError as e:
        raise CallerFileRefused(key, f"cannot read: {e.strerror}") from e
    except (ValueError, TypeError) as e:
        raise CallerFileRefused(key, "not an unencrypted PEM private key") from e
    if private.public_key() != mine.public_key():
        raise CallerFileRefused(key, f"the key does not belong to the certificate in {certificate}")


def _certificates(path: Path) -> list[x509.Certificate]:
    try:
        return load_certificates_pem(path.read_bytes())
    except OSError as e:
        raise CallerFileRefused(path, f"cannot read: {e.strerror}") from e
    except ValueError as e:
        raise CallerFileRefused(path, "holds no PEM certificate") from e
