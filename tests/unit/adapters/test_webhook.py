"""The webhook adapter against a real HTTP receiver on loopback that checks every signature."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from adapters.base import APPLIED, InboundUpdate, RegistryOutcome, RegistryUnavailable
from adapters.webhook import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookAdapter,
    sign_webhook,
    verify_webhook_signature,
)
from pouch.v1 import civil_pb2, common_pb2

SECRET = b"0123456789abcdef-registry-webhook"


class Receiver:
    """A registry's webhook endpoint: verifies, de-duplicates by message id, decides."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.applied: dict[str, dict[str, Any]] = {}
        self.deliveries = 0
        # When set, the next answers are these (status, body, headers), in order.
        self.scripted: list[tuple[int, bytes, dict[str, str]]] = []
        self.lock = threading.Lock()

    def handle(self, headers: Any, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        with self.lock:
            self.deliveries += 1
            if self.scripted:
                return self.scripted.pop(0)
            timestamp = headers.get(TIMESTAMP_HEADER, "")
            signature = headers.get(SIGNATURE_HEADER, "")
            if not verify_webhook_signature(
                self.secret, timestamp, body, signature, now=time.time()
            ):
                return 401, b'{"error":"bad signature"}', {}
            document = json.loads(body)
            message_id = headers.get(IDEMPOTENCY_HEADER)
            assert message_id == document["message_id"]
            event = document["update"]["event_type"]
            if event == "CIVIL_EVENT_TYPE_DEATH" and message_id not in self.applied:
                answer = {"outcome": "rejected", "reason_code": "UNKNOWN_PERSON"}
            else:
                self.applied.setdefault(message_id, document)
                answer = {"outcome": "applied", "reason_code": ""}
            return 200, json.dumps(answer).encode(), {}


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver(SECRET)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, answer, extra = state.handle(self.headers, body)
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/pouch/updates"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _update(message_id: str, event: civil_pb2.CivilEventType.ValueType) -> InboundUpdate:
    return InboundUpdate(
        message_id=message_id,
        sender_state="FR",
        agreement_id="FR-DE/civil-records",
        purpose="civil-status-update",
        update=civil_pb2.CivilRecordUpdate(
            event_type=event,
            event_date=common_pb2.CivilDate(year=2025, month=1, day=2),
            act_reference="ACT-2025-7",
        ),
    )


def _apply(adapter: WebhookAdapter, item: InboundUpdate) -> RegistryOutcome:
    return asyncio.run(adapter.apply(item))


def test_signed_update_is_applied_once_per_message_id(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    adapter = WebhookAdapter(url, SECRET, 5.0)
    item = _update("m-1", civil_pb2.CIVIL_EVENT_TYPE_BIRTH)
    assert _apply(adapter, item) == APPLIED
    assert _apply(adapter, item) == APPLIED
    assert state.deliveries == 2
    assert list(state.applied) == ["m-1"]
    document = state.applied["m-1"]
    assert {k: document[k] for k in ("sender_state", "agreement_id", "purpose")} == {
        "sender_state": "FR",
        "agreement_id": "FR-DE/civil-records",
        "purpose": "civil-status-update",
    }
    # Proto field names, not lowerCamelCase.
    assert document["update"]["act_reference"] == "ACT-2025-7"
    assert document["update"]["event_date"] == {"year": 2025, "month": 1, "day": 2}


def test_registry_rejection_travels_back_with_its_reason(receiver: tuple[Receiver, str]) -> None:
    _, url = receiver
    outcome = _apply(
        WebhookAdapter(url, SECRET, 5.0), _update("m-2", civil_pb2.CIVIL_EVENT_TYPE_DEATH)
    )
    assert outcome == RegistryOutcome(applied=False, reason_code="UNKNOWN_PERSON")


def test_request_signed_with_another_secret_is_refused_by_the_registry(
    receiver: tuple[Receiver, str],
) -> None:
    state, url = receiver
    forger = WebhookAdapter(url, b"not-the-shared-secret-at-all", 5.0)
    outcome = _apply(forger, _update("m-3", civil_pb2.CIVIL_EVENT_TYPE_BIRTH))
    assert outcome == RegistryOutcome(applied=False, reason_code="WEBHOOK_401")
    assert state.applied == {}


def test_stale_request_is_refused_by_the_registry(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    late = WebhookAdapter(url, SECRET, 5.0, clock=lambda: time.time() - 3600)
    outcome = _apply(late, _update("m-4", civil_pb2.CIVIL_EVENT_TYPE_BIRTH))
    assert outcome == RegistryOutcome(applied=False, reason_code="WEBHOOK_401")
    assert state.applied == {}


def test_tampered_body_fails_verification() -> None:
    body = b'{"message_id":"m-5","purpose":"civil-status-update"}'
    header = sign_webhook(SECRET, "1700000000", body)
    assert verify_webhook_signature(SECRET, "1700000000", body, header, now=1700000010)
    tampered = body.replace(b"m-5", b"m-6")
    assert not verify_webhook_signature(SECRET, "1700000000", tampered, header, now=1700000010)
    assert not verify_webhook_signature(SECRET, "1700000001", body, header, now=1700000010)


def test_replayed_signature_outside_tolerance_fails_verification() -> None:
    body = b"{}"
    header = sign_webhook(SECRET, "1700000000", body)
    assert not verify_webhook_signature(SECRET, "1700000000", body, header, now=1700000301)
    assert not verify_webhook_signature(SECRET, "1700000000", body, header, now=1699999699)
    assert verify_webhook_signature(SECRET, "1700000000", body, header, now=1700000300)


@pytest.mark.parametrize("timestamp", ["", "-5", "1.7e9", "１７００", "17000000000000"])
def test_malformed_timestamp_fails_verification(timestamp: str) -> None:
    header = sign_webhook(SECRET, "1700000000", b"{}")
    assert not verify_webhook_signature(SECRET, timestamp, b"{}", header, now=1700000000)


def test_any_valid_signature_in_a_rotation_list_verifies() -> None:
    header = sign_webhook(b"old-secret-0123456789", "1700000000", b"{}")
    header += ", " + sign_webhook(SECRET, "1700000000", b"{}")
    assert verify_webhook_signature(SECRET, "1700000000", b"{}", header, now=1700000000)
    assert not verify_webhook_signature(SECRET, "1700000000", b"{}", "v1=00", now=1700000000)


@pytest.mark.parametrize(
    ("status", "retry_after"), [(503, None), (500, None), (429, 30.0), (409, None), (302, None)]
)
def test_registry_busy_or_failing_is_unavailable(
    receiver: tuple[Receiver, str], status: int, retry_after: float | None
) -> None:
    state, url = receiver
    headers = {"Retry-After": "30"} if retry_after else {}
    state.scripted.append((status, b"{}", headers))
    with pytest.raises(RegistryUnavailable, match=str(status)) as raised:
        _apply(WebhookAdapter(url, SECRET, 5.0), _update("m-7", civil_pb2.CIVIL_EVENT_TYPE_BIRTH))
    assert raised.value.retry_after_s == retry_after


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_other_client_errors_are_rejections(receiver: tuple[Receiver, str], status: int) -> None:
    state, url = receiver
    state.scripted.append((status, b"", {}))
    outcome = _apply(
        WebhookAdapter(url, SECRET, 5.0), _update("m-8", civil_pb2.CIVIL_EVENT_TYPE_BIRTH)
    )
    assert outcome == RegistryOutcome(applied=False, reason_code=f"WEBHOOK_{status}")


@pytest.mark.parametrize(
    "answer", [b"not json", b"[]", b'{"outcome":"maybe"}', b'{"reason_code":"X"}']
)
def test_success_status_without_a_decision_is_unavailable(
    receiver: tuple[Receiver, str], answer: bytes
) -> None:
    state, url = receiver
    state.scripted.append((200, answer, {}))
    with pytest.raises(RegistryUnavailable):
        _apply(WebhookAdapter(url, SECRET, 5.0), _update("m-9", civil_pb2.CIVIL_EVENT_TYPE_BIRTH))


def test_registry_that_is_down_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    adapter = WebhookAdapter(f"http://127.0.0.1:{port}/hook", SECRET, 2.0)
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        _apply(adapter, _update("m-10", civil_pb2.CIVIL_EVENT_TYPE_BIRTH))


@pytest.mark.parametrize(
    "url",
    [
        "http://registry.example/hook",
        "ftp://127.0.0.1/hook",
        "https://user:pw@registry.example/hook",
        "/hook",
    ],
)
def test_unsafe_webhook_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"url|http"):
        WebhookAdapter(url, SECRET, 5.0)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        WebhookAdapter("https://registry.example/hook", b"short", 5.0)
