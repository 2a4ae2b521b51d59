"""The ``[registry]`` settings, one model per kind of adapter, and the one place adapters are built.

``kind`` chooses the adapter; every other key belongs to that kind, and an unknown key
is an error naming it. Paths are used as given: the configuration loader anchors
relative ones to the configuration file before :func:`build_adapter` sees them.

Examples::

    [registry]
    kind = "grpc"
    target = "registry.internal:7500"
    tls_ca = "certs/registry-ca.pem"
    tls_cert = "certs/gateway-to-registry.pem"
    tls_key = "certs/gateway-to-registry.key"
    timeout_seconds = 10

    [registry]
    kind = "webhook"
    url = "https://registry.internal/pouch/updates"
    secret_file = "secrets/webhook.key"     # readable by its owner only
"""

from __future__ import annotations

import ssl
import stat
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from adapters.base import RegistryAdapter
from adapters.grpc_registry import LOOPBACK_HOSTS, GrpcRegistryAdapter, target_host
from adapters.spool import SpoolAdapter
from adapters.sql_table import SqlTableAdapter
from adapters.webhook import MIN_SECRET_BYTES, WebhookAdapter
from gateway.connect import ClientIdentity
from gateway.store.engine import create_engine, redact_url

# TOML gives paths as strings; everything else must already have its type.
FilePath = Annotated[Path, Field(strict=False)]
Timeout = Annotated[float, Field(gt=0, le=300)]


class _Kind(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class GrpcAdapterSettings(_Kind):
    """Call the registry's ``RegistryService`` over mutual TLS."""

    kind: Literal["grpc"]
    target: str
    tls_ca: FilePath | None = None
    tls_cert: FilePath | None = None
    tls_key: FilePath | None = None
    # Plaintext, allowed only to 127.0.0.1 or localhost, and only when named here.
    insecure_loopback: bool = False
    timeout_seconds: Timeout = 10.0

    @field_validator("target")
    @classmethod
    def _host_and_port(cls, value: str) -> str:
        target_host(value)
        return value

    @model_validator(mode="after")
    def _tls_or_loopback(self) -> GrpcAdapterSettings:
        files = (self.tls_ca, self.tls_cert, self.tls_key)
        if any(f is not None for f in files) and not all(f is not None for f in files):
            raise ValueError("tls_ca, tls_cert and tls_key go together")
        if self.insecure_loopback:
            if self.tls_ca is not None:
                raise ValueError("insecure_loopback excludes tls_ca, tls_cert and tls_key")
            if target_host(self.target) not in LOOPBACK_HOSTS:
                raise ValueError("insecure_loopback needs a target on 127.0.0.1 or localhost")
        elif self.tls_ca is None:
            raise ValueError("tls_ca, tls_cert and tls_key are required (mutual TLS)")
        return self


class WebhookAdapterSettings(_Kind):
    """POST each update, signed with HMAC-SHA256 under the secret in ``secret_file``."""

    kind: Literal["webhook"]
    url: str
    secret_file: FilePath
    # Trust only this CA for the webhook's certificate, instead of the system's.
    tls_ca: FilePath | None = None
    timeout_seconds: Timeout = 10.0

    @field_validator("url")
    @classmethod
    def _secure_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "https" and parts.hostname:
            return value
        if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
            return value
        raise ValueError("must be an https:// URL (http:// only to 127.0.0.1 or localhost)")


class SqlAdapterSettings(_Kind):
    """Write updates into ``pouch_inbound_updates`` in the registry's database."""

    kind: Literal["sql"]
    database_url: str = Field(min_length=1)


class SpoolAdapterSettings(_Kind):
    """Drop one file per update into a directory the registry collects from."""

    kind: Literal["spool"]
    directory: FilePath


AdapterSettings = Annotated[
    GrpcAdapterSettings | WebhookAdapterSettings | SqlAdapterSettings | SpoolAdapterSettings,
    Field(discriminator="kind"),
]

adapter_settings: TypeAdapter[AdapterSettings] = TypeAdapter(AdapterSettings)
"""Validates a ``[registry]`` table on its own, e.g. ``adapter_settings.validate_python``."""


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
