"""Shared material for the envelope tests: three state PKIs and well-formed headers.

FR is the receiving gateway under test, BE its partner (the honest sender) and DE
another partner of FR, used as the attacker who holds a genuine bundle of its own.
Each test module builds its PKIs once (module-scoped, read-only afterwards); every
envelope a test changes is its own copy.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.envelope import (
    EnvelopeHeader,
    EnvelopeSigner,
    EnvelopeVerifier,
    ReceiptSigner,
    utc_millis,
)
from gateway.pki import StateDirectory, TrustBundle, init_state, load_trust_bundle
from pouch.v1 import common_pb2, envelope_pb2

OWN = "FR"
SENDER = "BE"
OTHER = "DE"
WINDOW_S = 300.0
MAX_PAYLOAD_BYTES = 4096
AGREEMENT_DIGEST = "sha256:" + "ab" * 32


@dataclass(frozen=True)
class Party:
    directory: StateDirectory
    bundle: TrustBundle
    signer: EnvelopeSigner
    receipts: ReceiptSigner


@dataclass(frozen=True)
class Pki:
    own: Party
    sender: Party
    other: Party
    #: The instant every verifier's clock shows (after every certificate's notBefore).
    now: datetime

    def verifier(
        self,
        *,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        at: datetime | None = None,
        partners: tuple[str, ...] = (SENDER, OTHER),
    ) -> EnvelopeVerifier:
        """FR's verifier, trusting the bundles of ``partners``, its clock stopped at ``at``."""
        moment = self.now if at is None else at
        parties = {SENDER: self.sender, OTHER: self.other}
        return EnvelopeVerifier(
            OWN,
            {state: parties[state].bundle for state in partners},
            window_s=WINDOW_S,
            max_payload_bytes=max_payload_bytes,
            clock=lambda: moment,
        )

    def header(self, **changes: Any) -> EnvelopeHeader:
        """A well-formed BE → FR civil-record header created at ``now``, with ``changes``."""
        base = EnvelopeHeader(
            message_id=str(uuid.uuid4()),
            agreement_id="be-fr-civil-records",
            agreement_version=3,
            agreement_digest=AGREEMENT_DIGEST,
            exchange_type=common_pb2.EXCHANGE_TYPE_CIVIL_RECORD,
            purpose="civil_status_update",
            sender_state=SENDER,
            recipient_state=OWN,
            created_at=self.now,
            payload_type="pouch.v1.CivilRecordUpdate",
        )
        return replace(base, **changes)

    def envelope(self, payload: bytes = b"\x0a\x05birth", **changes: Any) -> envelope_pb2.Envelope:
        """A genuine envelope BE signed for FR (header ``changes`` applied before signing)."""
        return self.sender.signer.sign(self.header(**changes), payload)


def _party(state: str, root: Path, issued_at: datetime) -> Party:
    directory = init_state(
        state,
        root / state,
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        peer_endpoint="127.0.0.1:1",
        crl_location=None,
        now=issued_at,
    )
    return Party(
        directory=directory,
        bundle=load_trust_bundle(directory.bundle),
        signer=EnvelopeSigner.from_state_directory(directory),
        receipts=ReceiptSigner.from_state_directory(directory),
    )


def make_pki(root: Path) -> Pki:
    issued_at = datetime.now(UTC)
    parties = [_party(state, root, issued_at) for state in (OWN, SENDER, OTHER)]
    # A second past issuance, so certificates (second precision) are surely valid.
    now = utc_millis(issued_at + timedelta(seconds=1))
    return Pki(own=parties[0], sender=parties[1], other=parties[2], now=now)


def copy_of(envelope: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
    duplicate = envelope_pb2.Envelope()
    duplicate.CopyFrom(envelope)
    return duplicate


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def protected_header(token: str) -> dict[str, Any]:
    """The JSON protected header of a compact JWS (unverified; for inspection only)."""
    segment = token.split(".", 1)[0]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return decoded


def forge_token(header: dict[str, Any], signature: bytes) -> str:
    """A detached compact JWS with an arbitrary protected header and signature."""
    encoded = b64url(json.dumps(header, separators=(",", ":")).encode())
    return f"{encoded}..{b64url(signature)}"
