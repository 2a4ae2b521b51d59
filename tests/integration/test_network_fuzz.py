"""Every RPC of both APIs, driven over real TLS with hostile messages: refused by name.

BE's gateway runs alone, in this process. Hypothesis draws, for any method of the
local API (called by BE's operator with every scope) or of the peer API (called with
AT's genuine gateway identity):

* a message of the method's own type whose fields hold hostile values (control
  characters, unpaired and unusual code points, very long text, extreme numbers, enum
  numbers the contract does not list, timestamps out of range), nested a few levels;
* the bytes of such a message mutated (flipped, cut, spliced, repeated);
* for ``Deliver``, an envelope AT genuinely signed around a hostile payload (random
  JSON trees, duplicate keys, NaN, huge integers, deep nesting, invalid UTF-8).

For every call: the answer is OK or a status other than ``INTERNAL`` and ``UNKNOWN``;
a refused call stored nothing (outbox, inbox, cases, identity queries keep their row
counts); no log record carries a traceback. After the run the gateway still answers
health checks as SERVING. Budgets come from ``tests/fuzz_budget.py``.
"""

from __future__ import annotations

import json
import logging
import string
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from gateway.envelope import EnvelopeSigner
from gateway.server.app import Gateway
from gateway.store.tables import case_events, identity_queries, inbox, outbox, representation_cases
from pouch.v1 import peer_pb2
from tests.fuzz_budget import examples
from tests.integration.exchange_fixtures import (
    RunningGateways,
    agreement_digest,
    be_alone,
    civil_header,
    stated_fingerprints,
)
from tests.integration.test_hostile_requests import (
    full_token,
    local_channel,
    local_methods,
    peer_channel,
    peer_methods,
)
from tests.unit.test_parsers_fuzz import mutated

TIMEOUT = 5.0
FORBIDDEN_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
STORED = (outbox, inbox, representation_cases, case_events, identity_queries)
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


class _Tracebacks(logging.Handler):
    """Collects every log record that carries or quotes a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info or "Traceback" in text or 'File "' in text:
            self.found.append(f"{record.name}: {text[:200]}")


@pytest.fixture(scope="module")
def be_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateways]:
    """BE's gateway alone, shared by the module's tests (made once: 0.5 s to set
    up, plus its stop, for each of 3 tests if it were per test).

    Sharing is safe: tests run one at a time; nothing but a test's own synchronous calls
    reaches BE (AT is not running, so no partner traffic arrives unasked), and each test
    compares the stored row counts with those it read itself before each refused call,
    and its own traceback collector is per test.
    """
    with be_alone(tmp_path_factory.mktemp("network-fuzz"), ["AT", "BE", "CH"]) as running:
        yield running


@pytest.fixture
def tracebacks() -> Iterator[_Tracebacks]:
    handler = _Tracebacks()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


# -- hostile values ------------------------------------------------------------------------

HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=8).map(lambda s: s * 700),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "a\x1b[2Jb",
            "\u202e",
            "\ufeff",
            "\U0010ffff",
            "at-be-civil",
            "BE",
            "9" * 40,
        ]
    ),
    st.text(alphabet=string.digits + "-:TZ.", max_size=30),
)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return HOSTILE_TEXT
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values] if field.enum_type else [0]
        return st.one_of(st.sampled_from(known), st.integers(-5, 200))
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    low, high = _INT_RANGES[kind]
    return st.one_of(st.integers(low, high), st.sampled_from([low, high, 0, 1, -1 if low else 1]))


@st.composite
def hostile_message(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Message:
    message = GetMessageClass(descriptor)()
    if descriptor.full_name == "google.protobuf.Timestamp":
        message.seconds = draw(st.integers(-(2**40), 2**40))  # type: ignore[attr-defined]
        message.nanos = draw(st.integers(-(2**31), 2**31 - 1))  # type: ignore[attr-defined]
        return message
    fields = list(descriptor.fields)
    chosen = (
        draw(st.lists(st.sampled_from(fields), max_size=len(fields), unique=True)) if fields else []
    )
    for field in chosen:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3 or field.message_type is None:
                continue
            count = draw(st.integers(1, 3)) if field.is_repeated else 1
            for _ in range(count):
                value = draw(hostile_message(field.message_type, depth + 1))
                if field.is_repeated:
                    getattr(message, field.name).add().CopyFrom(value)
                else:
                    getattr(message, field.name).CopyFrom(value)
            continue
        values = draw(st.lists(_scalar(field), min_size=1, max_size=3))
        try:
            if field.is_repeated:
                getattr(message, field.name).extend(values)
            else:
                setattr(message, field.name, values[0])
        except (ValueError, TypeError):
            pass  # a value the runtime itself will not hold (e.g. a lone surrogate)
    return message


def _encoded(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    def serialize(message: Message) -> bytes:
        return message.SerializeToString()

    shaped = hostile_message(descriptor).map(serialize)
    return st.one_of(shaped, shaped.flatmap(mutated))


# -- calls -------------------------------------------------------------------------------


def _call(
    channel: grpc.Channel,
    method: MethodDescriptor,
    items: Sequence[bytes],
    metadata: tuple[tuple[str, str], ...],
) -> grpc.StatusCode:
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.client_streaming and method.server_streaming:
            call = channel.stream_stream(path, None, None)
            list(call(iter(items), metadata=metadata, timeout=TIMEOUT))
        elif method.server_streaming:
            # Read a few answers only: a watch that was opened stays open.
            stream = channel.unary_stream(path, None, None)(
                items[0], metadata=metadata, timeout=TIMEOUT
            )
            for _, _answer in zip(range(3), stream, strict=False):
                pass
            stream.cancel()  # type: ignore[no-untyped-call]
        else:
            channel.unary_unary(path, None, None)(items[0], metadata=metadata, timeout=TIMEOUT)
    except grpc.RpcError as e:
        code = e.code()
        assert code not in FORBIDDEN_CODES, (path, code, e.details())
        return code
    return grpc.StatusCode.OK


def _stored(gateway: Gateway) -> tuple[int, ...]:
    with gateway.engine.connect() as conn:
        return tuple(
            int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in STORED
        )


def _called(gateway: Gateway, call: Any) -> None:
    before = _stored(gateway)
    code = call()
    event(code.name)  # the spread of answers, shown by --hypothesis-show-statistics
    if code not in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
        assert _stored(gateway) == before, "a refused call stored something"


def _healthy(channel: grpc.Channel) -> None:
    answer = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=TIMEOUT
    )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def local(be_only: RunningGateways) -> Iterator[grpc.Channel]:
    """One channel for every call of the module: a handshake per input would dominate
    (hundreds of inputs per test). A channel holds no state a call could leave behind."""
    with local_channel(be_only.sites["BE"]) as channel:
        yield channel


@pytest.fixture(scope="module")
def peer(be_only: RunningGateways) -> Iterator[grpc.Channel]:
    """As ``local``, to the peer API as AT's gateway."""
    with peer_channel(be_only) as channel:
        yield channel


FUZZ = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
LOCAL = local_methods()
PEER = peer_methods()


@st.composite
def local_call(draw: st.DrawFn) -> tuple[MethodDescriptor, list[bytes]]:
    method = draw(st.sampled_from(LOCAL))
    count = draw(st.integers(1, 3)) if method.client_streaming else 1
    return method, [draw(_encoded(method.input_type)) for _ in range(count)]


@st.composite
def peer_call(draw: st.DrawFn) -> tuple[MethodDescriptor, list[bytes]]:
    method = draw(st.sampled_from(PEER))
    return method, [draw(_encoded(method.input_type))]


@pytest.mark.fuzz
@settings(max_examples=examples(250), **FUZZ)  # type: ignore[arg-type]
@given(call=local_call())
def test_hostile_messages_on_every_local_method_are_refused_by_name(
    be_only: RunningGateways,
    local: grpc.Channel,
    tracebacks: _Tracebacks,
    call: tuple[MethodDescriptor, list[bytes]],
) -> None:
    method, items = call
    _called(be_only.gateway("BE"), lambda: _call(local, method, items, full_token(be_only)))
    assert tracebacks.found == []
    _healthy(local)


@pytest.mark.fuzz
@settings(max_examples=examples(250), **FUZZ)  # type: ignore[arg-type]
@given(call=peer_call())
def test_hostile_messages_on_every_peer_method_are_refused_by_name(
    be_only: RunningGateways,
    local: grpc.Channel,
    peer: grpc.Channel,
    tracebacks: _Tracebacks,
    call: tuple[MethodDescriptor, list[bytes]],
) -> None:
    method, items = call
    _called(be_only.gateway("BE"), lambda: _call(peer, method, items, ()))
    assert tracebacks.found == []
    _healthy(local)


# -- payloads a partner genuinely signed ------------------------------------------------------

JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    HOSTILE_TEXT,
)
JSON_TREE = st.recursive(
    JSON_LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(HOSTILE_TEXT, inner, max_size=5)
    ),
    max_leaves=20,
)
CIVIL_KEYS = ["event_type", "event", "parties", "registered_at", "act_reference", "person"]


def _raw_payloads() -> st.SearchStrategy[bytes]:
    tree = st.dictionaries(st.sampled_from(CIVIL_KEYS) | HOSTILE_TEXT, JSON_TREE, max_size=6)
    as_json = tree.map(lambda t: json.dumps(t, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    crafted = st.sampled_from(
        [
            b'{"event_type":"birth","event_type":"death"}',
            b'{"event_type":NaN}',
            b'{"event_type":"birth","n":' + b"9" * 5000 + b"}",
            b'{"a":' * 1000 + b"1" + b"}" * 1000,
            b"[" * 5000 + b"]" * 5000,
            b'{"event_type":"\\ud800"}',
            b'{"event_type":"birth","event":{"date":{"year":1000000000000000000000000000000}}}',
            b"\xff\xfe{}",
        ]
    )
    return st.one_of(as_json, as_json.flatmap(mutated), crafted)


@pytest.mark.fuzz
@settings(max_examples=examples(150), **FUZZ)  # type: ignore[arg-type]
@given(payload=_raw_payloads())
def test_hostile_payload_in_a_genuinely_signed_envelope_is_refused_by_name(
    be_only: RunningGateways, peer: grpc.Channel, tracebacks: _Tracebacks, payload: bytes
) -> None:
    at, be = be_only.sites["AT"], be_only.sites["BE"]
    header = civil_header(
        sender="AT",
        recipient="BE",
        agreement_id="at-be-civil",
        agreement_digest=agreement_digest(be, "at-be-civil"),
        message_id=str(uuid.uuid4()),
    )
    envelope = EnvelopeSigner.from_state_directory(at.pki).sign(header, payload)
    method = peer_pb2.DESCRIPTOR.services_by_name["PeerService"].methods_by_name["Deliver"]
    stated = stated_fingerprints(at, [envelope])
    request = peer_pb2.DeliverRequest(envelope=envelope, hash_key_fingerprints=stated)
    items = [request.SerializeToString()]
    _called(be_only.gateway("BE"), lambda: _call(peer, method, items, ()))
    assert tracebacks.found == []
