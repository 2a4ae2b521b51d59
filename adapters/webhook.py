"""The registry adapter that POSTs each update to an HTTPS webhook, signed with HMAC.

Request: a JSON body ``{message_id, sender_state, agreement_id, purpose, update}``
(``update`` in protobuf JSON with the proto field names) and three headers:

* ``X-Pouch-Timestamp``: unix seconds when the request was signed;
* ``X-Pouch-Signature``: ``v1=`` and the hex HMAC-SHA256, under the shared secret, of
  the timestamp, a ``.`` and the exact body bytes;
* ``Idempotency-Key``: the message id, by which the registry de-duplicates.

A registry checks requests with :func:`verify_webhook_signature`, which compares in
constant time and refuses a timestamp outside the tolerance, so a captured request
cannot be replayed later.

Answer: a 2xx with ``{"outcome": "applied" | "rejected", "reason_code": ...}`` is the
decision. 409 (the same key is being processed) and 429 ask to come back later, as do
5xx, redirects, unreadable answers and connection failures: all raise
:class:`RegistryUnavailable`. Any other 4xx is a rejection with reason ``WEBHOOK_<status>``.

Plain ``http`` is accepted only for a registry on 127.0.0.1 or localhost.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from google.protobuf.json_format import MessageToDict

from adapters.base import APPLIED, InboundUpdate, RegistryOutcome, RegistryUnavailable

TIMESTAMP_HEADER: Final = "X-Pouch-Timestamp"
SIGNATURE_HEADER: Final = "X-Pouch-Signature"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
SIGNATURE_VERSION: Final = "v1"
MIN_SECRET_BYTES: Final = 16
MAX_ANSWER_BYTES: Final = 64 * 1024
DEFAULT_TOLERANCE_S: Final = 300

_PLAINTEXT_HOSTS = frozenset({"127.0.0.1", "localhost"})
_COME_BACK_LATER = frozenset({409, 429})


def webhook_body(item: InboundUpdate) -> bytes:
    """The exact bytes that are signed and sent for ``item``."""
    document = {
        "message_id": item.message_id,
        "sender_state": item.sender_state,
        "agreement_id": item.agreement_id,
        "purpose": item.purpose,
        "update": MessageToDict(item.update, preserving_proto_field_name=True),
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def sign_webhook(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Pouch-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def verify_webhook_signature(
    secret: bytes,
    timestamp: str,
    body: bytes,
    header: str,
    *,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """True only if ``header`` signs ``body`` at ``timestamp`` and that time is recent.

    ``header`` may list several comma-separated signatures (while a secret is rotated);
    one valid ``v1`` signature is enough.
    """
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs(now - int(timestamp)) > tolerance_s:
        return False
    expected = sign_webhook(secret, timestamp, body).encode("ascii")
    found = False
    for candidate in header.split(","):
        # Compare every candidate, so timing does not tell which one matched.
        if hmac.compare_digest(expected, candidate.strip().encode("utf-8", "replace")):
            found = True
    return found


class WebhookAdapter:
    """POSTs each update to the registry's webhook at ``url``."""

    def __init__(
        self,
        url: str,
        secret: bytes,
        timeout_s: float,
        *,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("webhook url must be an absolute https:// URL")
        if parts.scheme == "http" and parts.hostname not in _PLAINTEXT_HOSTS:
            raise ValueError(
                f"refusing plain http to {parts.hostname}: use https, or 127.0.0.1/localhost"
            )
        if parts.username is not None or parts.password is not None or parts.fragment:
            raise ValueError("webhook url must not carry credentials or a fragment")
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"webhook secret must be at least {MIN_SECRET_BYTES} bytes")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # Errors name the origin only: a query string may hold a token.
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._secret = secret
        self._timeout_s = timeout_s
        self._ssl_context = ssl_context
        self._clock = clock

    @classmethod
    def trusting(
        cls, url: str, secret: bytes, timeout_s: float, *, ca_file: Path
    ) -> WebhookAdapter:
        """An adapter that trusts only the CA in ``ca_file`` for the webhook's certificate."""
        return cls(url, secret, timeout_s, ssl_context=ssl.create_default_context(cafile=ca_file))

    async def apply(self, item: InboundUpdate) -> RegistryOutcome:
        body = webhook_body(item)
        return await asyncio.to_thread(self._post, item.message_id, body)

    async def close(self) -> None:
        """Nothing to release: each update uses its own connection."""

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            context = self._ssl_context or ssl.create_default_context()
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout_s, context=context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)

    def _post(self, message_id: str, body: bytes) -> RegistryOutcome:
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign_webhook(self._secret, timestamp, body),
            IDEMPOTENCY_HEADER: message_id,
        }
        connection = self._connection()
        try:
            connection.request("POST", self._path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read(MAX_ANSWER_BYTES + 1)
            retry_after = response.getheader("Retry-After")
        except (OSError, http.client.HTTPException) as e:
            raise RegistryUnavailable(
                f"webhook at {self._origin} unreachable ({type(e).__name__})"
            ) from e
        finally:
            connection.close()
        return self._decision(response.status, answer, retry_after)

    def _decision(self, status: int, answer: bytes, retry_after: str | None) -> RegistryOutcome:
        if 200 <= status < 300:
            return self._read_answer(answer)
        if 400 <= status < 500 and status not in _COME_BACK_LATER:
            return RegistryOutcome.rejected(f"WEBHOOK_{status}")
        delay = float(retry_after) if retry_after and retry_after.isdigit() else None
        raise RegistryUnavailable(
            f"webhook at {self._origin} answered {status}", retry_after_s=delay
        )

    def _read_answer(self, answer: bytes) -> RegistryOutcome:
        if len(answer) > MAX_ANSWER_BYTES:
            raise RegistryUnavailable(f"webhook at {self._origin} answered too much")
        try:
            document: Any = json.loads(answer)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RegistryUnavailable(f"webhook at {self._origin} answered no JSON") from e
        outcome = document.get("outcome") if isinstance(document, dict) else None
        if outcome == "applied":
            return APPLIED
        if outcome == "rejected":
            reason = document.get("reason_code")
            return RegistryOutcome.rejected(reason if isinstance(reason, str) else "")
        raise RegistryUnavailable(f"webhook at {self._origin} answered without an outcome")
