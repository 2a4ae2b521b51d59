"""A standalone C2SP transparency-log witness, the counterpart the gateway is tested against.

Written from c2sp.org/tlog-witness, tlog-cosignature, signed-note and RFC 9162 alone,
sharing no code with ``gateway.audit``: its own note parsing, its own Merkle consistency
check, signing with ``cryptography`` directly. A gateway that only agrees with its own
reading of the specifications would pass its own tests; it must agree with this one.

It serves, over HTTP (HTTPS with ``--tls-cert``/``--tls-key``):

* ``POST /add-checkpoint``: verifies the checkpoint against the log keys configured for
  its origin (``--log ORIGIN=VKEY_FILE``; types 0x01 Ed25519 and 0x06 ML-DSA-44), checks
  the old size and the consistency proof, persists the checkpoint (atomically, under a
  lock with the check), and answers two cosignature lines: Ed25519 (type 0x04) and
  ML-DSA-44 (type 0x06), both under ``--name``;
* ``GET /<hex sha256 of the origin>/checkpoint``: the latest cosigned checkpoint.

Run::

    python -m pouch_devtools.witness --name witness.test/w1 --key-file w1.keys \\
        --state-file w1.json --log pouch.gateway/AT/audit=at-log.vkeys \\
        --listen 127.0.0.1:0 --port-file w1.port

It prints its two vkeys, one a line, and writes the port it listens on to
``--port-file`` once it accepts requests. Keys are made on first start and kept in
``--key-file`` (mode 0600).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import signal
import ssl
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

ED25519_NOTE = 0x01
ED25519_COSIGNATURE = 0x04
MLDSA44_COSIGNATURE = 0x06
MAX_BODY = 1 << 20
MAX_PROOF = 63
EMPTY_ROOT = hashlib.sha256(b"").digest()
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class Refusal(Exception):
    def __init__(self, status: int, text: str, content_type: str = "text/plain") -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.content_type = content_type


def b64decode(text: str) -> bytes:
    raw = base64.b64decode(text, validate=True)
    if base64.b64encode(raw).decode() != text:
        raise ValueError("not canonical base64")
    return raw


def key_id(name: str, kind: int, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + public).digest()[:4]


@dataclass(frozen=True)
class LogKey:
    name: str
    kind: int
    public: bytes

    @property
    def id(self) -> bytes:
        return key_id(self.name, self.kind, self.public)

    @classmethod
    def parse(cls, vkey: str) -> LogKey:
        name, hex_id, material = vkey.split("+", 2)
        raw = b64decode(material)
        kind, public = raw[0], raw[1:]
        if kind not in (ED25519_NOTE, MLDSA44_COSIGNATURE):
            raise ValueError(f"{name}: a log key here is of type 0x01 or 0x06")
        key = cls(name, kind, public)
        if key.id.hex() != hex_id:
            raise ValueError(f"{name}: the key ID does not match the key")
        return key


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    body: str


def parse_checkpoint(body: str) -> Checkpoint:
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "" or not _DECIMAL.fullmatch(lines[1]):
        raise ValueError("not a checkpoint")
    root = b64decode(lines[2])
    if len(root) != 32:
        raise ValueError("a root hash is 32 bytes")
    return Checkpoint(lines[0], int(lines[1]), root, body)


def split_note(note: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """The note's text and its signature lines as (name, key ID, signature)."""
    if not note.endswith("\n"):
        raise ValueError("a note ends with a newline")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise ValueError("a note has a blank line before its signatures")
    text, lines = note[: cut + 1], note[cut + 2 : -1].split("\n")
    signatures = []
    for line in lines:
        if not line.startswith("— "):
            raise ValueError("a signature line starts with an em dash")
        name, _, encoded = line[2:].partition(" ")
        raw = b64decode(encoded)
        if not name or len(raw) < 5:
            raise ValueError("a signature line names a key and holds a signature")
        signatures.append((name, raw[:4], raw[4:]))
    return text, signatures


def cosigned_message(name: str, timestamp: int, origin: str, size: int, root: bytes) -> bytes:
    """tlog-cosignature's ``cosigned_message`` for a whole checkpoint (start 0)."""
    name_bytes, origin_bytes = name.encode(), origin.encode()
    return (
        b"subtree/v1\n\x00"
        + bytes([len(name_bytes)])
        + name_bytes
        + struct.pack(">Q", timestamp)
        + bytes([len(origin_bytes)])
        + origin_bytes
        + struct.pack(">QQ", 0, size)
        + root
    )


def signature_verifies(key: LogKey, checkpoint: Checkpoint, signature: bytes) -> bool:
    try:
        if key.kind == ED25519_NOTE:
            ed25519.Ed25519PublicKey.from_public_bytes(key.public).verify(
                signature, checkpoint.body.encode()
            )
            return True
        if len(signature) < 8:
            return False
        (timestamp,) = struct.unpack(">Q", signature[:8])
        message = cosigned_message(
            key.name, timestamp, checkpoint.origin, checkpoint.size, checkpoint.root
        )
        mldsa.MLDSA44PublicKey.from_public_bytes(key.public).verify(signature[8:], message)
        return True
    except (InvalidSignature, ValueError):
        return False


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def consistent(old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2, as written there."""
    if old == new:
        return old_root == new_root and not proof
    if old == 0:
        return not proof
    if old > new or not proof:
        return False
    path = [old_root, *proof] if old & (old - 1) == 0 else list(proof)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


class Witness:
    """The decision and the record: one latest checkpoint per origin, in a JSON file."""

    def __init__(
        self,
        name: str,
        keys: tuple[ed25519.Ed25519PrivateKey, mldsa.MLDSA44PrivateKey],
        logs: dict[str, list[LogKey]],
        state_file: Path,
    ) -> None:
        self.name = name
        self._ed25519, self._mldsa = keys
        self._logs = logs
        self._state_file = state_file
        self._lock = threading.Lock()
        self._state: dict[str, dict[str, str | int]] = (
            json.loads(state_file.read_text()) if state_file.exists() else {}
        )

    def vkeys(self) -> list[str]:
        out = []
        for kind, public in (
            (ED25519_COSIGNATURE, self._ed25519.public_key().public_bytes_raw()),
            (MLDSA44_COSIGNATURE, self._mldsa.public_key().public_bytes_raw()),
        ):
            material = base64.b64encode(bytes([kind]) + public).decode()
            out.append(f"{self.name}+{key_id(self.name, kind, public).hex()}+{material}")
        return out

    def latest(self, origin_hash: str) -> str | None:
        with self._lock:
            for origin, record in self._state.items():
                if hashlib.sha256(origin.encode()).hexdigest() == origin_hash:
                    return str(record["note"])
        return None

    def add_checkpoint(self, body: bytes) -> str:
        old, proof, note = parse_request(body)
        try:
            text, signatures = split_note(note)
            checkpoint = parse_checkpoint(text)
        except (ValueError, binascii.Error) as e:
            raise Refusal(400, f"malformed checkpoint: {e}") from e
        keys = self._logs.get(checkpoint.origin)
        if keys is None:
            raise Refusal(404, "unknown log origin")
        trusted_lines = self._verified_lines(keys, checkpoint, signatures)
        if old > checkpoint.size:
            raise Refusal(400, "old size is larger than the checkpoint's")
        with self._lock:
            record = self._state.get(checkpoint.origin)
            cosigned = 0 if record is None else int(record["size"])
            if old != cosigned:
                raise Refusal(409, f"{cosigned}\n", "text/x.tlog.size")
            if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
                raise Refusal(422, "a tree of size 0 has the empty root")
            if old == 0 and proof:
                raise Refusal(422, "no proof is sent from size 0")
            if record is not None:
                old_root = b64decode(str(record["root"]))
                if not consistent(old, checkpoint.size, old_root, checkpoint.root, proof):
                    raise Refusal(422, "the consistency proof does not verify")
            lines = self._cosign(checkpoint)
            self._state[checkpoint.origin] = {
                "size": checkpoint.size,
                "root": base64.b64encode(checkpoint.root).decode(),
                "note": f"{checkpoint.body}\n{''.join(trusted_lines)}{lines}",
            }
            self._persist()
        return lines

    def _verified_lines(
        self, keys: list[LogKey], checkpoint: Checkpoint, signatures: list[tuple[str, bytes, bytes]]
    ) -> list[str]:
        lines = []
        for name, kid, signature in signatures:
            key = next((k for k in keys if (k.name, k.id) == (name, kid)), None)
            if key is None:
                continue  # a line of a key we do not know: ignored
            if not signature_verifies(key, checkpoint, signature):
                raise Refusal(403, "a signature of the log's key does not verify")
            lines.append(f"— {name} {base64.b64encode(kid + signature).decode()}\n")
        if not lines:
            raise Refusal(403, "no signature of the log's keys")
        return lines

    def _cosign(self, checkpoint: Checkpoint) -> str:
        timestamp = int(time.time())
        stamp = struct.pack(">Q", timestamp)
        ed_public = self._ed25519.public_key().public_bytes_raw()
        ed_message = f"cosignature/v1\ntime {timestamp}\n{checkpoint.body}".encode()
        ed_line = key_id(self.name, ED25519_COSIGNATURE, ed_public) + stamp
        ed_line += self._ed25519.sign(ed_message)
        ml_public = self._mldsa.public_key().public_bytes_raw()
        message = cosigned_message(
            self.name, timestamp, checkpoint.origin, checkpoint.size, checkpoint.root
        )
        ml_line = key_id(self.name, MLDSA44_COSIGNATURE, ml_public) + stamp
        ml_line += self._mldsa.sign(message)
        return "".join(
            f"— {self.name} {base64.b64encode(raw).decode()}\n" for raw in (ed_line, ml_line)
        )

    def _persist(self) -> None:
        temporary = self._state_file.with_name(self._state_file.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as out:
            json.dump(self._state, out)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(self._state_file)
        directory = os.open(self._state_file.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def parse_request(body: bytes) -> tuple[int, list[bytes], str]:
    try:
        text = body.decode("utf-8")
        head, blank, note = text.partition("\n\n")
        if not blank or not note:
            raise ValueError("no blank line before the checkpoint")
        first, *hashes = head.split("\n")
        if not first.startswith("old ") or not _DECIMAL.fullmatch(first[4:]):
            raise ValueError("the first line is 'old <size>'")
        if len(hashes) > MAX_PROOF:
            raise ValueError("too many proof lines")
        proof = [b64decode(h) for h in hashes]
        if any(len(h) != 32 for h in proof):
            raise ValueError("a proof line is one SHA-256 hash")
    except (UnicodeDecodeError, ValueError, binascii.Error) as e:
        raise Refusal(400, f"bad request: {e}") from e
    return int(first[4:]), proof, note


def handler_for(witness: Witness) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, status: int, text: str, content_type: str = "text/plain") -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0") or "0")
            if self.path != "/add-checkpoint":
                self._answer(404, "not found\n")
                return
            if not 0 <= length <= MAX_BODY:
                self.close_connection = True
                self._answer(400, "body too large\n")
                return
            body = self.rfile.read(length)
            try:
                self._answer(200, witness.add_checkpoint(body))
            except Refusal as e:
                text = e.text if e.text.endswith("\n") else e.text + "\n"
                self._answer(e.status, text, e.content_type)

        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/")
            note = (
                witness.latest(parts[0]) if len(parts) == 2 and parts[1] == "checkpoint" else None
            )
            if note is None:
                self._answer(404, "not found\n")
            else:
                self._answer(200, note)

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the test reads stdout for the vkeys

    return Handler


def load_keys(path: Path) -> tuple[ed25519.Ed25519PrivateKey, mldsa.MLDSA44PrivateKey]:
    if not path.exists():
        seeds = {"ed25519": os.urandom(32).hex(), "mldsa44": os.urandom(32).hex()}
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump(seeds, out)
    seeds = json.loads(path.read_text())
    return (
        ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seeds["ed25519"])),
        mldsa.MLDSA44PrivateKey.from_seed_bytes(bytes.fromhex(seeds["mldsa44"])),
    )


def _log_option(value: str) -> tuple[str, list[LogKey]]:
    origin, _, file = value.rpartition("=")
    if not origin:
        raise argparse.ArgumentTypeError("--log is ORIGIN=VKEY_FILE")
    lines = Path(file).read_text().split()
    return origin, [LogKey.parse(line) for line in lines]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pouch-test-witness", description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="the witness's key name")
    parser.add_argument("--key-file", type=Path, required=True)
    parser.add_argument("--state-file", type=Path, required=True)
    parser.add_argument("--log", type=_log_option, action="append", default=[])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--vkey-file", type=Path)
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    args = parser.parse_args(argv)
    if " " in args.name or "+" in args.name:
        parser.error("a key name has no spaces and no '+'")
    witness = Witness(args.name, load_keys(args.key_file), dict(args.log), args.state_file)
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host.strip("[]"), int(port)), handler_for(witness))
    if args.tls_cert is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    vkeys = "".join(f"{v}\n" for v in witness.vkeys())
    if args.vkey_file is not None:
        args.vkey_file.write_text(vkeys)
    sys.stdout.write(vkeys)
    sys.stdout.flush()
    if args.port_file is not None:
        temporary = args.port_file.with_name(args.port_file.name + ".tmp")
        temporary.write_text(f"{server.server_address[1]}\n")
        temporary.replace(args.port_file)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
