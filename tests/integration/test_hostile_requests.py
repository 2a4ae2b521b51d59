"""Hostile requests on both listeners of a running gateway are refused by name.

Only BE runs, in this process, over real TLS: its local API is called by BE's own
operator (certificate and bound token), its peer API by AT's gateway identity. Each
test first shows the well-formed call answered, so a stopped listener cannot pass it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.connect import bearer
from gateway.pki.authority import StateAuthority
from gateway.pki.identity import gateway_uri
from gateway.pki.keys import certificate_fingerprint, load_certificates_pem
from gateway.server import page_tokens
from gateway.server.local_api import METHOD_SCOPES
from pouch.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    civil_pb2,
    civil_pb2_grpc,
    peer_pb2,
    peer_pb2_grpc,
    representation_pb2,
    representation_pb2_grpc,
)
from pouch_devtools.demo.deployment import Site
from tests.integration.conftest import (
    assert_safe_message,
    channel_to,
    error_reason,
    issued_identity,
)
from tests.integration.exchange_fixtures import (
    RunningGateways,
    be_alone,
    birth_update,
    field_violations,
    submission,
)

TIMEOUT = 10.0
ALL_SCOPES = (
    "admin",
    "audit:read",
    "civil:submit",
    "identity:query",
    "representation:request",
    "representation:act",
)
GARBAGE = (
    b"\xff",  # a field number of 0x7f with an invalid wire type
    b"\x0a\xff\xff\xff\xff\x0f",  # a length far past the end of the message
    b"\x0a\x05ab",  # a length past the end of the message
    b"\x08" + b"\xff" * 11,  # a varint of eleven bytes
)


@pytest.fixture(scope="module")
def be_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateways]:
    """BE's gateway alone, shared by the module's tests (made once: 0.4 s to set
    up, plus its stop, for each of 16 tests if it were per test).

    Sharing is safe: tests run one at a time; nothing but a test's own synchronous calls
    reaches BE (AT is not running, so no partner traffic arrives unasked), and each test
    asserts on the answers to its own calls; counters are compared with the value it read
    before its call, and the audit entry it looks for carries the fingerprint of a
    certificate issued for that test alone (the module writes far fewer than the 1,000
    refusals one page reads).
    """
    with be_alone(tmp_path_factory.mktemp("hostile-requests"), ["AT", "BE", "CH"]) as running:
        yield running


def be_site(running: RunningGateways) -> Site:
    return running.sites["BE"]


def local_channel(site: Site) -> grpc.Channel:
    return channel_to(
        site.local_target,
        trusted_ca=site.pki.ca_cert.read_bytes(),
        chain=site.pki.client_cert("operator").read_bytes(),
        key=site.pki.client_key("operator").read_bytes(),
    )


def peer_channel(
    running: RunningGateways, identity: tuple[bytes, bytes] | None = None
) -> grpc.Channel:
    at, be = running.sites["AT"], running.sites["BE"]
    chain, key = identity or (at.pki.gateway_cert.read_bytes(), at.pki.gateway_key.read_bytes())
    return channel_to(be.peer_target, trusted_ca=be.pki.ca_cert.read_bytes(), chain=chain, key=key)


def full_token(site: Site | RunningGateways) -> tuple[tuple[str, str], ...]:
    """BE's operator's bearer token with every scope (``site`` or the running gateways')."""
    if isinstance(site, RunningGateways):
        site = be_site(site)
    return bearer(site.token(ALL_SCOPES, now=time.time()))


def raw_call(
    channel: grpc.Channel,
    method: MethodDescriptor,
    items: Sequence[bytes],
    metadata: tuple[tuple[str, str], ...] = (),
) -> list[bytes]:
    """Call ``method`` with these bytes as its request (or request stream)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    if method.client_streaming and method.server_streaming:
        return list(
            channel.stream_stream(path, None, None)(iter(items), metadata=metadata, timeout=TIMEOUT)
        )
    if method.client_streaming:
        return [
            channel.stream_unary(path, None, None)(iter(items), metadata=metadata, timeout=TIMEOUT)
        ]
    if method.server_streaming:
        (item,) = items
        return list(
            channel.unary_stream(path, None, None)(item, metadata=metadata, timeout=TIMEOUT)
        )
    (item,) = items
    return [channel.unary_unary(path, None, None)(item, metadata=metadata, timeout=TIMEOUT)]


def local_methods() -> list[MethodDescriptor]:
    pool = descriptor_pool.Default()
    found = []
    for path in METHOD_SCOPES:
        service, _, name = path.lstrip("/").partition("/")
        found.append(pool.FindServiceByName(service).methods_by_name[name])
    return found


def peer_methods() -> list[MethodDescriptor]:
    return list(peer_pb2.DESCRIPTOR.services_by_name["PeerService"].methods)


def assert_malformed(error: grpc.RpcError) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert error_reason(error) == "MALFORMED_REQUEST"
    assert "class" not in f"{error.details()}" and "Error" not in f"{error.details()}"
    assert_safe_message(error)


def test_malformed_protobuf_on_every_local_method_is_malformed_request(
    be_only: RunningGateways,
) -> None:
    site = be_site(be_only)
    with local_channel(site) as channel:
        for method in local_methods():
            for garbage in GARBAGE:
                with pytest.raises(grpc.RpcError) as refused:
                    raw_call(channel, method, [garbage], full_token(site))
                assert_malformed(refused.value)


def test_malformed_protobuf_on_every_peer_method_is_malformed_request(
    be_only: RunningGateways,
) -> None:
    with peer_channel(be_only) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        assert stub.Ping(peer_pb2.PingRequest(nonce="n"), timeout=TIMEOUT).caller_state == "AT"
        for method in peer_methods():
            for garbage in GARBAGE:
                with pytest.raises(grpc.RpcError) as refused:
                    raw_call(channel, method, [garbage])
                assert_malformed(refused.value)


def test_malformed_protobuf_without_token_is_unauthenticated_not_parsed(
    be_only: RunningGateways,
) -> None:
    site = be_site(be_only)
    (method,) = [m for m in local_methods() if m.name == "ListEntries"]
    with local_channel(site) as channel:
        with pytest.raises(grpc.RpcError) as malformed:
            raw_call(channel, method, [GARBAGE[0]], full_token(site))
        assert_malformed(malformed.value)
        with pytest.raises(grpc.RpcError) as refused:
            raw_call(channel, method, [GARBAGE[0]])
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_malformed_request_is_counted_in_the_request_metrics(be_only: RunningGateways) -> None:
    site, gateway = be_site(be_only), be_only.gateway("BE")
    labels = {
        "listener": "local",
        "service": "pouch.v1.AuditService",
        "method": "GetCheckpoint",
        "code": "INVALID_ARGUMENT",
    }
    before = gateway.metrics.registry.get_sample_value("pouch_requests_total", labels) or 0.0
    (method,) = [m for m in local_methods() if m.name == "GetCheckpoint"]
    with local_channel(site) as channel, pytest.raises(grpc.RpcError):
        raw_call(channel, method, [GARBAGE[1]], full_token(site))
    # The call is counted once its handler has returned, a moment after the caller heard.
    deadline = time.monotonic() + 5
    while (after := gateway.metrics.registry.get_sample_value("pouch_requests_total", labels)) != (
        before + 1
    ) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert after == before + 1
    refusals = gateway.metrics.registry.get_sample_value(
        "pouch_refusals_total", {"listener": "local", "reason": "MALFORMED_REQUEST"}
    )
    assert refusals is not None and refusals >= 1


def test_malformed_item_in_submit_updates_stream_ends_it_with_invalid_argument(
    be_only: RunningGateways,
) -> None:
    site = be_site(be_only)
    good = civil_pb2.SubmitUpdatesRequest(
        update=submission(
            birth_update(date.today()), agreement_id="at-be-civil", recipient_state="AT"
        )
    ).SerializeToString()
    (method,) = [m for m in local_methods() if m.name == "SubmitUpdates"]
    answers: list[civil_pb2.SubmitUpdatesResponse] = []
    with local_channel(site) as channel:
        call = channel.stream_stream(
            "/pouch.v1.CivilRecordService/SubmitUpdates",
            request_serializer=None,
            response_deserializer=civil_pb2.SubmitUpdatesResponse.FromString,
        )(iter([good, GARBAGE[1]]), metadata=full_token(site), timeout=TIMEOUT)
        with pytest.raises(grpc.RpcError) as refused:
            answers.extend(call)
    assert method.client_streaming
    assert len(answers) == 1 and answers[0].client_reference
    assert_malformed(refused.value)


def test_submit_updates_item_with_a_control_character_is_answered_alone(
    be_only: RunningGateways,
) -> None:
    site = be_site(be_only)
    update = submission(
        birth_update(date.today()), agreement_id="at-be-civil", recipient_state="AT"
    )
    update.client_reference = "ref-\x00-1"
    with local_channel(site) as channel:
        call = channel.stream_stream(
            "/pouch.v1.CivilRecordService/SubmitUpdates",
            request_serializer=civil_pb2.SubmitUpdatesRequest.SerializeToString,
            response_deserializer=civil_pb2.SubmitUpdatesResponse.FromString,
        )
        (answer,) = list(
            call(
                iter([civil_pb2.SubmitUpdatesRequest(update=update)]),
                metadata=full_token(site),
                timeout=TIMEOUT,
            )
        )
    assert answer.error_reason == "VALIDATION"
    assert "client_reference" in answer.error_message


def audit_stub(channel: grpc.Channel) -> audit_pb2_grpc.AuditServiceStub:
    return audit_pb2_grpc.AuditServiceStub(channel)


def refused_fields(error: grpc.RpcError) -> list[str]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert_safe_message(error)
    return field_violations(error)


def far_future() -> Timestamp:
    return Timestamp(seconds=10**13)


def test_out_of_range_timestamp_in_list_entries_names_the_field(be_only: RunningGateways) -> None:
    site = be_site(be_only)
    with local_channel(site) as channel:
        audit_stub(channel).ListEntries(
            audit_pb2.ListEntriesRequest(since=Timestamp(seconds=1)),
            metadata=full_token(site),
            timeout=TIMEOUT,
        )
        with pytest.raises(grpc.RpcError) as refused:
            audit_stub(channel).ListEntries(
                audit_pb2.ListEntriesRequest(since=far_future()),
                metadata=full_token(site),
                timeout=TIMEOUT,
            )
    assert refused_fields(refused.value) == ["since"]


def test_out_of_range_timestamp_in_export_bundle_names_the_field(be_only: RunningGateways) -> None:
    site = be_site(be_only)
    with local_channel(site) as channel, pytest.raises(grpc.RpcError) as refused:
        list(
            audit_stub(channel).ExportBundle(
                audit_pb2.ExportBundleRequest(until=Timestamp(seconds=-(10**13))),
                metadata=full_token(site),
                timeout=TIMEOUT,
            )
        )
    assert refused_fields(refused.value) == ["until"]


def test_out_of_range_timestamp_in_list_cases_names_the_field(be_only: RunningGateways) -> None:
    site = be_site(be_only)
    with local_channel(site) as channel:
        stub = representation_pb2_grpc.RepresentationServiceStub(channel)
        stub.ListCases(
            representation_pb2.ListCasesRequest(), metadata=full_token(site), timeout=TIMEOUT
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListCases(
                representation_pb2.ListCasesRequest(
                    deadline_before=Timestamp(seconds=1, nanos=2_000_000_000)
                ),
                metadata=full_token(site),
                timeout=TIMEOUT,
            )
    assert refused_fields(refused.value) == ["deadline_before"]


def test_unknown_event_kind_in_list_entries_names_the_field(be_only: RunningGateways) -> None:
    site = be_site(be_only)
    with local_channel(site) as channel:
        audit_stub(channel).ListEntries(
            audit_pb2.ListEntriesRequest(event_kind="refused"),
            metadata=full_token(site),
            timeout=TIMEOUT,
        )
        with pytest.raises(grpc.RpcError) as refused:
            audit_stub(channel).ListEntries(
                audit_pb2.ListEntriesRequest(event_kind="no-such-kind"),
                metadata=full_token(site),
                timeout=TIMEOUT,
            )
    assert refused_fields(refused.value) == ["event_kind"]


def test_unknown_enum_number_in_list_entries_names_the_field(be_only: RunningGateways) -> None:
    site = be_site(be_only)
    request = audit_pb2.ListEntriesRequest()
    request.exchange_type = 77  # type: ignore[assignment]
    with local_channel(site) as channel, pytest.raises(grpc.RpcError) as refused:
        audit_stub(channel).ListEntries(request, metadata=full_token(site), timeout=TIMEOUT)
    assert refused_fields(refused.value) == ["exchange_type"]


@pytest.mark.parametrize(
    "token",
    [
        "١٢٣",  # digits, but not ASCII ones
        "9" * 5000,  # past what int() reads
        "12",  # the bare index the listing used to issue
        page_tokens.issue("civil.updates", "12"),  # another listing's token
        page_tokens.issue("audit.entries", "12")[:-1] + "0",  # altered
    ],
)
def test_page_token_not_issued_by_list_entries_is_refused(
    be_only: RunningGateways, token: str
) -> None:
    site = be_site(be_only)
    with local_channel(site) as channel:
        audit_stub(channel).ListEntries(
            audit_pb2.ListEntriesRequest(page_token=page_tokens.issue("audit.entries", "0")),
            metadata=full_token(site),
            timeout=TIMEOUT,
        )
        with pytest.raises(grpc.RpcError) as refused:
            audit_stub(channel).ListEntries(
                audit_pb2.ListEntriesRequest(page_token=token),
                metadata=full_token(site),
                timeout=TIMEOUT,
            )
    assert refused_fields(refused.value) == ["page_token"]


def test_page_token_not_issued_by_list_updates_is_refused(be_only: RunningGateways) -> None:
    site = be_site(be_only)
    with local_channel(site) as channel:
        stub = civil_pb2_grpc.CivilRecordServiceStub(channel)
        stub.ListUpdates(
            civil_pb2.ListUpdatesRequest(page_token=page_tokens.issue("civil.updates", "m")),
            metadata=full_token(site),
            timeout=TIMEOUT,
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListUpdates(
                civil_pb2.ListUpdatesRequest(page_token="x" * 600),
                metadata=full_token(site),
                timeout=TIMEOUT,
            )
    assert refused_fields(refused.value) == ["page_token"]


def test_control_character_in_a_text_field_names_the_field(be_only: RunningGateways) -> None:
    site = be_site(be_only)
    with local_channel(site) as channel, pytest.raises(grpc.RpcError) as refused:
        audit_stub(channel).ListEntries(
            audit_pb2.ListEntriesRequest(agreement_id="at-be-civil\x1b[2J"),
            metadata=full_token(site),
            timeout=TIMEOUT,
        )
    assert refused_fields(refused.value) == ["agreement_id"]


def test_peer_certificate_claiming_another_state_is_audited_with_its_fingerprint(
    be_only: RunningGateways,
) -> None:
    at, gateway = be_only.sites["AT"], be_only.gateway("BE")
    with peer_channel(be_only) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        assert stub.Ping(peer_pb2.PingRequest(nonce="n"), timeout=TIMEOUT).caller_state == "AT"
    # AT's CA issues a certificate whose SAN claims to be CH's gateway.
    issued = StateAuthority.load(at.pki.root).issue_certificate(
        common_name="impostor",
        san_uris=[gateway_uri("CH")],
        dns_names=["localhost"],
        server_auth=True,
        client_auth=True,
        now=datetime.now(UTC),
        validity_days=1,
    )
    identity = issued_identity(issued)
    fingerprint = certificate_fingerprint(load_certificates_pem(identity[0])[0])
    with peer_channel(be_only, identity) as channel, pytest.raises(grpc.RpcError) as refused:
        peer_pb2_grpc.PeerServiceStub(channel).Ping(
            peer_pb2.PingRequest(nonce="n"), timeout=TIMEOUT
        )
    assert error_reason(refused.value) == "SAN_MISMATCH"
    assert gateway.exchanges is not None
    entries = gateway.exchanges.audit_log.entries(event_kind="refused", limit=1000)
    (entry,) = [e for e in entries if e.principal == f"gateway-certificate:{fingerprint}"]
    assert entry.reason_code == "SAN_MISMATCH"
    counted = gateway.metrics.registry.get_sample_value(
        "pouch_refusals_total", {"listener": "peer", "reason": "SAN_MISMATCH"}
    )
    assert counted is not None and counted >= 1


@pytest.mark.parametrize(
    "text", [b"\xc3\x28\xa0", b"\xed\xa0\x80"], ids=["invalid-utf8", "lone-surrogate"]
)
def test_text_field_that_is_not_utf8_is_malformed_request(
    be_only: RunningGateways, text: bytes
) -> None:
    site = be_site(be_only)
    (method,) = [m for m in local_methods() if m.name == "ListEntries"]
    agreement_id = b"\x1a" + bytes([len(text)]) + text  # field 3, agreement_id
    with local_channel(site) as channel:
        raw_call(channel, method, [b"\x1a\x02at"], full_token(site))
        with pytest.raises(grpc.RpcError) as refused:
            raw_call(channel, method, [agreement_id], full_token(site))
    assert_malformed(refused.value)
