"""External witnesses of our log: C2SP tlog-witness servers configured in ``[[audit.witnesses]]``.

Besides each partner, any witness speaking c2sp.org/tlog-witness (an international
organisation, a court) can cosign our checkpoints. Each is configured with its name,
its submission prefix and its cosigner keys; :func:`external_witness` accepts only
cosigner keys (type 0x04 Ed25519, 0x06 ML-DSA-44) named as the witness is, and every
key listed must cosign each checkpoint (:func:`~gateway.audit.cosignature.verify_cosignatures`,
lines of other keys ignored).

:class:`WitnessClient` posts ``add-checkpoint`` requests over HTTP(S) with httpx and
returns the status and a bounded body; what to offer and what to keep is the
publisher's (:class:`~gateway.audit.publication.CheckpointPublisher`).

Usage::

    witness = external_witness(name, url, vkeys, ca_file)   # ValueError naming the key
    client = WitnessClient(witness, timeout_s=10)
    answer = await client.add_checkpoint(AddCheckpoint(old, proof, note))
    await client.aclose()
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway.audit.cosignature import CosignatureVerifier
from gateway.audit.note import is_valid_key_name
from gateway.audit.witness_protocol import ADD_CHECKPOINT, AddCheckpoint, add_checkpoint_body
from gateway.config import ExternalWitnessSection
from gateway.errors import Unavailable

# Two cosignature lines of ML-DSA-44 are under 7 kB; room for a few more keys.
MAX_ANSWER_BYTES = 64 * 1024


class WitnessUnreachable(Unavailable):
    """No answer from the witness: connection, TLS, timeout, or an answer too large."""

    reason = "WITNESS_UNREACHABLE"


@dataclass(frozen=True)
class ExternalWitness:
    """One external witness: its key name, submission prefix, keys and TLS trust."""

    name: str
    url: str
    cosigners: tuple[CosignatureVerifier, ...]
    ca_file: Path | None = None

    @property
    def add_checkpoint_url(self) -> str:
        return self.url.rstrip("/") + "/" + ADD_CHECKPOINT

    @property
    def vkeys(self) -> list[str]:
        return [str(key.vkey) for key in self.cosigners]


def external_witness(
    name: str, url: str, vkeys: Sequence[str], ca_file: Path | None = None
) -> ExternalWitness:
    """The witness a configuration entry describes; ``ValueError`` naming the vkey at fault."""
    if not is_valid_key_name(name):
        raise ValueError(f"name {name!r} is not a note key name (no spaces, no '+')")
    cosigners: list[CosignatureVerifier] = []
    for index, vkey in enumerate(vkeys):
        try:
            key = CosignatureVerifier.from_vkey(vkey)
        except ValueError as e:
            raise ValueError(f"vkeys[{index}]: {e}") from e
        if key.key_name != name:
            raise ValueError(
                f"vkeys[{index}]: the key is named {key.key_name!r}, not the witness's {name!r}"
            )
        if any(k.key_id == key.key_id for k in cosigners):
            raise ValueError(f"vkeys[{index}]: the same key is listed twice")
        cosigners.append(key)
    if not cosigners:
        raise ValueError("vkeys: at least one cosigner key")
    return ExternalWitness(name, url, tuple(cosigners), ca_file)


def configured_witnesses(
    sections: Sequence[ExternalWitnessSection],
) -> tuple[ExternalWitness, ...]:
    """The ``[[audit.witnesses]]`` entries; ``ValueError`` of one line naming the entry, the
    key and the rule. A ``ca_file`` must be readable."""
    witnesses = []
    for index, section in enumerate(sections):
        where = f"audit.witnesses[{index}] ({section.name})"
        try:
            witness = external_witness(section.name, section.url, section.vkeys, section.ca_file)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e
        if section.ca_file is not None:
            try:
                ssl.create_default_context(cafile=str(section.ca_file))
            except (OSError, ssl.SSLError) as e:
                raise ValueError(
                    f"{where}: ca_file {section.ca_file}: not a readable PEM CA certificate"
                ) from e
        witnesses.append(witness)
    return tuple(witnesses)


@dataclass(frozen=True)
class WitnessAnswer:
    status: int
    body: bytes
    content_type: str


class WitnessClient:
    """Posts ``add-checkpoint`` to one external witness over a kept-alive connection."""

    def __init__(self, witness: ExternalWitness, *, timeout_s: float) -> None:
        self.witness = witness
        verify: ssl.SSLContext | bool = True
        if witness.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(witness.ca_file))
        self._client = httpx.AsyncClient(verify=verify, timeout=timeout_s, follow_redirects=False)

    async def add_checkpoint(self, request: AddCheckpoint) -> WitnessAnswer:
        try:
            async with self._client.stream(
                "POST", self.witness.add_checkpoint_url, content=add_checkpoint_body(request)
            ) as response:
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise WitnessUnreachable(
                            f"witness {self.witness.name} answered more than "
                            f"{MAX_ANSWER_BYTES} bytes"
                        )
                return WitnessAnswer(
                    response.status_code, body, response.headers.get("content-type", "")
                )
        except httpx.HTTPError as e:
            raise WitnessUnreachable(
                f"witness {self.witness.name} did not answer: {type(e).__name__}"
            ) from e

    async def aclose(self) -> None:
        await self._client.aclose()
