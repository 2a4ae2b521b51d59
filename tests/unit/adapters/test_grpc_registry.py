"""The gRPC adapter against a reference registry served on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from adapters.base import APPLIED, InboundUpdate, RegistryOutcome, RegistryUnavailable
from adapters.grpc_registry import MAX_UPDATES_PER_CALL, GrpcRegistryAdapter
from gateway.connect import ClientIdentity
from gateway.pki.authority import IssuedCertificate, StateAuthority
from gateway.pki.keys import certificate_pem, private_key_pem
from pouch.v1 import civil_pb2, common_pb2, registry_pb2, registry_pb2_grpc
from pouch_devtools.demo.deployment import free_port
from pouch_devtools.reference_registry import (
    UNKNOWN_PERSON,
    ServedRegistry,
    start_reference_registry,
)


def _update(message_id: str, event: civil_pb2.CivilRecordUpdate) -> InboundUpdate:
    return InboundUpdate(
        message_id=message_id,
        sender_state="FR",
        agreement_id="FR-DE/civil-records",
        purpose="civil-status-update",
        update=event,
    )


def _birth(identifier: str = "") -> civil_pb2.CivilRecordUpdate:
    child = civil_pb2.Person(
        name=common_pb2.PersonName(given_names=["Léa"], family_names=["Martin"]),
        date_of_birth=common_pb2.CivilDate(year=2024, month=3, day=14),
        registry_identifier=identifier,
    )
    return civil_pb2.CivilRecordUpdate(
        event_type=civil_pb2.CIVIL_EVENT_TYPE_BIRTH,
        event_date=common_pb2.CivilDate(year=2024, month=3, day=14),
        parties=[civil_pb2.Party(role=civil_pb2.PARTY_ROLE_SUBJECT, person=child)],
    )


def _death(identifier: str) -> civil_pb2.CivilRecordUpdate:
    return civil_pb2.CivilRecordUpdate(
        event_type=civil_pb2.CIVIL_EVENT_TYPE_DEATH,
        event_date=common_pb2.CivilDate(year=2025, month=1, day=2),
        parties=[
            civil_pb2.Party(
                role=civil_pb2.PARTY_ROLE_SUBJECT,
                person=civil_pb2.Person(registry_identifier=identifier),
            )
        ],
    )


@contextlib.asynccontextmanager
async def _serving(
    tmp_path: Path, *, host: str = "127.0.0.1", timeout_s: float = 5.0
) -> AsyncIterator[tuple[ServedRegistry, GrpcRegistryAdapter]]:
    """A reference registry on loopback, and a plaintext adapter calling it."""
    served = await start_reference_registry(tmp_path / "registry.db", f"{host}:0")
    adapter = GrpcRegistryAdapter(f"{host}:{served.port}", None, timeout_s, insecure_loopback=True)
    try:
        yield served, adapter
    finally:
        await adapter.close()
        await served.stop(None)


def test_same_message_handed_over_twice_is_applied_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _serving(tmp_path) as (served, adapter):
            item = _update("m-birth-1", _birth("DE-0001"))
            assert await adapter.apply(item) == APPLIED
            assert await adapter.apply(item) == APPLIED
            assert served.registry.count_applied() == 1

    asyncio.run(scenario())


def test_concurrent_hand_overs_of_one_message_apply_it_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _serving(tmp_path, timeout_s=10.0) as (served, adapter):
            item = _update("m-race-1", _birth())
            outcomes = await asyncio.gather(*(adapter.apply(item) for _ in range(8)))
            assert set(outcomes) == {APPLIED}
            assert served.registry.count_applied() == 1

    asyncio.run(scenario())


def test_death_of_unknown_person_is_a_business_rejection(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _serving(tmp_path, host="localhost") as (served, adapter):
            outcome = await adapter.apply(_update("m-death-1", _death("DE-9999")))
            assert outcome == RegistryOutcome(applied=False, reason_code=UNKNOWN_PERSON)
            assert served.registry.count_applied() == 0

    asyncio.run(scenario())


@dataclass(frozen=True)
class _Pki:
    server_chain: bytes
    server_key: bytes
    ca: bytes
    client: ClientIdentity


def _pem(issued: IssuedCertificate) -> tuple[bytes, bytes]:
    assert issued.private_key is not None
    return certificate_pem(issued.certificate), private_key_pem(issued.private_key)


def _pki(state: str) -> _Pki:
    now = datetime.now(UTC)
    authority = StateAuthority.create(state, now=now)
    server_chain, server_key = _pem(
        authority.issue_gateway_certificate(
            dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=now
        )
    )
    client_chain, client_key = _pem(authority.issue_client_certificate("gateway", now=now))
    ca = certificate_pem(authority.ca_cert)
    return _Pki(server_chain, server_key, ca, ClientIdentity(ca, client_chain, client_key))


def test_update_travels_over_mutual_tls(tmp_path: Path) -> None:
    pki = _pki("DE")
    credentials = grpc.ssl_server_credentials(
        [(pki.server_key, pki.server_chain)],
        root_certificates=pki.ca,
        require_client_auth=True,
    )

    async def scenario() -> None:
        served = await start_reference_registry(
            tmp_path / "registry.db", "127.0.0.1:0", server_credentials=credentials
        )
        adapter = GrpcRegistryAdapter(f"127.0.0.1:{served.port}", pki.client, 5.0)
        try:
            assert await adapter.apply(_update("m-tls-1", _birth())) == APPLIED
            assert served.registry.count_applied() == 1
        finally:
            await adapter.close()
            await served.stop(None)

    asyncio.run(scenario())


def test_client_certificate_from_another_ca_is_refused_and_nothing_applied(
    tmp_path: Path,
) -> None:
    pki, stranger = _pki("DE"), _pki("FR")
    credentials = grpc.ssl_server_credentials(
        [(pki.server_key, pki.server_chain)],
        root_certificates=pki.ca,
        require_client_auth=True,
    )
    # Trusts the registry's CA, but presents a certificate the registry does not trust.
    identity = ClientIdentity(
        pki.ca, stranger.client.certificate_chain, stranger.client.private_key
    )

    async def scenario() -> None:
        served = await start_reference_registry(
            tmp_path / "registry.db", "127.0.0.1:0", server_credentials=credentials
        )
        adapter = GrpcRegistryAdapter(f"127.0.0.1:{served.port}", identity, 5.0)
        try:
            with pytest.raises(RegistryUnavailable):
                await adapter.apply(_update("m-tls-2", _birth()))
            assert served.registry.count_applied() == 0
        finally:
            await adapter.close()
            await served.stop(None)

    asyncio.run(scenario())


def test_registry_that_is_down_is_unavailable_not_rejected() -> None:
    async def scenario() -> None:
        adapter = GrpcRegistryAdapter(f"127.0.0.1:{free_port()}", None, 2.0, insecure_loopback=True)
        try:
            with pytest.raises(RegistryUnavailable) as raised:
                await adapter.apply(_update("m-down-1", _birth()))
            assert raised.value.reason == "REGISTRY_UNAVAILABLE"
        finally:
            await adapter.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "target", ["registry.example:7500", "10.0.0.8:7500", "0.0.0.0:7500", "[::1]:7500"]
)
def test_plaintext_channel_beyond_loopback_is_refused(target: str) -> None:
    with pytest.raises(ValueError, match="plaintext"):
        GrpcRegistryAdapter(target, None, 5.0, insecure_loopback=True)


def test_plaintext_channel_must_be_asked_for_by_name() -> None:
    with pytest.raises(ValueError, match="TLS identity"):
        GrpcRegistryAdapter("127.0.0.1:7500", None, 5.0)


@pytest.mark.parametrize("target", ["dns:///registry:7500", "registry", "registry:0", ""])
def test_target_must_be_host_and_port(target: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        GrpcRegistryAdapter(target, None, 5.0, insecure_loopback=True)


Behaviour = Callable[
    [registry_pb2.ApplyCivilUpdateRequest, grpc.aio.ServicerContext[Any, Any]],
    Awaitable[registry_pb2.ApplyCivilUpdateResponse],
]


class _ScriptedRegistry(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour

    async def ApplyCivilUpdate(
        self,
        request: registry_pb2.ApplyCivilUpdateRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> registry_pb2.ApplyCivilUpdateResponse:
        return await self.behaviour(request, context)

    async def ApplyCivilUpdates(
        self,
        request: registry_pb2.ApplyCivilUpdatesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> registry_pb2.ApplyCivilUpdatesResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "a release without batches")

    async def LookupIdentity(
        self,
        request: registry_pb2.LookupIdentityRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> registry_pb2.LookupIdentityResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")

    async def NotifyCaseEvent(
        self,
        request: registry_pb2.NotifyCaseEventRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> registry_pb2.NotifyCaseEventResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")


async def _against(behaviour: Behaviour) -> RegistryOutcome:
    server = grpc.aio.server()
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(_ScriptedRegistry(behaviour), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    adapter = GrpcRegistryAdapter(f"127.0.0.1:{port}", None, 5.0, insecure_loopback=True)
    try:
        return await adapter.apply(_update("m-scripted", _birth()))
    finally:
        await adapter.close()
        await server.stop(None)


def test_answer_without_outcome_is_not_taken_for_a_decision() -> None:
    async def no_outcome(
        request: registry_pb2.ApplyCivilUpdateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> registry_pb2.ApplyCivilUpdateResponse:
        return registry_pb2.ApplyCivilUpdateResponse()

    with pytest.raises(RegistryUnavailable, match="without an outcome"):
        asyncio.run(_against(no_outcome))


def test_duplicate_answer_counts_as_applied() -> None:
    async def duplicate(
        request: registry_pb2.ApplyCivilUpdateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> registry_pb2.ApplyCivilUpdateResponse:
        assert request.message_id == "m-scripted"
        return registry_pb2.ApplyCivilUpdateResponse(outcome=registry_pb2.APPLY_OUTCOME_DUPLICATE)

    assert asyncio.run(_against(duplicate)) == APPLIED


def test_invalid_argument_status_is_a_rejection_with_stable_reason() -> None:
    async def invalid(
        request: registry_pb2.ApplyCivilUpdateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> registry_pb2.ApplyCivilUpdateResponse:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad date")

    outcome = asyncio.run(_against(invalid))
    assert outcome == RegistryOutcome(applied=False, reason_code="REGISTRY_INVALID_ARGUMENT")


def test_registry_internal_error_is_unavailable() -> None:
    async def crash(
        request: registry_pb2.ApplyCivilUpdateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> registry_pb2.ApplyCivilUpdateResponse:
        raise RuntimeError("registry bug")

    with pytest.raises(RegistryUnavailable, match="UNKNOWN"):
        asyncio.run(_against(crash))


def test_a_batch_is_applied_in_order_each_as_alone(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _serving(tmp_path) as (served, adapter):
            born = _update("m-batch-birth", _birth("DE-0700"))
            outcomes = await adapter.apply_many(
                [
                    _update("m-batch-unknown", _death("DE-0701")),
                    born,
                    _update("m-batch-death", _death("DE-0700")),  # known once the birth is in
                    born,  # the same message again in the same batch
                ]
            )
            assert outcomes == [
                RegistryOutcome(applied=False, reason_code=UNKNOWN_PERSON),
                APPLIED,
                APPLIED,
                APPLIED,
            ]
            assert served.registry.count_applied() == 2
            # The rejected update left nothing: applied later, alone, it is decided afresh.
            assert await adapter.apply(_update("m-batch-unknown", _birth("DE-0702"))) == APPLIED
            assert served.registry.count_applied() == 3

    asyncio.run(scenario())


def test_more_updates_than_one_call_takes_are_split_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        count = 2 * MAX_UPDATES_PER_CALL + 3
        async with _serving(tmp_path) as (served, adapter):
            births = [_update(f"m-many-{i}", _birth(f"DE-{i:04d}")) for i in range(count)]
            assert await adapter.apply_many(births) == [APPLIED] * count
            assert served.registry.count_applied() == count

    asyncio.run(scenario())


@pytest.mark.parametrize("count", [0, MAX_UPDATES_PER_CALL + 1])
def test_the_registry_refuses_a_batch_outside_its_size(tmp_path: Path, count: int) -> None:
    async def scenario() -> None:
        served = await start_reference_registry(tmp_path / "registry.db", "127.0.0.1:0")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            updates = [
                registry_pb2.ApplyCivilUpdateRequest(
                    message_id=f"m-size-{i}", sender_state="FR", update=_birth()
                )
                for i in range(count)
            ]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ApplyCivilUpdates(
                    registry_pb2.ApplyCivilUpdatesRequest(updates=updates), timeout=5.0
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "updates" in (refused.value.details() or "")
        assert served.registry.count_applied() == 0
        await served.stop(None)

    asyncio.run(scenario())


def test_a_registry_without_batches_is_given_the_updates_one_by_one_in_order() -> None:
    seen: list[str] = []

    async def record(
        request: registry_pb2.ApplyCivilUpdateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> registry_pb2.ApplyCivilUpdateResponse:
        seen.append(request.message_id)
        return registry_pb2.ApplyCivilUpdateResponse(outcome=registry_pb2.APPLY_OUTCOME_APPLIED)

    async def scenario() -> list[RegistryOutcome]:
        server = grpc.aio.server()
        registry_pb2_grpc.add_RegistryServiceServicer_to_server(_ScriptedRegistry(record), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        adapter = GrpcRegistryAdapter(f"127.0.0.1:{port}", None, 5.0, insecure_loopback=True)
        try:
            first = await adapter.apply_many([_update(f"m-old-{i}", _birth()) for i in range(5)])
            second = await adapter.apply_many([_update(f"m-old-{i}", _birth()) for i in (5, 6)])
            return first + second
        finally:
            await adapter.close()
            await server.stop(None)

    assert asyncio.run(scenario()) == [APPLIED] * 7
    assert seen == [f"m-old-{i}" for i in range(7)]
