"""C2SP signed notes: published examples, round trips, and what a verifier must refuse."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa

from gateway.audit.note import (
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    Ed25519NoteSigner,
    Ed25519NoteVerifier,
    MalformedNote,
    Note,
    NoteSignature,
    UnverifiedNote,
    VerifierKey,
    open_note,
    parse_note,
    parse_signature_line,
    sign_note,
)
from gateway.errors import Rejected
from gateway.pki.note_keys import (
    ED25519,
    MLDSA44,
    MLDSA44_PUBLIC_KEY_SIZE,
    MLDSA44_SIGNATURE_SIZE,
    Ed25519Signer,
    MLDSA44Signer,
    verify_ed25519,
    verify_mldsa44,
    verify_note_key,
)
from tests.vectors import load_vector

TEXT = "pouch.gateway/FR/audit\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"


def signer(name: str = "pouch-fr-audit") -> Ed25519NoteSigner:
    return Ed25519NoteSigner(name, Ed25519Signer.generate())


def test_published_examples_parse_and_verify() -> None:
    go = load_vector("c2sp/go_sumdb_note")
    peter = Ed25519NoteVerifier.from_vkey(go["verifier_keys"]["PeterNeumann"])
    enoch = Ed25519NoteVerifier.from_vkey(go["verifier_keys"]["EnochRoot"])

    both = open_note(go["note"], [peter, enoch])
    assert both.text == go["text"]
    assert [(s.key_name, s.key_id) for s in both.verified] == [
        ("PeterNeumann", 0xC74F20A3),
        ("EnochRoot", 0xAF0CFE78),
    ]
    assert both.ignored == ()

    only_peter = open_note(go["note"].encode("utf-8"), [peter])
    assert [s.key_name for s in only_peter.verified] == ["PeterNeumann"]
    assert [s.key_name for s in only_peter.ignored] == ["EnochRoot"]

    c2sp = load_vector("c2sp/signed_note")
    note = parse_note(c2sp["note"])
    # The text holds a blank line: the signatures start after the *last* one.
    assert note.text == c2sp["text"]
    assert [(s.key_name, f"{s.key_id:08x}", len(s.signature)) for s in note.signatures] == [
        (e["key_name"], e["key_id"], e["signature_bytes"]) for e in c2sp["signatures"]
    ]
    assert note.serialize() == c2sp["note"]
    with pytest.raises(UnverifiedNote):
        open_note(c2sp["note"], [peter])


def test_published_signature_is_reproduced_from_published_seed() -> None:
    go = load_vector("c2sp/go_sumdb_note")
    _, _, name, key_id, material = go["signer_key"].split("+", 4)
    raw = base64.b64decode(material)
    assert raw[0] == 0x01
    peter = Ed25519NoteSigner(name, Ed25519Signer.from_seed(raw[1:]))
    assert f"{peter.key_id:08x}" == key_id
    assert sign_note(go["text"], peter).serialize() == go["signed_by_peter"]
    assert str(peter.verifier().vkey) == go["verifier_keys"]["PeterNeumann"]


def test_verifier_key_round_trip_and_mismatched_key_id_is_refused() -> None:
    vkey = load_vector("c2sp/go_sumdb_note")["verifier_keys"]["EnochRoot"]
    assert str(VerifierKey.parse(vkey)) == vkey
    name, key_id, material = vkey.split("+", 2)
    wrong = f"{name}+{int(key_id, 16) ^ 1:08x}+{material}"
    with pytest.raises(ValueError, match="key ID"):
        VerifierKey.parse(wrong)
    with pytest.raises(ValueError):
        VerifierKey.parse(f"{name}+{key_id}")
    with pytest.raises(ValueError, match="type 0x01"):
        Ed25519NoteVerifier.from_vkey(VerifierKey(name, 0x04, VerifierKey.parse(vkey).public_key))


def test_note_round_trip() -> None:
    first, second = signer(), signer("pouch-de-audit")
    note = sign_note(TEXT, first, second)
    assert parse_note(note.serialize()) == note
    opened = open_note(note.serialize(), [first.verifier(), second.verifier()])
    assert opened.text == TEXT
    assert opened.verified == note.signatures
    line = note.signatures[0].line
    assert line.startswith("— pouch-fr-audit ") and line.endswith("=\n")
    assert parse_signature_line(line) == note.signatures[0]


def test_adding_a_signature_replaces_the_same_keys_old_line() -> None:
    first, second = signer(), signer("pouch-de-audit")
    note = sign_note(TEXT, first)
    stale = NoteSignature(first.key_name, first.key_id, b"\x00" * 64)
    renewed = Note(TEXT, (stale,)).with_signatures(note.signatures)
    assert renewed.signatures == note.signatures
    both = note.with_signatures(sign_note(TEXT, second).signatures)
    assert [s.key_name for s in both.signatures] == ["pouch-fr-audit", "pouch-de-audit"]


def test_unknown_signature_lines_are_ignored_not_trusted() -> None:
    known = signer()
    impostor = signer(known.key_name)  # same name, other key, so another key ID
    stranger = signer("example.com/stranger")
    mixed = sign_note(TEXT, stranger, known, impostor)
    opened = open_note(mixed.serialize(), [known.verifier()])
    assert [s.key_id for s in opened.verified] == [known.key_id]
    assert {s.key_id for s in opened.ignored} == {stranger.key_id, impostor.key_id}

    # Lines of unknown keys never make a note verified, whatever their names.
    with pytest.raises(UnverifiedNote, match="no signature by a known key"):
        open_note(sign_note(TEXT, impostor, stranger).serialize(), [known.verifier()])

    # The same key ID under another name is another key, ignored as well.
    renamed = NoteSignature("pouch-de-audit", known.key_id, known.sign(TEXT.encode()))
    with pytest.raises(UnverifiedNote):
        open_note(Note(TEXT, (renamed,)).serialize(), [known.verifier()])


def test_bad_signature_by_known_key_rejects_whole_note() -> None:
    known, other = signer(), signer("pouch-de-audit")
    good = sign_note(TEXT, known, other)
    forged = NoteSignature(other.key_name, other.key_id, bytes(64))
    tampered = good.with_signatures([forged])
    with pytest.raises(UnverifiedNote, match="invalid"):
        open_note(tampered.serialize(), [known.verifier(), other.verifier()])
    # Same bytes with the text changed: every known line must verify over the new text.
    altered = good.serialize().replace("\n3\n", "\n4\n", 1)
    with pytest.raises(UnverifiedNote):
        open_note(altered, [known.verifier()])


def test_repeated_lines_count_once() -> None:
    known, stranger = signer(), signer("example.com/stranger")
    line, strange = sign_note(TEXT, known).signatures[0].line, sign_note(TEXT, stranger)
    text = TEXT + "\n" + line + line + strange.signatures[0].line * 3
    opened = open_note(text, [known.verifier()])
    assert len(opened.verified) == 1
    assert len(opened.ignored) == 1


def test_two_known_keys_with_one_name_and_id_are_a_configuration_error() -> None:
    known = signer()
    with pytest.raises(ValueError, match="ambiguous"):
        open_note(sign_note(TEXT, known).serialize(), [known.verifier(), known.verifier()])


LINE = "— pouch-fr-audit AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(TEXT, id="no-signatures"),
        pytest.param(TEXT + "\n", id="blank-line-only"),
        pytest.param(TEXT + "\n" + LINE[:-1], id="last-line-unterminated"),
        pytest.param("\x01" + TEXT + "\n" + LINE, id="control-character"),
        pytest.param(TEXT.replace("\n", "\r\n") + "\r\n" + LINE, id="carriage-returns"),
        pytest.param(TEXT + "\n" + LINE.replace("pouch-fr-audit", "pouch fr"), id="space-in-name"),
        pytest.param(TEXT + "\n" + LINE.replace("pouch-fr-audit", "pouch+fr"), id="plus-in-name"),
        pytest.param(TEXT + "\n" + LINE.replace("— ", "- "), id="hyphen-not-em-dash"),
        pytest.param(TEXT + "\n" + LINE.replace(" AAAA", " AAA!"), id="not-base64"),
        pytest.param(TEXT + "\n— pouch-fr-audit " + "A" * 88 + "AB==\n", id="non-canonical-base64"),
        pytest.param(TEXT + "\n— pouch-fr-audit AAAAAA==\n", id="signature-too-short"),
        pytest.param(TEXT + "\n" + LINE + "Unexpected line.\n", id="line-after-signatures"),
        pytest.param(TEXT + "\n" + LINE * (MAX_SIGNATURES + 1), id="too-many-signatures"),
        pytest.param(TEXT + "x" * MAX_NOTE_BYTES + "\n\n" + LINE, id="too-large"),
        pytest.param("\ud800" + TEXT + "\n" + LINE, id="lone-surrogate"),
    ],
)
def test_malformed_notes_are_refused(text: str) -> None:
    with pytest.raises(MalformedNote) as refused:
        open_note(text, [signer().verifier()])
    assert isinstance(refused.value, Rejected)


def test_note_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(MalformedNote):
        parse_note(b"\xff" + TEXT.encode() + b"\n" + LINE.encode())


def test_sixteen_signatures_are_accepted() -> None:
    signers = [signer(f"example.com/w{i}") for i in range(16)]
    opened = open_note(sign_note(TEXT, *signers).serialize(), [s.verifier() for s in signers])
    assert len(opened.verified) == 16


def test_audit_notes_refuse_an_ecdsa_key() -> None:
    with pytest.raises(ValueError, match="Ed25519"):
        Ed25519Signer(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ValueError, match="ML-DSA-44"):
        MLDSA44Signer(ec.generate_private_key(ec.SECP256R1()))


def test_each_note_key_holds_its_own_algorithm_only() -> None:
    with pytest.raises(ValueError, match="Ed25519"):
        Ed25519Signer(mldsa.MLDSA44PrivateKey.generate())
    with pytest.raises(ValueError, match="ML-DSA-44"):
        MLDSA44Signer(ed25519.Ed25519PrivateKey.generate())
    assert (Ed25519Signer.algorithm, MLDSA44Signer.algorithm) == (ED25519, MLDSA44)


def test_mldsa44_keys_from_a_seed_are_deterministic() -> None:
    seed = bytes(range(32))
    key = MLDSA44Signer.from_seed(seed)
    assert key.public_key == MLDSA44Signer.from_seed(seed).public_key
    assert len(key.public_key) == MLDSA44_PUBLIC_KEY_SIZE
    assert len(key.sign(b"m")) == MLDSA44_SIGNATURE_SIZE
    for wrong in (seed[:31], seed + b"\x00"):
        with pytest.raises(ValueError, match="32 bytes"):
            MLDSA44Signer.from_seed(wrong)
        with pytest.raises(ValueError, match="32 bytes"):
            Ed25519Signer.from_seed(wrong)


def test_ed25519_verification_never_raises_on_hostile_input() -> None:
    key = Ed25519Signer.generate()
    signature = key.sign(b"m")
    assert verify_ed25519(key.public_key, b"m", signature)
    assert not verify_ed25519(key.public_key, b"n", signature)
    assert not verify_ed25519(key.public_key[:31], b"m", signature)
    assert not verify_ed25519(key.public_key, b"m", signature[:63])
    assert not verify_ed25519(b"\xff" * 32, b"m", signature)
    assert "public_key" in repr(key) and key.public_key.hex() in repr(key)


def test_mldsa44_verification_never_raises_on_hostile_input() -> None:
    key = MLDSA44Signer.generate()
    signature = key.sign(b"m")
    assert verify_mldsa44(key.public_key, b"m", signature)
    assert not verify_mldsa44(key.public_key, b"n", signature)
    assert not verify_mldsa44(key.public_key[:-1], b"m", signature)
    assert not verify_mldsa44(key.public_key, b"m", signature[:-1])
    assert not verify_mldsa44(key.public_key, b"m", signature + b"\x00")
    assert not verify_mldsa44(b"\xff" * MLDSA44_PUBLIC_KEY_SIZE, b"m", signature)
    assert not verify_mldsa44(key.public_key, b"m", b"\xff" * MLDSA44_SIGNATURE_SIZE)
    assert not verify_mldsa44(b"", b"m", b"")
    assert repr(key).startswith("MLDSA44Signer(public_key=")


def test_a_note_key_verifies_only_its_own_algorithms_signatures() -> None:
    classical, post_quantum = Ed25519Signer.generate(), MLDSA44Signer.generate()
    classical_signature, pq_signature = classical.sign(b"m"), post_quantum.sign(b"m")
    assert verify_note_key(ED25519, classical.public_key, b"m", classical_signature)
    assert verify_note_key(MLDSA44, post_quantum.public_key, b"m", pq_signature)
    assert not verify_note_key(MLDSA44, classical.public_key, b"m", classical_signature)
    assert not verify_note_key(ED25519, post_quantum.public_key, b"m", pq_signature)
    assert not verify_note_key("Ed448", classical.public_key, b"m", classical_signature)
