"""A gateway with work the design requires taken out, to measure what that work costs.

    python -m bench.unsafe_gateway [--without storage] [--without signatures] \
        serve --config PATH

Never a gateway to run for anything but ``bench/floor.py``: it answers callers without
keeping a record, or without signing and checking what crosses. What it leaves out,
in the gateway process only (the caller, the partner and the registries are as usual):

- ``storage``: :meth:`GroupCommit.write` returns at once without running its unit, so
  no quota, replay record, query record or audit entry is written, and no commit or
  fsync is waited for. Only exchanges whose units return nothing (identity
  confirmations) work under it;
- ``signatures``: signing gives a fixed ES256-sized signature instead of computing one,
  and a detached signature is accepted without being checked. The envelope, its
  canonical signing input and its digest are still built.

Everything else (TLS, tokens, validation, policy, the registry, metrics) is the
gateway's own code, unchanged.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.cli.main import cli
from gateway.envelope import jws, receipt, verify
from gateway.store.group_commit import GroupCommit

OMISSIONS = ("storage", "signatures")
_FIXED_SIGNATURE = base64.urlsafe_b64encode(bytes(64)).rstrip(b"=").decode("ascii")


async def _unsafe_write_nothing(self: GroupCommit, unit: Any) -> None:
    return None


def _unsafe_sign_nothing(self: jws.StateSigningKey, typ: str, signing_input: bytes) -> str:
    return f"{jws._protected_segment(self.kid, typ)}..{_FIXED_SIGNATURE}"


def _unsafe_accept_any(token: str, **_: Any) -> None:
    return None


def leave_out(omissions: set[str]) -> None:
    """Take ``omissions`` out of this process's gateway code."""
    if "storage" in omissions:
        GroupCommit.write = _unsafe_write_nothing  # type: ignore[method-assign,assignment]
    if "signatures" in omissions:
        jws.StateSigningKey.sign_detached = _unsafe_sign_nothing  # type: ignore[method-assign]
        verify.verify_detached = _unsafe_accept_any  # type: ignore[attr-defined]
        receipt.verify_detached = _unsafe_accept_any  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--without", action="append", choices=OMISSIONS, default=[])
    args, rest = parser.parse_known_args()
    leave_out(set(args.without))
    cli(args=rest, prog_name="pouch")


if __name__ == "__main__":
    main()
