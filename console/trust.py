"""The log keys the auditor's browser checks evidence with, pinned from a trust bundle.

They come from the state's own trust bundle file, named in the console's
configuration, never from an answer of the gateway: a gateway that rewrote its log
and signed with another key would be caught in the browser.
"""

from __future__ import annotations

from pathlib import Path

from gateway.audit.checkpoint import audit_origin
from gateway.audit.log_signing import partner_log_keys
from gateway.pki.bundle import load_trust_bundle


def log_keys(bundle_file: Path) -> tuple[str, tuple[str, ...]]:
    """The log's origin line and its Ed25519 vkey (the key Web Crypto can check)."""
    bundle = load_trust_bundle(bundle_file)
    ed25519, _mldsa = partner_log_keys(bundle)
    return audit_origin(bundle.state), (str(ed25519.vkey),)
