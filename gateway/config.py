"""Frozen gateway settings, loaded from one TOML file.

Every key is known: an unknown or ill-typed key is a :class:`ConfigError` that names
the file, the key and the rule. Relative paths are resolved against the directory of
the configuration file, so a deployment directory can be moved as a whole.

Example::

    [gateway]
    state = "AT"
    database_url = "sqlite:///var/at/pouch.db"
    worker_threads = 32                # blocking calls (database reads, case handling) run here

    [pki]
    dir = "certs/AT"
    crl_grace_seconds = 86400          # a CRL past nextUpdate is honoured this long, then refused

    [local_api]
    listen = "127.0.0.1:7443"

    [peer_api]
    listen = "127.0.0.1:7444"
    require_hybrid_key_exchange = false  # true: refuse partners without X25519MLKEM768

    [tokens]
    issuer = "https://idp.at.example"
    audience = "pouch:AT"
    jwks_file = "certs/AT/idp/jwks.json"

    [metrics]
    listen = "127.0.0.1:9464"

    [witness_http]                     # optional: c2sp.org/tlog-witness for partners' logs
    listen = "127.0.0.1:7445"          # HTTPS with the gateway's TLS certificate and key
    prefix = ""                        # POST <prefix>/add-checkpoint

    [[partners]]
    state = "BE"
    bundle = "partners/BE/bundle.json"
    bundle_digest = "sha256:…"       # as checked with the partner out of band
    crl = "partners/BE/crl.pem"

    [agreements]                       # optional: without it, no exchange happens
    dir = "agreements"
    hash_keys_dir = "secrets/hash-keys"

    [storage]                          # required with [agreements]
    sealing_key_file = "secrets/sealing.key"   # 32 random bytes as hex, mode 0600
    previous_sealing_key_files = []    # older keys, still accepted for reading
    retention_interval_seconds = 3600  # how often expired payloads are purged
    commit_delay_ms = 8                # under sustained load, wait for more writes per commit

    [registry]                         # how inbound updates reach the registry
    kind = "grpc"                      # grpc | webhook | sql | spool (adapters.settings)
    target = "registry.at.example:7000"
    tls_ca = "certs/AT/ca.crt"
    tls_cert = "certs/AT/clients/registry-adapter.crt"
    tls_key = "certs/AT/clients/registry-adapter.key"

    [delivery]                         # optional; DeliverySection lists every key
    backoff_initial_seconds = 1.0
    deadline_seconds = 1209600

    [[audit.witnesses]]                # optional: external C2SP witnesses of our log
    name = "witness.example.org/w1"    # the witness's key name
    url = "https://witness.example.org/"   # its submission prefix
    vkeys = ["witness.example.org/w1+…"]   # its cosigner keys (types 0x04, 0x06)
    ca_file = "witnesses/w1-ca.pem"    # optional: the CA its TLS certificate chains to
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from adapters.settings import AdapterSettings
from gateway.bounded_text import TextRefused
from gateway.config_file import describe_validation, read_document

_STATE = re.compile(r"^[A-Z]{2}$")
_LISTEN = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(?P<port>[0-9]{1,5})$")


class ConfigError(ValueError):
    """The configuration file is missing, unreadable, or breaks a rule."""


def _state_code(value: str) -> str:
    if not _STATE.match(value):
        raise ValueError("must be an ISO 3166-1 alpha-2 code: two uppercase letters")
    return value


def _listen_address(value: str) -> str:
    match = _LISTEN.match(value)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ValueError("must be HOST:PORT with a port from 1 to 65535")
    return value


# https anywhere, http to this host only (a witness on loopback, as in tests).
_WITNESS_URL = (
    r"^(https://[^\s/?#]+|http://(127\.[0-9.]+|localhost|\[::1\])(:[0-9]{1,5})?)(/[^\s?#]*)?$"
)

StateCode = Annotated[str, AfterValidator(_state_code)]
ListenAddress = Annotated[str, AfterValidator(_listen_address)]


class _Section(BaseModel):
    # An infinite deadline or interval would pass "greater than zero" and then break
    # the arithmetic that schedules with it.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class GatewaySection(_Section):
    state: StateCode
    database_url: str = "sqlite:///pouch.db"
    shutdown_grace_seconds: float = Field(default=10.0, gt=0, le=300)
    max_message_bytes: int = Field(default=4 * 1024 * 1024, gt=1024, le=64 * 1024 * 1024)
    # Threads for the blocking stages of calls in flight; their writes share group commits.
    worker_threads: int = Field(default=32, ge=1, le=256)


class PkiSection(_Section):
    dir: Path
    # How long a CRL (own or a partner's) stays in force past its nextUpdate; after
    # that every certificate of its CA is refused with CRL_STALE until a fresh CRL is
    # loaded (gateway.pki.crl). 0 refuses as soon as nextUpdate passes.
    crl_grace_seconds: float = Field(default=86400.0, ge=0, le=30 * 86400)


class ListenerSection(_Section):
    listen: ListenAddress


class PeerApiSection(ListenerSection):
    # Refuse a partner's call whose TLS connection negotiated no post-quantum hybrid
    # key exchange (gateway.trust.key_exchange), with KEY_EXCHANGE_NOT_HYBRID. Off by
    # default so that partners whose TLS stack predates hybrid groups can still deliver:
    # they negotiate a classical group. A ministry turns it on once every partner
    # negotiates X25519MLKEM768, as pouch_peer_key_exchange_total shows.
    require_hybrid_key_exchange: bool = False


class TokensSection(_Section):
    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    jwks_file: Path
    algorithms: tuple[str, ...] = ("ES256", "EdDSA")
    leeway_seconds: int = Field(default=30, ge=0, le=300)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        allowed = {"ES256", "ES384", "EdDSA", "RS256", "PS256"}
        unknown = [a for a in value if a not in allowed]
        if unknown or not value:
            raise ValueError(f"must be a non-empty list drawn from {sorted(allowed)}")
        return value


class MetricsSection(_Section):
    listen: ListenAddress


class AgreementsSection(_Section):
    # Directory of agreement files (YAML), each signed by both parties.
    dir: Path
    # Directory of per-agreement keys for keyed hashing: <agreement id>.key, holding
    # at least 32 random bytes as hex, shared with the partner out of band.
    hash_keys_dir: Path


class StorageSection(_Section):
    """How stored payloads are sealed at rest, and how often expired ones are purged."""

    # The key every new payload is sealed with (gateway.pki.sealing). It must be set
    # before the database's first message: rows are not marked as sealed or not.
    sealing_key_file: Path
    # Keys rotated out, kept so that rows sealed with them can still be read.
    previous_sealing_key_files: tuple[Path, ...] = ()
    retention_interval_seconds: float = Field(default=3600.0, gt=0, le=86400)
    # Under sustained load (writes already waiting whenever a transaction starts), how
    # long the group committer waits for more before it begins: fewer, larger
    # transactions for at most this much more latency per write. A lone writer never
    # waits. 0 turns the wait off.
    commit_delay_ms: float = Field(default=8.0, ge=0, le=100)


class DeliverySection(_Section):
    """How the dispatcher retries and how far apart two gateways' clocks may be."""

    backoff_initial_seconds: float = Field(default=1.0, gt=0, le=3600)
    backoff_max_seconds: float = Field(default=300.0, gt=0, le=86400)
    backoff_multiplier: float = Field(default=2.0, ge=1.0, le=10.0)
    jitter_fraction: float = Field(default=0.2, ge=0.0, le=1.0)
    # A message not delivered by then is dead-lettered and shown to the caller.
    deadline_seconds: float = Field(default=14 * 86400.0, gt=0)
    batch_size: int = Field(default=64, ge=1, le=1000)
    # The dispatcher's batches out at once: while a partner handles one, the next is
    # claimed and signed, and the one before is settled.
    batches_in_flight: int = Field(default=2, ge=1, le=16)
    lease_seconds: float = Field(default=30.0, gt=0, le=3600)
    # How often the dispatcher and the inbound loop look for work nobody woke them for:
    # a retry falling due, another replica's messages. What this gateway stores (a
    # submission, a partner's delivery) wakes them at once.
    poll_interval_seconds: float = Field(default=0.2, gt=0, le=60)
    call_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Envelopes created further than this from our clock are refused.
    clock_window_seconds: float = Field(default=300.0, gt=0, le=86400)
    # A queued envelope younger than this goes as it was signed when queued; an older
    # one is signed afresh, so that it stays well inside the partner's clock window.
    resign_after_seconds: float = Field(default=60.0, gt=0, le=86400)
    # After a partner announces a new trust bundle, how long the keys of the one it
    # replaces still verify (messages and receipts signed just before the switch).
    partner_bundle_overlap_seconds: float = Field(default=7 * 86400.0, ge=0, le=90 * 86400)

    @model_validator(mode="after")
    def _resigned_inside_the_window(self) -> DeliverySection:
        if self.resign_after_seconds >= self.clock_window_seconds:
            raise ValueError(
                "resign_after_seconds: must be less than clock_window_seconds, "
                "or a queued envelope could reach the partner outside its clock window"
            )
        return self


class ExternalWitnessSection(_Section):
    """A C2SP tlog-witness that cosigns our checkpoints besides the partners.

    Its vkeys are checked when the gateway starts (gateway.audit.external_witness):
    cosigner keys only (type 0x04 Ed25519, 0x06 ML-DSA-44), each named ``name``.
    Every key listed must cosign each checkpoint before it counts as published.
    """

    name: str = Field(min_length=1, max_length=255)
    # The witness's submission prefix: <url>add-checkpoint is posted to. https, or http
    # to a loopback address only.
    url: str = Field(pattern=_WITNESS_URL)
    vkeys: tuple[str, ...] = Field(min_length=1)
    ca_file: Path | None = None


class AuditSection(_Section):
    # How often a checkpoint of a grown log is signed and offered for cosignature.
    checkpoint_interval_seconds: float = Field(default=60.0, gt=0, le=86400)
    witnesses: tuple[ExternalWitnessSection, ...] = ()

    @field_validator("witnesses")
    @classmethod
    def _distinct_witnesses(
        cls, value: tuple[ExternalWitnessSection, ...]
    ) -> tuple[ExternalWitnessSection, ...]:
        names = [w.name for w in value]
        if len(names) != len(set(names)):
            raise ValueError("each witness name may appear only once")
        return value


class WitnessHttpSection(ListenerSection):
    """The c2sp.org/tlog-witness HTTP endpoint for partners' logs (gateway.server.witness_http)."""

    # Path before /add-checkpoint: empty, or /segments without a trailing slash.
    prefix: str = Field(default="", pattern=r"^(/[A-Za-z0-9._~\-]+)*$")


class PartnerSection(_Section):
    state: StateCode
    bundle: Path
    # Expected digest of the partner's trust bundle, as exchanged out of band.
    # Required at start: pinning is mandatory (gateway.server.startup_checks).
    bundle_digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    # Development only: start without a pinned digest, trusting whatever bundle file
    # lies at ``bundle``.
    insecure_unpinned: bool = False
    crl: Path | None = None
    # Overrides the peer endpoint named in the bundle (e.g. behind a proxy).
    endpoint: ListenAddress | None = None


class Settings(_Section):
    """The whole configuration; paths are absolute once loaded."""

    gateway: GatewaySection
    pki: PkiSection
    local_api: ListenerSection
    peer_api: PeerApiSection
    tokens: TokensSection
    metrics: MetricsSection | None = None
    witness_http: WitnessHttpSection | None = None
    agreements: AgreementsSection | None = None
    storage: StorageSection | None = None
    delivery: DeliverySection = DeliverySection()
    audit: AuditSection = AuditSection()
    # How inbound updates reach the national registry (adapters.settings).
    registry: AdapterSettings | None = None
    partners: tuple[PartnerSection, ...] = ()
    source: Path | None = None

    @field_validator("partners")
    @classmethod
    def _distinct_partners(cls, value: tuple[PartnerSection, ...]) -> tuple[PartnerSection, ...]:
        states = [p.state for p in value]
        if len(states) != len(set(states)):
            raise ValueError("each partner state may appear only once")
        return value

    @model_validator(mode="after")
    def _payloads_are_sealed(self) -> Settings:
        if self.agreements is not None and self.storage is None:
            raise ValueError(
                "storage.sealing_key_file: required key is missing: with [agreements], "
                "payloads are stored sealed and need a [storage] section naming the key"
            )
        if self.witness_http is not None and self.agreements is None:
            raise ValueError(
                "witness_http.listen: needs [agreements]: the witness keeps its record of "
                "each partner's log in the exchange database"
            )
        return self


def load_settings(path: Path) -> Settings:
    """Read, validate and freeze the configuration file at ``path``.

    Every failure is one :class:`ConfigError` naming the file, the line or key where
    known, and the rule (several lines only when several keys break rules).
    """
    try:
        raw = read_document(path)
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no such configuration file") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read: {e.strerror or 'input/output error'}") from e
    except TextRefused as e:
        raise ConfigError(e.located(str(path))) from e
    return parse_settings(raw, path)


def parse_settings(raw: dict[str, Any], path: Path) -> Settings:
    """Validate an already-parsed TOML document; ``path`` anchors relative paths."""
    base = path.resolve().parent
    if "partners" in raw and isinstance(raw["partners"], list):
        raw = {**raw, "partners": tuple(raw["partners"])}
    if "tokens" in raw and isinstance(raw["tokens"], dict):
        algorithms = raw["tokens"].get("algorithms")
        if isinstance(algorithms, list):
            raw = {**raw, "tokens": {**raw["tokens"], "algorithms": tuple(algorithms)}}
    if isinstance(raw.get("storage"), dict):
        previous = raw["storage"].get("previous_sealing_key_files")
        if isinstance(previous, list):
            as_paths = tuple(Path(p) if isinstance(p, str) else p for p in previous)
            raw = {**raw, "storage": {**raw["storage"], "previous_sealing_key_files": as_paths}}
    if isinstance(raw.get("audit"), dict) and isinstance(raw["audit"].get("witnesses"), list):
        raw = {**raw, "audit": {**raw["audit"], "witnesses": _witness_tables(raw["audit"])}}
    raw = _paths_as_paths(raw)
    if isinstance(raw.get("registry"), dict):
        raw = {**raw, "registry": _anchor_registry_paths(raw["registry"], base)}
    try:
        settings = Settings.model_validate({**raw, "source": path.resolve()})
    except ValidationError as e:
        raise ConfigError(describe_validation(path, e)) from None
    return _anchor(settings, base)


_PATH_KEYS = {
    ("pki", "dir"),
    ("tokens", "jwks_file"),
    ("partners", "bundle"),
    ("partners", "crl"),
    ("agreements", "dir"),
    ("agreements", "hash_keys_dir"),
    ("storage", "sealing_key_file"),
}


def _paths_as_paths(raw: dict[str, Any]) -> dict[str, Any]:
    """Strict mode wants Path objects for path fields; TOML gives strings."""
    out: dict[str, Any] = dict(raw)
    for section, key in _PATH_KEYS:
        value = out.get(section)
        if isinstance(value, dict) and isinstance(value.get(key), str):
            out[section] = {**value, key: Path(value[key])}
        elif isinstance(value, tuple):
            out[section] = tuple(
                {**item, key: Path(item[key])}
                if isinstance(item, dict) and isinstance(item.get(key), str)
                else item
                for item in value
            )
    return out


def _witness_tables(audit: dict[str, Any]) -> tuple[Any, ...]:
    """Arrays as tuples and ``ca_file`` as a path, as strict mode wants them."""
    tables = []
    for item in audit["witnesses"]:
        if isinstance(item, dict):
            if isinstance(item.get("vkeys"), list):
                item = {**item, "vkeys": tuple(item["vkeys"])}
            if isinstance(item.get("ca_file"), str):
                item = {**item, "ca_file": Path(item["ca_file"])}
        tables.append(item)
    return tuple(tables)


_REGISTRY_PATH_KEYS = ("tls_ca", "tls_cert", "tls_key", "secret_file", "directory")


def _anchor_registry_paths(table: dict[str, Any], base: Path) -> dict[str, Any]:
    out = dict(table)
    for key in _REGISTRY_PATH_KEYS:
        value = out.get(key)
        if isinstance(value, str) and not Path(value).is_absolute():
            out[key] = str(base / value)
    return out


def _anchor(settings: Settings, base: Path) -> Settings:
    def absolute(p: Path) -> Path:
        return p if p.is_absolute() else (base / p).resolve()

    partners = tuple(
        p.model_copy(
            update={"bundle": absolute(p.bundle), "crl": absolute(p.crl) if p.crl else None}
        )
        for p in settings.partners
    )
    database_url = settings.gateway.database_url
    prefix = "sqlite:///"
    if database_url.startswith(prefix) and not database_url.startswith(prefix + "/"):
        database_url = prefix + str(absolute(Path(database_url[len(prefix) :])))
    agreements = settings.agreements
    if agreements is not None:
        agreements = agreements.model_copy(
            update={
                "dir": absolute(agreements.dir),
                "hash_keys_dir": absolute(agreements.hash_keys_dir),
            }
        )
    storage = settings.storage
    if storage is not None:
        storage = storage.model_copy(
            update={
                "sealing_key_file": absolute(storage.sealing_key_file),
                "previous_sealing_key_files": tuple(
                    absolute(p) for p in storage.previous_sealing_key_files
                ),
            }
        )
    audit = settings.audit.model_copy(
        update={
            "witnesses": tuple(
                w.model_copy(update={"ca_file": absolute(w.ca_file) if w.ca_file else None})
                for w in settings.audit.witnesses
            )
        }
    )
    return settings.model_copy(
        update={
            "audit": audit,
            "agreements": agreements,
            "storage": storage,
            "gateway": settings.gateway.model_copy(update={"database_url": database_url}),
            "pki": settings.pki.model_copy(update={"dir": absolute(settings.pki.dir)}),
            "tokens": settings.tokens.model_copy(
                update={"jwks_file": absolute(settings.tokens.jwks_file)}
            ),
            "partners": partners,
        }
    )
