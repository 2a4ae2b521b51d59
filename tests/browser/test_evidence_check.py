"""The console's in-browser evidence check, run in chromium against a real audit log.

Each test has its own browser context, so its routes and page die with it. A refusal
test first shows the same page verifying, then tampers one thing (through
``page.route``) and expects ``failed`` with the reason that names the tampered part.
The log and the page are ``evidence_site``'s.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page

from gateway.audit import merkle
from gateway.audit.checkpoint import (
    open_checkpoint,
)
from gateway.audit.entry import Decision
from gateway.audit.log_signing import CheckpointSigner
from gateway.audit.note import Note, NoteSignature, parse_note
from gateway.pki.note_keys import Ed25519Signer, MLDSA44Signer
from tests.browser.conftest import run_axe
from tests.browser.evidence_site import (
    CONSISTENCY_PATH,
    ENTRY,
    FIRST_SIZE,
    FORM_FAILED,
    KEY_NAME,
    ORIGIN,
    OTHER_ORIGIN,
    PROOF_PATH,
    REASONS,
    SECOND_SIZE,
    Change,
    SignedLog,
    Site,
    b64,
    entry_outcome,
    failure,
    settled,
    tamper_json,
    tamper_page,
)
from tests.unit.audit import make_event


def _flip(encoded: str, byte: int = 0) -> str:
    raw = bytearray(base64.b64decode(encoded))
    raw[byte] ^= 0x01
    return b64(bytes(raw))


def _replace_line(note: str, index: int, line: str) -> str:
    lines = note.split("\n")
    lines[index] = line
    return "\n".join(lines)


def _with_signatures(note: str, keep: Callable[[NoteSignature], NoteSignature | None]) -> str:
    parsed = parse_note(note)
    kept = [s for s in (keep(s) for s in parsed.signatures) if s is not None]
    return Note(parsed.text, tuple(kept)).serialize()


def _ed25519_id(signed_log: SignedLog) -> int:
    return signed_log.signer.verifiers()[0].key_id


def _other_root(proof: dict[str, Any], signed_log: SignedLog) -> dict[str, Any]:
    other = b64(signed_log.log.root(SECOND_SIZE - 1))
    return proof | {"checkpoint": _replace_line(proof["checkpoint"], 2, other)}


def _bad_signature(proof: dict[str, Any], signed_log: SignedLog) -> dict[str, Any]:
    key_id = _ed25519_id(signed_log)

    def flip(s: NoteSignature) -> NoteSignature:
        if s.key_id != key_id:
            return s
        return NoteSignature(s.key_name, s.key_id, bytes([s.signature[0] ^ 1]) + s.signature[1:])

    return proof | {"checkpoint": _with_signatures(proof["checkpoint"], flip)}


def _ed25519_line_removed(proof: dict[str, Any], signed_log: SignedLog) -> dict[str, Any]:
    key_id = _ed25519_id(signed_log)
    note = _with_signatures(proof["checkpoint"], lambda s: None if s.key_id == key_id else s)
    return proof | {"checkpoint": note}


def _other_entry(proof: dict[str, Any], signed_log: SignedLog) -> dict[str, Any]:
    # A well-formed entry that the log never held at this index.
    forged = make_event(ENTRY, decision=Decision.REFUSED, reason_code="POLICY_DENIED")
    return proof | {"leaf": b64(forged.canonical())}


def _not_an_entry(proof: dict[str, Any], signed_log: SignedLog) -> dict[str, Any]:
    document = json.loads(base64.b64decode(proof["leaf"]))
    return proof | {"leaf": b64(json.dumps(document, indent=1).encode())}


def _foreign_checkpoint(proof: dict[str, Any], signed_log: SignedLog) -> dict[str, Any]:
    return proof | {"checkpoint": signed_log.checkpoint_of(OTHER_ORIGIN, SECOND_SIZE)}


TAMPERED_PROOFS: dict[str, tuple[Change, str]] = {
    "proof_hash_bit_flipped": (
        lambda p, _: p | {"hashes": [_flip(p["hashes"][0]), *p["hashes"][1:]]},
        "inclusion",
    ),
    "index_of_another_entry": (lambda p, _: p | {"index": ENTRY + 1}, "inclusion"),
    "root_hash_in_note_replaced": (_other_root, "signature"),
    "note_signature_bit_flipped": (_bad_signature, "signature"),
    "ed25519_line_removed_leaving_mldsa44": (_ed25519_line_removed, "signature"),
    "leaf_of_another_entry": (_other_entry, "inclusion"),
    "leaf_not_a_canonical_entry": (_not_an_entry, "leaf"),
    "tree_size_not_the_checkpoints": (lambda p, _: p | {"tree_size": SECOND_SIZE + 1}, "size"),
    "checkpoint_of_another_origin_by_the_log_key": (_foreign_checkpoint, "origin"),
    "checkpoint_not_a_signed_note": (
        lambda p, _: p | {"checkpoint": p["checkpoint"].replace("\n\n", "\n")},
        "malformed",
    ),
}


def test_entry_evidence_verifies_in_the_browser_as_the_python_verifier_finds(
    page: Page, site: Site, signed_log: SignedLog
) -> None:
    proof = signed_log.inclusion(ENTRY, SECOND_SIZE)
    opened = open_checkpoint(
        proof["checkpoint"], origin=ORIGIN, log_keys=signed_log.signer.verifiers()
    )
    root = opened.checkpoint.root_hash
    assert merkle.verify_inclusion(
        merkle.leaf_hash(base64.b64decode(proof["leaf"])),
        ENTRY,
        SECOND_SIZE,
        [base64.b64decode(h) for h in proof["hashes"]],
        root,
    )
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    page.goto(site.url())

    assert entry_outcome(page) == (
        "verified",
        f"Entry {ENTRY} is in the log at tree size {SECOND_SIZE}, root {b64(root)[:16]}…",
    )
    assert errors == []


def test_the_logs_mldsa44_line_is_ignored_and_the_ed25519_line_suffices(
    page: Page, site: Site, signed_log: SignedLog
) -> None:
    mldsa_id = signed_log.signer.verifiers()[1].key_id
    tamper_json(
        page,
        PROOF_PATH,
        signed_log,
        lambda p, _: (
            p
            | {
                "checkpoint": _with_signatures(
                    p["checkpoint"], lambda s: None if s.key_id == mldsa_id else s
                )
            }
        ),
    )

    page.goto(site.url())

    assert entry_outcome(page)[0] == "verified"


@pytest.mark.parametrize("attack", sorted(TAMPERED_PROOFS))
def test_tampered_entry_evidence_is_refused_naming_the_failed_check(
    page: Page, site: Site, signed_log: SignedLog, attack: str
) -> None:
    change, reason = TAMPERED_PROOFS[attack]
    page.goto(site.url())
    assert entry_outcome(page)[0] == "verified"

    tamper_json(page, PROOF_PATH, signed_log, change)
    page.reload()

    assert entry_outcome(page) == failure(reason)


def test_a_checkpoint_signed_by_a_key_other_than_the_pinned_one_is_refused(
    page: Page, site: Site, signed_log: SignedLog
) -> None:
    page.goto(site.url())
    assert entry_outcome(page)[0] == "verified"

    other = CheckpointSigner(ORIGIN, KEY_NAME, Ed25519Signer.generate(), MLDSA44Signer.generate())
    pinned = html.escape(json.dumps(signed_log.vkeys))
    tamper_page(page, pinned, html.escape(json.dumps([str(k.vkey) for k in other.verifiers()])))
    page.reload()

    assert entry_outcome(page) == failure("signature")


def test_a_page_pinning_no_ed25519_log_key_refuses_to_verify(
    page: Page, site: Site, signed_log: SignedLog
) -> None:
    page.goto(site.url())
    assert entry_outcome(page)[0] == "verified"

    pinned = html.escape(json.dumps(signed_log.vkeys))
    tamper_page(page, pinned, html.escape(json.dumps(signed_log.vkeys[1:])))
    page.reload()

    assert entry_outcome(page) == failure("key")


def test_a_page_pinning_another_logs_origin_refuses_this_logs_checkpoint(
    page: Page, site: Site, signed_log: SignedLog
) -> None:
    page.goto(site.url())
    assert entry_outcome(page)[0] == "verified"

    tamper_page(page, f'data-log-origin="{ORIGIN}"', f'data-log-origin="{OTHER_ORIGIN}"')
    page.reload()

    assert entry_outcome(page) == failure("origin")


def test_evidence_that_cannot_be_fetched_fails_as_a_network_fault(page: Page, site: Site) -> None:
    page.goto(site.url())
    assert entry_outcome(page)[0] == "verified"

    page.route(f"**{PROOF_PATH}", lambda route: route.fulfill(status=502, body="down"))
    page.reload()

    assert entry_outcome(page) == failure("network")


def check_consistency(page: Page, first: int, second: int) -> tuple[str | None, str]:
    page.fill("input[name=first]", str(first))
    page.fill("input[name=second]", str(second))
    page.click("button[type=submit]")
    return settled(page, "#consistency-check", "#consistency-result")


def test_two_checkpoints_of_the_log_are_consistent_and_a_tampered_proof_is_refused(
    page: Page, site: Site, signed_log: SignedLog
) -> None:
    page.goto(site.url())
    entry_outcome(page)
    root = b64(signed_log.log.root(SECOND_SIZE))

    assert check_consistency(page, FIRST_SIZE, SECOND_SIZE) == (
        "verified",
        f"Tree {FIRST_SIZE} is a prefix of tree {SECOND_SIZE}, root {root[:16]}…",
    )

    tamper_json(
        page,
        CONSISTENCY_PATH,
        signed_log,
        lambda c, _: c | {"hashes": [*c["hashes"][:-1], _flip(c["hashes"][-1], 31)]},
    )
    assert check_consistency(page, FIRST_SIZE, SECOND_SIZE) == (
        "failed",
        f"{FORM_FAILED} {REASONS['consistency']}",
    )


def test_consistency_answer_for_other_sizes_than_asked_is_refused(
    page: Page, site: Site, signed_log: SignedLog
) -> None:
    page.goto(site.url())
    entry_outcome(page)
    assert check_consistency(page, FIRST_SIZE, SECOND_SIZE)[0] == "verified"

    # The server proves 5 -> 13 when 13 -> 13 was asked for: honest proof, wrong question.
    page.route(
        f"**{CONSISTENCY_PATH}*",
        lambda route: route.fulfill(json=signed_log.consistency(FIRST_SIZE, SECOND_SIZE)),
    )
    assert check_consistency(page, SECOND_SIZE, SECOND_SIZE) == (
        "failed",
        f"{FORM_FAILED} {REASONS['size']}",
    )
    assert check_consistency(page, SECOND_SIZE, FIRST_SIZE) == (
        "failed",
        f"{FORM_FAILED} {REASONS['malformed']}",
    )


def test_the_checked_page_has_no_serious_accessibility_violation(page: Page, site: Site) -> None:
    page.goto(site.url())
    assert entry_outcome(page)[0] == "verified"

    assert run_axe(page) == []

    # The same check sees a violation when there is one: an input nobody can name.
    page.evaluate(
        """() => document.querySelector("main").append(
            Object.assign(document.createElement("input"), { type: "text" }))"""
    )
    assert "label" in {v["id"] for v in run_axe(page)}


# ---- The JavaScript against the Python, value by value ------------------------------
