"""The ``[registry]`` settings: each kind builds its adapter, and every error names its key."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.factory import build_adapter
from adapters.grpc_registry import GrpcRegistryAdapter
from adapters.settings import adapter_settings
from adapters.spool import SpoolAdapter
from adapters.sql_table import SqlTableAdapter
from adapters.webhook import WebhookAdapter


def _error_keys(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as raised:
        adapter_settings.validate_python(raw)
    return [
        ".".join(str(part) for part in item["loc"]) + ": " + item["msg"]
        for item in raised.value.errors()
    ]


def _secret_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "webhook.key"
    path.write_bytes(b"s3cr3t-s3cr3t-s3cr3t-s3cr3t\n")
    path.chmod(mode)
    return path


def test_each_kind_builds_its_adapter(tmp_path: Path) -> None:
    raws: list[tuple[dict[str, Any], type]] = [
        (
            {"kind": "grpc", "target": "127.0.0.1:7500", "insecure_loopback": True},
            GrpcRegistryAdapter,
        ),
        (
            {
                "kind": "webhook",
                "url": "https://registry.example/hook",
                "secret_file": str(_secret_file(tmp_path)),
                "timeout_seconds": 5,
            },
            WebhookAdapter,
        ),
        ({"kind": "sql", "database_url": f"sqlite:///{tmp_path / 'r.db'}"}, SqlTableAdapter),
        ({"kind": "spool", "directory": str(tmp_path / "spool")}, SpoolAdapter),
    ]
    for raw, expected in raws:
        adapter = build_adapter(adapter_settings.validate_python(raw))
        assert isinstance(adapter, expected)
        asyncio.run(adapter.close())


def test_unknown_key_is_named() -> None:
    keys = _error_keys({"kind": "spool", "directory": "/var/spool/pouch", "dirctory": "x"})
    assert keys == ["spool.dirctory: Extra inputs are not permitted"]


def test_unknown_kind_is_named() -> None:
    (message,) = _error_keys({"kind": "ftp", "directory": "x"})
    assert "'kind'" in message and "'ftp'" in message


def test_grpc_without_tls_is_refused_unless_loopback_is_named() -> None:
    (message,) = _error_keys({"kind": "grpc", "target": "registry.internal:7500"})
    assert "tls_ca" in message
    (message,) = _error_keys(
        {"kind": "grpc", "target": "registry.internal:7500", "insecure_loopback": True}
    )
    assert "insecure_loopback" in message


def test_grpc_tls_files_go_together() -> None:
    (message,) = _error_keys(
        {"kind": "grpc", "target": "registry.internal:7500", "tls_ca": "/etc/ca.pem"}
    )
    assert "tls_ca, tls_cert and tls_key go together" in message


@pytest.mark.parametrize("timeout", [0, -1, 301, "10"])
def test_bad_timeout_is_named(timeout: object) -> None:
    (message,) = _error_keys(
        {
            "kind": "grpc",
            "target": "127.0.0.1:1",
            "insecure_loopback": True,
            "timeout_seconds": timeout,
        }
    )
    assert message.startswith("grpc.timeout_seconds: ")


def test_bad_target_is_named() -> None:
    (message,) = _error_keys({"kind": "grpc", "target": "dns:///x", "insecure_loopback": True})
    assert message.startswith("grpc.target: ")


def test_plain_http_webhook_beyond_loopback_is_named() -> None:
    (message,) = _error_keys(
        {"kind": "webhook", "url": "http://registry.example/hook", "secret_file": "k"}
    )
    assert message.startswith("webhook.url: ")


def test_missing_key_is_named() -> None:
    assert _error_keys({"kind": "sql"}) == ["sql.database_url: Field required"]


def test_webhook_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    settings = adapter_settings.validate_python(
        {
            "kind": "webhook",
            "url": "https://registry.example/hook",
            "secret_file": str(_secret_file(tmp_path, 0o644)),
        }
    )
    with pytest.raises(ValueError, match=r"secret_file .* readable by group or others"):
        build_adapter(settings)


def test_unsupported_database_is_named_without_its_password() -> None:
    settings = adapter_settings.validate_python(
        {"kind": "sql", "database_url": "mysql://registry:hunter2@db/registry"}
    )
    with pytest.raises(ValueError, match="database_url") as raised:
        build_adapter(settings)
    assert "hunter2" not in str(raised.value)


def test_missing_tls_file_is_named(tmp_path: Path) -> None:
    settings = adapter_settings.validate_python(
        {
            "kind": "grpc",
            "target": "registry.internal:7500",
            "tls_ca": str(tmp_path / "ca.pem"),
            "tls_cert": str(tmp_path / "gw.pem"),
            "tls_key": str(tmp_path / "gw.key"),
        }
    )
    with pytest.raises(ValueError, match=r"ca\.pem cannot be read"):
        build_adapter(settings)
