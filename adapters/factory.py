"""The one place registry adapters are built, from their ``[registry]`` settings
(:mod:`adapters.settings`).

Paths are used as given: the configuration loader anchors relative ones to the
configuration file before :func:`build_adapter` sees them.
"""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

from adapters.base import RegistryAdapter
from adapters.grpc_registry import GrpcRegistryAdapter
from adapters.settings import (
    AdapterSettings,
    GrpcAdapterSettings,
    SqlAdapterSettings,
    WebhookAdapterSettings,
)
from adapters.spool import SpoolAdapter
from adapters.sql_table import SqlTableAdapter
from adapters.webhook import MIN_SECRET_BYTES, WebhookAdapter
from gateway.connect import ClientIdentity
from gateway.store.engine import create_engine, redact_url


def build_adapter(settings: AdapterSettings) -> RegistryAdapter:
    """The adapter ``settings`` describe; :class:`ValueError` names a key that is unusable."""
    if isinstance(settings, GrpcAdapterSettings):
        identity = None
        if settings.tls_ca and settings.tls_cert and settings.tls_key:
            try:
                identity = ClientIdentity.from_files(
                    trusted_ca=settings.tls_ca,
                    certificate=settings.tls_cert,
                    private_key=settings.tls_key,
                )
            except OSError as e:
                raise ValueError(
                    f"tls_ca, tls_cert, tls_key: {e.filename} cannot be read ({type(e).__name__})"
                ) from e
        return GrpcRegistryAdapter(
            settings.target,
            identity,
            settings.timeout_seconds,
            insecure_loopback=settings.insecure_loopback,
        )
    if isinstance(settings, WebhookAdapterSettings):
        secret = read_secret(settings.secret_file)
        if settings.tls_ca is not None:
            try:
                return WebhookAdapter.trusting(
                    settings.url, secret, settings.timeout_seconds, ca_file=settings.tls_ca
                )
            except (OSError, ssl.SSLError) as e:
                raise ValueError(
                    f"tls_ca {settings.tls_ca}: not a readable PEM CA ({type(e).__name__})"
                ) from e
        return WebhookAdapter(settings.url, secret, settings.timeout_seconds)
    if isinstance(settings, SqlAdapterSettings):
        try:
            engine = create_engine(settings.database_url)
        except ValueError as e:
            raise ValueError(f"database_url {redact_url(settings.database_url)}: {e}") from None
        return SqlTableAdapter(engine, dispose_on_close=True)
    return SpoolAdapter(settings.directory)


def read_secret(path: Path) -> bytes:
    """The webhook secret in ``path``, refused if others may read it or it is too short.

    Surrounding whitespace (a trailing newline from an editor) is not part of the secret.
    """
    try:
        mode = path.stat().st_mode
        secret = path.read_bytes().strip()
    except OSError as e:
        raise ValueError(f"secret_file {path}: cannot be read ({type(e).__name__})") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"secret_file {path}: readable by group or others (chmod 600)")
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"secret_file {path}: secret shorter than {MIN_SECRET_BYTES} bytes")
    return secret
