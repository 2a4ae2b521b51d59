"""The browser's evidence code held to the gateway's: the same leaf and node hashes,
and the same verdict on every inclusion and consistency proof of trees up to 17 leaves,
honest and tampered; published vectors; notes, vkeys and entries read alike."""

from __future__ import annotations

import json
from dataclasses import fields

from playwright.sync_api import Page

from gateway.audit import merkle
from gateway.audit.checkpoint import (
    Checkpoint,
    MalformedCheckpoint,
)
from gateway.audit.entry import AuditEvent, Decision, EventKind
from gateway.audit.note import MalformedNote, parse_note
from tests.browser.evidence_site import (
    KEY_NAME,
    SECOND_SIZE,
    SignedLog,
    Site,
    b64,
)
from tests.unit.audit import make_event
from tests.unit.store.conftest import START
from tests.vectors import load_vector

MAX_LEAVES = 17

_JS_TREE = """async ({ leaves }) => {
    const m = await import("/static/evidence.js");
    let level = [];
    for (const leaf of leaves) level.push(await m.leafHash(m.decodeBase64(leaf)));
    const levels = [level.map(m.encodeBase64)];
    while (level.length > 1) {
        const next = [];
        for (let i = 0; i + 1 < level.length; i += 2) {
            next.push(await m.nodeHash(level[i], level[i + 1]));
        }
        level = next;
        levels.push(level.map(m.encodeBase64));
    }
    return levels;
}"""

_JS_VERDICTS = """async ({ inclusion, consistency }) => {
    const m = await import("/static/evidence.js");
    const b = (hashes) => hashes.map(m.decodeBase64);
    const verdicts = { inclusion: [], consistency: [] };
    for (const [leaf, index, size, proof, root] of inclusion) {
        verdicts.inclusion.push(await m.verifyInclusion(
            m.decodeBase64(leaf), index, size, b(proof), m.decodeBase64(root)));
    }
    for (const [size1, size2, proof, root1, root2] of consistency) {
        verdicts.consistency.push(await m.verifyConsistency(
            size1, size2, b(proof), m.decodeBase64(root1), m.decodeBase64(root2)));
    }
    return verdicts;
}"""


def _tree_leaves() -> list[bytes]:
    events = [
        make_event(n, removed_paths=("holder.name",) if n % 3 else ()) for n in range(MAX_LEAVES)
    ]
    return [e.canonical() for e in events]


def _node(levels: list[list[bytes]]) -> merkle.NodeAccessor:
    return lambda level, index: levels[level][index]


def _flipped(hashes: list[bytes], at: int) -> list[bytes]:
    changed = list(hashes)
    changed[at] = bytes([changed[at][0] ^ 0x80]) + changed[at][1:]
    return changed


def _inclusion_cases(leaves: list[bytes]) -> list[tuple[bytes, int, int, list[bytes], bytes]]:
    """Every (index, size) up to 17, honest first, then tampered in the ways a log could lie."""
    node = _node(merkle.subtree_levels([merkle.leaf_hash(d) for d in leaves]))
    honest, tampered = [], []
    for size in range(1, MAX_LEAVES + 1):
        root = merkle.root(size, node)
        for index in range(size):
            leaf = node(0, index)
            proof = merkle.inclusion_proof(index, size, node)
            honest.append((leaf, index, size, proof, root))
            tampered.append((leaf, index, size + 1, proof, root))
            tampered.append((leaf, (index + 1) % size, size, proof, root))
            tampered.append((leaf, index, size, [*proof, root], root))
            if proof:
                tampered.append((leaf, index, size, _flipped(proof, len(proof) - 1), root))
                tampered.append((leaf, index, size, proof[:-1], root))
    return honest + tampered


def _consistency_cases(
    leaves: list[bytes],
) -> list[tuple[int, int, list[bytes], bytes, bytes]]:
    """Every 0 <= size1 <= size2 <= 17, honest first, then tampered."""
    node = _node(merkle.subtree_levels([merkle.leaf_hash(d) for d in leaves]))
    honest, tampered = [], []
    for size2 in range(MAX_LEAVES + 1):
        root2 = merkle.root(size2, node)
        for size1 in range(size2 + 1):
            root1 = merkle.root(size1, node)
            proof = merkle.consistency_proof(size1, size2, node)
            honest.append((size1, size2, proof, root1, root2))
            tampered.append((size1, size2, proof, root2, root1))
            tampered.append((size2, size1, proof, root2, root1))
            if proof:
                tampered.append((size1, size2, _flipped(proof, 0), root1, root2))
                tampered.append((size1, size2, proof[1:], root1, root2))
    return honest + tampered


def test_the_browser_hashes_and_judges_every_proof_up_to_17_leaves_as_the_log_does(
    page: Page, site: Site
) -> None:
    leaves = _tree_leaves()
    inclusion = _inclusion_cases(leaves)
    consistency = _consistency_cases(leaves)
    page.goto(site.url("/blank"))

    for size in (1, 2, 3, 7, 8, 9, 16, MAX_LEAVES):
        levels = page.evaluate(_JS_TREE, {"leaves": [b64(d) for d in leaves[:size]]})
        expected = merkle.subtree_levels([merkle.leaf_hash(d) for d in leaves[:size]])
        assert levels == [[b64(h) for h in row] for row in expected], size

    verdicts = page.evaluate(
        _JS_VERDICTS,
        {
            "inclusion": [
                [b64(leaf), index, size, [b64(h) for h in proof], b64(root)]
                for leaf, index, size, proof, root in inclusion
            ],
            "consistency": [
                [size1, size2, [b64(h) for h in proof], b64(root1), b64(root2)]
                for size1, size2, proof, root1, root2 in consistency
            ],
        },
    )

    assert verdicts["inclusion"] == [merkle.verify_inclusion(*case) for case in inclusion]
    assert verdicts["consistency"] == [merkle.verify_consistency(*case) for case in consistency]
    honest_inclusion = sum(range(1, MAX_LEAVES + 1))
    honest_consistency = sum(range(1, MAX_LEAVES + 2))
    assert all(verdicts["inclusion"][:honest_inclusion])
    assert all(verdicts["consistency"][:honest_consistency])
    assert verdicts["inclusion"][honest_inclusion:].count(False) > 3 * honest_inclusion
    assert verdicts["consistency"][honest_consistency:].count(False) > 3 * honest_consistency


def test_published_rfc6962_and_signed_note_vectors_verify_in_the_browser(
    page: Page, site: Site
) -> None:
    heads = load_vector("rfc6962/tree_heads")
    roots = {h["size"]: bytes.fromhex(h["root"]) for h in heads["tree_heads"]}
    leaves = [bytes.fromhex(leaf) for leaf in heads["leaves"]]
    inclusion = [
        [
            b64(merkle.leaf_hash(leaves[v["leaf_index"]])),
            v["leaf_index"],
            v["tree_size"],
            [b64(bytes.fromhex(h)) for h in v["proof"]],
            b64(roots[v["tree_size"]]),
        ]
        for v in load_vector("rfc6962/inclusion_proofs")["inclusion_proofs"]
    ]
    consistency = [
        [
            v["size1"],
            v["size2"],
            [b64(bytes.fromhex(h)) for h in v["proof"]],
            b64(roots[v["size1"]]),
            b64(roots[v["size2"]]),
        ]
        for v in load_vector("rfc6962/consistency_proofs")["consistency_proofs"]
    ]
    sumdb = load_vector("c2sp/go_sumdb_checkpoint")
    page.goto(site.url("/blank"))

    verdicts = page.evaluate(_JS_VERDICTS, {"inclusion": inclusion, "consistency": consistency})
    checkpoint = page.evaluate(
        """async ({ note, origin, vkey }) => {
            const m = await import("/static/evidence.js");
            const c = await m.openCheckpoint(note, { origin, vkeys: [vkey] });
            return { size: c.size, root: m.encodeBase64(c.rootHash) };
        }""",
        {"note": sumdb["note"], "origin": sumdb["origin"], "vkey": sumdb["verifier_key"]},
    )

    assert verdicts == {
        "inclusion": [True] * len(inclusion),
        "consistency": [True] * len(consistency),
    }
    assert checkpoint == {"size": sumdb["size"], "root": sumdb["root_hash"]}


_JS_NOTE_LINES = """async ({ note, vkeys }) => {
    const m = await import("/static/evidence.js");
    const parsed = m.parseNote(note);
    let verified;
    try {
        verified = (await m.verifyNoteSignature(parsed, vkeys)).map((s) => s.keyName);
    } catch (error) {
        verified = error.check;
    }
    return {
        text: parsed.text,
        lines: parsed.signatures.map((s) => [s.keyName, s.keyId.toString(16).padStart(8, "0")]),
        verified,
    };
}"""


def test_published_signed_notes_and_the_logs_vkeys_read_in_the_browser_as_in_the_gateway(
    page: Page, site: Site, signed_log: SignedLog
) -> None:
    golang = load_vector("c2sp/go_sumdb_note")
    peter, enoch = golang["verifier_keys"]["PeterNeumann"], golang["verifier_keys"]["EnochRoot"]
    spec = load_vector("c2sp/signed_note")
    page.goto(site.url("/blank"))

    both = page.evaluate(_JS_NOTE_LINES, {"note": golang["note"], "vkeys": [peter, enoch]})
    one = page.evaluate(_JS_NOTE_LINES, {"note": golang["note"], "vkeys": [enoch]})
    # The specification's example: its key is unpublished, so a known key's line is absent.
    unknown = page.evaluate(_JS_NOTE_LINES, {"note": spec["note"], "vkeys": [peter]})
    parsed = page.evaluate(
        """async (vkeys) => {
            const m = await import("/static/evidence.js");
            const keys = [];
            for (const vkey of vkeys) keys.push(await m.parseVkey(vkey));
            return keys.map((k) => [k.keyName, k.signatureType, k.keyId]);
        }""",
        signed_log.vkeys,
    )

    assert both["text"] == golang["text"]
    assert both["verified"] == ["PeterNeumann", "EnochRoot"]
    assert one["verified"] == ["EnochRoot"]
    assert unknown["text"] == spec["text"]
    assert unknown["lines"] == [[s["key_name"], s["key_id"]] for s in spec["signatures"]]
    assert unknown["verified"] == "signature"
    assert parsed == [
        [k.key_name, k.signature_type, k.key_id]
        for k in (v.vkey for v in signed_log.signer.verifiers())
    ]


_JS_NOTE_SYNTAX = """async (notes) => {
    const m = await import("/static/evidence.js");
    return notes.map((note) => {
        try {
            m.parseSignedCheckpoint(note);
            return "ok";
        } catch (error) {
            return error.check;
        }
    });
}"""


def _python_syntax_verdict(note: str) -> str:
    try:
        parsed = parse_note(note)
    except MalformedNote:
        return "note"
    try:
        Checkpoint.parse(parsed.text)
    except MalformedCheckpoint:
        return "checkpoint"
    return "ok"


def _checkpoint_variants(note: str) -> list[str]:
    """The log's note and malformed neighbours of it, the note's syntax and the body's."""
    body, _, lines = note.partition("\n\n")
    origin, size, root = body.split("\n")
    line = lines.splitlines(keepends=True)[0]

    def checkpoint(*body_lines: str) -> str:
        return "".join(f"{b}\n" for b in body_lines) + "\n" + lines

    return [
        note,
        body + "\n",
        note[:-1],
        note.replace("\u2014 ", "- "),
        note.replace(KEY_NAME, "pouch fr audit"),
        note.replace(KEY_NAME, "pouch+fr+audit"),
        note.replace("\n", "\r\n"),
        "\x01" + note,
        body + "\n\n— pouch-fr-audit AAAAAA==\n",
        body + "\n\n— pouch-fr-audit " + "A" * 88 + "AB==\n",
        body + "\n\n" + line * 101,
        note + "Unexpected line.\n",
        checkpoint(origin, size, root, "extension"),
        checkpoint(origin, size, root, ""),
        checkpoint(origin, "0" + size, root),
        checkpoint(origin, str(2**64), root),
        checkpoint(origin, size, root[:-2] + "Z="),
        checkpoint(origin, size),
        checkpoint("", size, root),
    ]


def test_checkpoint_note_syntax_is_read_in_the_browser_as_the_gateway_reads_it(
    page: Page, site: Site, signed_log: SignedLog
) -> None:
    variants = _checkpoint_variants(signed_log.checkpoints[SECOND_SIZE])
    page.goto(site.url("/blank"))

    verdicts = page.evaluate(_JS_NOTE_SYNTAX, variants)

    assert verdicts == [_python_syntax_verdict(v) for v in variants]
    assert verdicts[:1] + verdicts[12:13] == ["ok", "ok"]
    assert verdicts.count("note") >= 10
    assert verdicts.count("checkpoint") >= 5


_JS_LEAF_CHECKS = """async (leaves) => {
    const m = await import("/static/evidence.js");
    const verdicts = [];
    for (const leaf of leaves) {
        try {
            m.checkEntryLeaf(m.decodeBase64(leaf));
            verdicts.push("entry");
        } catch (error) {
            verdicts.push(error.check);
        }
    }
    return {
        verdicts,
        fields: [...m.ENTRY_FIELDS_V1],
        kinds: [...m.EVENT_KINDS_V1],
        decisions: [...m.DECISIONS_V1],
    };
}"""


def test_the_browser_reads_leaves_as_v1_entries_as_the_gateway_writes_them(
    page: Page, site: Site
) -> None:
    honest = [
        make_event(1).canonical(),
        AuditEvent(
            time=START, event_kind=EventKind.ADMIN_ACTION, decision=Decision.RECORDED
        ).canonical(),
        make_event(2, removed_paths=("b.c", "a[]"), transformed_paths=("x",)).canonical(),
    ]
    document = json.loads(honest[0])
    forged = [
        json.dumps(document, indent=1).encode(),  # spaces: not RFC 8785
        json.dumps(document).encode(),  # ", " and ": " separators
        json.dumps(document | {"v": 2}, sort_keys=True, separators=(",", ":")).encode(),
        json.dumps(document | {"extra": 1}, sort_keys=True, separators=(",", ":")).encode(),
        json.dumps(
            document | {"removed_paths": ["z", "a"]}, sort_keys=True, separators=(",", ":")
        ).encode(),
        json.dumps(
            document | {"time": "2026-02-30T00:00:00.000Z"}, sort_keys=True, separators=(",", ":")
        ).encode(),
        honest[0].replace(b'"v":1', b'"v":1,"v":1'),
        b"\xff",
        b"[]",
    ]
    page.goto(site.url("/blank"))

    answer = page.evaluate(_JS_LEAF_CHECKS, [b64(d) for d in honest + forged])

    assert answer["verdicts"] == ["entry"] * len(honest) + ["leaf"] * len(forged)
    assert sorted(answer["fields"]) == sorted({"v"} | {f.name for f in fields(AuditEvent)})
    assert answer["kinds"] == [k.value for k in EventKind]
    assert answer["decisions"] == [d.value for d in Decision]
