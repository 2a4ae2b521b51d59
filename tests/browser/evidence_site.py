"""A real audit log and a page that checks its evidence, served for chromium.

:func:`build_signed_log` builds a log with the gateway's audit code (SQLite, the stored
Merkle tree, checkpoints signed by a :class:`CheckpointSigner` with an Ed25519 line and
an ML-DSA-44 line); :func:`serving` serves a page, ``console/static/`` and the two
evidence endpoints from 127.0.0.1 under the console's CSP. The fixtures are in
``conftest.py``; the tests in ``test_evidence_check.py`` and ``test_evidence_vectors.py``.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import Page, Route
from sqlalchemy import Engine

from gateway.audit.checkpoint import (
    Checkpoint,
    audit_key_name,
    audit_origin,
)
from gateway.audit.log import AuditLog
from gateway.audit.log_signing import CheckpointSigner
from gateway.pki.note_keys import Ed25519Signer, MLDSA44Signer
from gateway.store.engine import create_engine
from gateway.store.migrate import upgrade_to_head
from tests.unit.audit import make_event
from tests.unit.store.conftest import START, FakeClock

STATIC = Path(__file__).resolve().parents[2] / "console" / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
ORIGIN = audit_origin("FR")
OTHER_ORIGIN = audit_origin("DE")
KEY_NAME = audit_key_name("FR")
SIGNED_AT = datetime(2026, 12, 6, 9, 0, 0, tzinfo=UTC)
FIRST_SIZE, SECOND_SIZE = 5, 13
ENTRY = 6
PROOF_PATH = f"/audit/entries/{ENTRY}/proof"
CONSISTENCY_PATH = "/audit/consistency"
SETTLED = '[data-state="verified"], [data-state="failed"]'

FAILED = "Evidence check failed:"
FORM_FAILED = "Consistency check failed:"
REASONS = {
    "signature": "the checkpoint is not signed by the log's pinned key.",
    "inclusion": "the entry is not in the tree the checkpoint names.",
    "origin": "the checkpoint is of another log.",
    "leaf": "the entry is not a canonical audit entry.",
    "network": "the evidence could not be fetched.",
    "size": "the tree size is not the checkpoint's.",
    "malformed": "the evidence is malformed.",
    "key": "the pinned log key is unusable.",
    "unsupported": "this browser cannot check Ed25519 signatures.",
    "consistency": "the later checkpoint does not extend the earlier one.",
}
ENTRY_REASONS = (
    "signature", "inclusion", "origin", "leaf", "network", "size", "malformed", "key",
    "unsupported",
)  # fmt: skip
# No "request" text, as in the console's form: a refused request shows "malformed".
FORM_REASONS = (
    "signature", "origin", "size", "malformed", "network", "unsupported", "consistency",
)  # fmt: skip
# The entry's words use the console's gettext placeholders, the form's the braces: the
# page may use either.
ENTRY_TEXTS = {
    "checking": "Checking the evidence…",
    "verified": "Entry %(index)s is in the log at tree size %(size)s, root %(root)s",
    "failed": f"{FAILED} %(reason)s",
} | {f"reason-{r}": REASONS[r] for r in ENTRY_REASONS}
FORM_TEXTS = {
    "checking": "Checking consistency…",
    "verified": "Tree {first} is a prefix of tree {second}, root {root}",
    "failed": FORM_FAILED,
} | {f"reason-{r}": REASONS[r] for r in FORM_REASONS}


@dataclass(frozen=True)
class SignedLog:
    """A stored audit log of 13 entries and its checkpoints at sizes 5 and 13."""

    log: AuditLog
    signer: CheckpointSigner
    ed25519_key: Ed25519Signer = field(repr=False)
    mldsa_key: MLDSA44Signer = field(repr=False)
    checkpoints: Mapping[int, str]

    @property
    def vkeys(self) -> list[str]:
        """The log's vkeys as a trust bundle gives them: Ed25519 (0x01), ML-DSA-44 (0x06)."""
        return [str(key.vkey) for key in self.signer.verifiers()]

    def checkpoint_of(self, origin: str, size: int) -> str:
        """A checkpoint the log's own keys sign for ``origin``."""
        signer = CheckpointSigner(origin, KEY_NAME, self.ed25519_key, self.mldsa_key)
        return signer.sign(Checkpoint(origin, size, self.log.root(size)), SIGNED_AT)

    def inclusion(self, index: int, size: int) -> dict[str, Any]:
        record = self.log.entry(index)
        assert record is not None
        return {
            "index": index,
            "tree_size": size,
            "leaf": b64(record.canonical),
            "hashes": [b64(h) for h in self.log.inclusion_proof(index, size)],
            "checkpoint": self.checkpoints[size],
        }

    def consistency(self, first: int, second: int) -> dict[str, Any]:
        return {
            "first_size": first,
            "second_size": second,
            "first_checkpoint": self.checkpoints[first],
            "second_checkpoint": self.checkpoints[second],
            "hashes": [b64(h) for h in self.log.consistency_proof(first, second)],
        }


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def build_signed_log(folder: Path) -> tuple[SignedLog, Engine]:
    """The log of 13 entries and its two checkpoints, stored under ``folder``."""
    engine = create_engine(f"sqlite:///{folder / 'pouch.db'}")
    upgrade_to_head(engine)
    log = AuditLog(engine, clock=FakeClock(START))
    ed25519_key, mldsa_key = Ed25519Signer.generate(), MLDSA44Signer.generate()
    signer = CheckpointSigner(ORIGIN, KEY_NAME, ed25519_key, mldsa_key)
    checkpoints = {}
    log.append([make_event(n) for n in range(FIRST_SIZE)])
    checkpoints[FIRST_SIZE] = signer.sign(Checkpoint(ORIGIN, FIRST_SIZE, log.root()), SIGNED_AT)
    log.append([make_event(n, removed_paths=("holder.birth_date",)) for n in range(FIRST_SIZE, 13)])
    checkpoints[SECOND_SIZE] = signer.sign(Checkpoint(ORIGIN, SECOND_SIZE, log.root()), SIGNED_AT)
    signed = SignedLog(log, signer, ed25519_key, mldsa_key, MappingProxyType(checkpoints))
    return signed, engine


def _text_attributes(texts: dict[str, str]) -> str:
    return " ".join(f'data-text-{name}="{html.escape(text)}"' for name, text in texts.items())


def evidence_page(vkeys: list[str]) -> str:
    """The page as the console renders it: keys and words in attributes, no inline script."""
    entry_text = _text_attributes(ENTRY_TEXTS)
    form_text = _text_attributes(FORM_TEXTS)
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Audit entry {ENTRY}</title>
<script type="module" src="/static/evidence_check.js"></script></head>
<body><main>
<h1>Audit entry {ENTRY}</h1>
<section id="evidence-check" aria-labelledby="evidence-heading"
  data-proof-url="{PROOF_PATH}" data-log-vkeys="{html.escape(json.dumps(vkeys))}"
  data-log-origin="{ORIGIN}" {entry_text}>
<h2 id="evidence-heading">Evidence</h2>
<p id="evidence-result" role="status" aria-live="polite"></p>
</section>
<form id="consistency-check" data-consistency-url="{CONSISTENCY_PATH}" {form_text}>
<label for="first">Earlier tree size</label>
<input type="number" id="first" name="first" min="0">
<label for="second">Later tree size</label>
<input type="number" id="second" name="second" min="0">
<button type="submit">Check consistency</button>
</form>
<p id="consistency-result" role="status" aria-live="polite"></p>
</main></body></html>
"""


@dataclass(frozen=True)
class Site:
    """The served test site; ``url(path)`` is where chromium finds ``path``."""

    base: str

    def url(self, path: str = "/") -> str:
        return self.base + path


def _handler(signed_log: SignedLog) -> type[BaseHTTPRequestHandler]:
    page = evidence_page(signed_log.vkeys).encode("utf-8")

    class EvidenceHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/":
                self.answer(page, "text/html; charset=utf-8")
            elif url.path == "/favicon.ico":
                self.answer(b"", "image/x-icon", HTTPStatus.NO_CONTENT)
            elif url.path == "/blank":
                self.answer(b"<!doctype html><title>blank</title>", "text/html; charset=utf-8")
            elif url.path.startswith("/static/") and url.path.endswith(".js"):
                script = STATIC / url.path.removeprefix("/static/")
                if script.parent != STATIC or not script.is_file():
                    self.answer(b"", "text/plain", HTTPStatus.NOT_FOUND)
                else:
                    self.answer(script.read_bytes(), "text/javascript; charset=utf-8")
            elif url.path == PROOF_PATH:
                self.answer_json(signed_log.inclusion(ENTRY, SECOND_SIZE))
            elif url.path == CONSISTENCY_PATH:
                query = parse_qs(url.query)
                sizes = (int(query["first"][0]), int(query["second"][0]))
                if not set(sizes) <= signed_log.checkpoints.keys():
                    self.answer(b"", "text/plain", HTTPStatus.NOT_FOUND)
                else:
                    self.answer_json(signed_log.consistency(*sizes))
            else:
                self.answer(b"", "text/plain", HTTPStatus.NOT_FOUND)

        def answer_json(self, document: dict[str, Any]) -> None:
            self.answer(json.dumps(document).encode("utf-8"), "application/json")

        def answer(self, body: bytes, kind: str, status: HTTPStatus = HTTPStatus.OK) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return EvidenceHandler


@contextlib.contextmanager
def serving(signed_log: SignedLog) -> Iterator[Site]:
    """The log's pages and evidence on 127.0.0.1; stateless, each test has its own context."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(signed_log))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def settled(page: Page, holder: str, result: str) -> tuple[str | None, str]:
    """The holder's ``data-state`` once the check ends, and the text it wrote."""
    page.wait_for_selector(f"{holder}:is({SETTLED})", timeout=10_000)
    return page.get_attribute(holder, "data-state"), page.inner_text(result)


def entry_outcome(page: Page) -> tuple[str | None, str]:
    return settled(page, "#evidence-check", "#evidence-result")


def failure(reason: str) -> tuple[str, str]:
    return "failed", f"{FAILED} {REASONS[reason]}"


Change = Callable[[dict[str, Any], SignedLog], dict[str, Any]]


def tamper_json(page: Page, path: str, signed_log: SignedLog, change: Change) -> None:
    """Change the server's JSON answer at ``path`` before the page reads it."""

    def handle(route: Route) -> None:
        response = route.fetch()
        route.fulfill(response=response, json=change(response.json(), signed_log))

    page.route(f"**{path}*", handle)


def tamper_page(page: Page, old: str, new: str) -> None:
    """Change the served page's HTML (the pinned keys, the origin) before chromium reads it."""

    def handle(route: Route) -> None:
        response = route.fetch()
        body = response.text()
        assert old in body
        route.fulfill(response=response, body=body.replace(old, new))

    page.route("**/", handle)
