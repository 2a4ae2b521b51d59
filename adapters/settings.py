"""The ``[registry]`` settings, one model per kind of adapter.

``kind`` chooses the adapter; every other key belongs to that kind, and an unknown key
is an error naming it. Paths are used as given: the configuration loader anchors
relative ones to the configuration file before :func:`adapters.factory.build_adapter`
sees them. This module needs nothing but pydantic, so the configuration can read it
without loading an adapter.

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

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})

_TARGET = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(?P<port>[0-9]{1,5})$")


def target_host(target: str) -> str:
    """The host of a ``HOST:PORT`` target; :class:`ValueError` for any other form."""
    match = _TARGET.fullmatch(target)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"registry target must be HOST:PORT, not {target!r}")
    return match["host"]


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
