"""The console's configuration: one TOML file, checked whole before anything listens.

A console serves one state. It is a client of that state's gateway (its own client
certificate of the state's internal CA), a relying party of the state's identity
provider, and an HTTPS server for the officers' browsers::

    [console]
    state = "BE"
    listen = "127.0.0.1:8443"
    public_url = "https://console.be.example:8443"   # where the identity provider returns
    tls_certificate = "pki/servers/console.crt"
    tls_key = "pki/servers/console.key"
    session_idle_minutes = 15
    time_zone = "Europe/Brussels"                      # until an officer picks another
    metrics_listen = "127.0.0.1:9465"                  # optional: Prometheus metrics

    [gateway]
    target = "127.0.0.1:7001"                          # the local API
    ca = "pki/ca.crt"
    certificate = "pki/clients/console.crt"
    key = "pki/clients/console.key"
    trust_bundle = "pki/bundle.json"                   # the log keys pages check against

    [oidc]
    issuer = "https://idp.be.example"
    client_id = "pouch-console"
    client_secret_file = "secrets/console-oidc-secret"
    ca = "idp-ca.crt"                                  # optional: the provider's TLS CA

Relative paths are read from the file's folder. Every refusal is one line naming the
file, the key and the rule (:mod:`gateway.config_file` words them as for the gateway).
"""

from __future__ import annotations

import re
import stat
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from console.i18n import is_time_zone
from gateway.bounded_text import TextRefused
from gateway.config import ListenAddress, StateCode
from gateway.config_file import describe_validation, read_document
from gateway.pki.caller_files import CallerFileRefused, check_caller_files

_HTTPS_URL = re.compile(r"https://[^\s/?#]+(/[^\s?#]*)?")
GATEWAY_SCOPES = (
    "representation:request",
    "representation:act",
    "audit:read",
    "admin",
)


class ConsoleConfigError(ValueError):
    """The configuration broke a rule: the message is the one line to print."""


def _https(value: str) -> str:
    if not _HTTPS_URL.fullmatch(value):
        raise ValueError("must be an https:// URL without query or fragment")
    return value.rstrip("/")


def _zone(value: str) -> str:
    if not is_time_zone(value):
        raise ValueError("must name an IANA time zone, e.g. Europe/Brussels")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class ConsoleSection(_Section):
    state: StateCode
    listen: ListenAddress
    public_url: Annotated[str, AfterValidator(_https)]
    tls_certificate: Path
    tls_key: Path
    session_idle_minutes: int = Field(default=15, ge=1, le=480)
    time_zone: Annotated[str, AfterValidator(_zone)] = "UTC"
    # Prometheus metrics (console.metrics) over plain HTTP, when set: keep it internal.
    metrics_listen: ListenAddress | None = None
    # Largest attachment an officer may upload; the gateway's message limit bounds it too.
    max_attachment_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, le=16 * 1024 * 1024)


class GatewaySection(_Section):
    target: ListenAddress
    ca: Path
    certificate: Path
    key: Path
    trust_bundle: Path
    timeout_seconds: float = Field(default=15.0, gt=0, le=120)


class OidcSection(_Section):
    issuer: Annotated[str, AfterValidator(_https)]
    client_id: str = Field(min_length=1, max_length=200)
    client_secret_file: Path
    ca: Path | None = None
    # Asked of the provider; it grants each officer only the scopes of their role.
    scopes: tuple[str, ...] = GATEWAY_SCOPES
    # The gateway's audience, sent as a resource indicator (RFC 8707) when set.
    resource: str | None = None


class ConsoleSettings(_Section):
    console: ConsoleSection
    gateway: GatewaySection
    oidc: OidcSection
    source: Path

    @property
    def client_secret(self) -> str:
        return self.oidc.client_secret_file.read_text(encoding="utf-8").strip()


_PATHS = {
    ("console", "tls_certificate"),
    ("console", "tls_key"),
    ("gateway", "ca"),
    ("gateway", "certificate"),
    ("gateway", "key"),
    ("gateway", "trust_bundle"),
    ("oidc", "client_secret_file"),
    ("oidc", "ca"),
}


def load_console_settings(path: Path) -> ConsoleSettings:
    """Read and check the file at ``path``; every file it names must be readable."""
    try:
        raw = read_document(path)
    except FileNotFoundError:
        raise ConsoleConfigError(f"{path}: no such configuration file") from None
    except OSError as e:
        raise ConsoleConfigError(f"{path}: cannot be read: {e.strerror}") from None
    except TextRefused as e:
        raise ConsoleConfigError(e.located(str(path))) from None
    base = path.resolve().parent
    document: dict[str, Any] = {}
    for name, section in raw.items():
        if not isinstance(section, dict):
            document[name] = section
            continue
        values = dict(section)
        for key, value in section.items():
            if (name, key) in _PATHS and isinstance(value, str):
                values[key] = base / value
            elif isinstance(value, list):
                values[key] = tuple(value)
        document[name] = values
    try:
        settings = ConsoleSettings.model_validate({**document, "source": path.resolve()})
    except ValidationError as e:
        raise ConsoleConfigError(describe_validation(path, e)) from None
    for section, key in sorted(_PATHS):
        value = getattr(getattr(settings, section), key)
        if value is not None and not value.is_file():
            raise ConsoleConfigError(f"{path}: {section}.{key}: {value} is not a readable file")
    unknown = sorted(set(settings.oidc.scopes) - {"openid", "profile", *GATEWAY_SCOPES})
    if unknown:
        raise ConsoleConfigError(f"{path}: oidc.scopes: {unknown[0]!r} is not a gateway scope")
    if not settings.client_secret:
        raise ConsoleConfigError(f"{path}: oidc.client_secret_file: the file is empty")
    return settings


def check_console_files(settings: ConsoleSettings, *, now: datetime) -> None:
    """The PEM files make the two TLS identities they are for, and the secrets are
    private; one :class:`ConsoleConfigError` naming the key and the rule otherwise.

    gRPC and the TLS library would say only that a handshake failed, or nothing until
    an officer's first page; this names the file first.
    """
    source = settings.source
    secrets = (
        ("console.tls_key", settings.console.tls_key),
        ("gateway.key", settings.gateway.key),
        ("oidc.client_secret_file", settings.oidc.client_secret_file),
    )
    for name, path in secrets:
        mode = path.stat().st_mode
        if mode & 0o077:
            raise ConsoleConfigError(
                f"{source}: {name}: {path} has mode {stat.S_IMODE(mode):04o}; "
                "it must be readable by its owner only (chmod 600)"
            )
    pairs = (
        ("gateway.certificate", "gateway.key", settings.gateway.certificate, settings.gateway.key),
        (
            "console.tls_certificate",
            "console.tls_key",
            settings.console.tls_certificate,
            settings.console.tls_key,
        ),
    )
    for certificate_key, key_key, certificate, private_key in pairs:
        try:
            check_caller_files(
                ca=settings.gateway.ca, certificate=certificate, key=private_key, now=now
            )
        except CallerFileRefused as e:
            names = {settings.gateway.ca: "gateway.ca", certificate: certificate_key}
            raise ConsoleConfigError(f"{source}: {names.get(e.path, key_key)}: {e}") from None
