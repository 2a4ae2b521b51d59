"""The mutual-TLS gRPC registry, built with the tools given: ``pouch pki issue-server``
for the registry's endpoint and ``pouch pki issue-client`` for the gateway's adapter,
configured as the README's ``[registry] kind = "grpc"`` example says (``tls_ca`` is the
state's ``ca.crt``), with the CA kept offline."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

from adapters.base import APPLIED, InboundUpdate, RegistryUnavailable
from adapters.factory import build_adapter
from adapters.settings import adapter_settings
from gateway.cli.pki import pki
from gateway.pki.directory import StateDirectory
from pouch.v1 import civil_pb2, common_pb2
from pouch_devtools.reference_registry import start_reference_registry


def _pouch_pki(*args: str) -> None:
    result = CliRunner().invoke(pki, list(args))
    assert result.exit_code == 0, result.output


def _state(tmp_path: Path) -> tuple[StateDirectory, Path]:
    root, key_dir = tmp_path / "AT" / "pki", tmp_path / "offline"
    _pouch_pki(
        *("init", "--state", "AT", "--out", str(root), "--peer-endpoint", "gw.at.example:7444"),
        *("--offline-ca", "--ca-key-out", str(key_dir)),
    )
    ca_key = key_dir / "ca.key"
    _pouch_pki(
        *("issue-client", "--state-dir", str(root), "--name", "registry-adapter"),
        *("--ca-key", str(ca_key)),
    )
    return StateDirectory(root), ca_key


def _birth() -> InboundUpdate:
    child = civil_pb2.Person(
        name=common_pb2.PersonName(given_names=["Lea"], family_names=["Huber"]),
        date_of_birth=common_pb2.CivilDate(year=2026, month=3, day=14),
    )
    return InboundUpdate(
        message_id="m-registry-tls-1",
        sender_state="BE",
        agreement_id="at-be-civil",
        purpose="registry_update",
        update=civil_pb2.CivilRecordUpdate(
            event_type=civil_pb2.CIVIL_EVENT_TYPE_BIRTH,
            event_date=common_pb2.CivilDate(year=2026, month=3, day=14),
            parties=[civil_pb2.Party(role=civil_pb2.PARTY_ROLE_SUBJECT, person=child)],
        ),
    )


async def _hand_over(state: StateDirectory, server_name: str, db: Path) -> bool:
    """Serve a registry with ``servers/<server_name>`` requiring clients of the state CA,
    and hand it one update through the adapter the README's configuration builds."""
    server_credentials = grpc.ssl_server_credentials(
        [
            (
                state.server_key(server_name).read_bytes(),
                state.server_cert(server_name).read_bytes(),
            )
        ],
        root_certificates=state.ca_cert.read_bytes(),
        require_client_auth=True,
    )
    served = await start_reference_registry(
        db, "127.0.0.1:0", server_credentials=server_credentials
    )
    settings = adapter_settings.validate_python(
        {
            "kind": "grpc",
            "target": f"localhost:{served.port}",
            "tls_ca": state.ca_cert,
            "tls_cert": state.client_cert("registry-adapter"),
            "tls_key": state.client_key("registry-adapter"),
            "timeout_seconds": 5.0,
        }
    )
    adapter = build_adapter(settings)
    try:
        outcome = await adapter.apply(_birth())
        return outcome == APPLIED
    finally:
        await adapter.close()
        await served.stop(None)


def test_a_registry_certificate_from_issue_server_carries_the_gateways_updates(
    tmp_path: Path,
) -> None:
    state, ca_key = _state(tmp_path)
    _pouch_pki(
        *("issue-server", "--state-dir", str(state.root), "--name", "registry"),
        *("--dns", "localhost", "--ip", "127.0.0.1", "--ca-key", str(ca_key)),
    )
    assert asyncio.run(_hand_over(state, "registry", tmp_path / "registry.db"))


def test_a_registry_certificate_for_another_name_is_refused_by_the_gateway(
    tmp_path: Path,
) -> None:
    state, ca_key = _state(tmp_path)
    _pouch_pki(
        *("issue-server", "--state-dir", str(state.root), "--name", "registry"),
        *("--dns", "localhost", "--ca-key", str(ca_key)),
    )
    assert asyncio.run(_hand_over(state, "registry", tmp_path / "first.db"))
    _pouch_pki(
        *("issue-server", "--state-dir", str(state.root), "--name", "elsewhere"),
        *("--dns", "registry.at.example", "--ca-key", str(ca_key)),
    )
    with pytest.raises(RegistryUnavailable):
        asyncio.run(_hand_over(state, "elsewhere", tmp_path / "second.db"))
