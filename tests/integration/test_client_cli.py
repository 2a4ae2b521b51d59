"""The ``pouch`` client commands as a person or a script runs them, against live gateways.

AT and BE run in this process over real TLS with the AT–BE agreement, a checkpoint
every half second, and each its reference registry behind mutual TLS. Every command
runs as its own ``python -m gateway`` process with the connection set once in the
environment (``POUCH_TARGET``, ``POUCH_CA``, ``POUCH_CERT``, ``POUCH_KEY``,
``POUCH_TOKEN_FILE``), the way a script sets it; one test gives the options instead.

Each service's test runs its commands in table and ``--json`` form, then one refusal,
and asserts the gRPC status, the reason code and the exit code (1 refused, 3 not
reached). A watch is also taken through a TCP relay whose connections the test cuts.
The deployment is shared by the module: every test works on the messages, cases and
listings it made itself, by their ids.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

import grpc
import pytest

from gateway.config import load_settings
from gateway.protojson import message_to_dict
from gateway.server.app import Gateway
from pouch.v1 import representation_pb2
from pouch_devtools.demo.agreements import CIVIL_PURPOSE, IDENTITY_PURPOSES, REPRESENTATION_PURPOSE
from pouch_devtools.demo.deployment import (
    RegistryProcess,
    Site,
    agreement_id_for,
    free_port,
    prepare_sites,
)
from tests.integration.case_fixtures import Consulate
from tests.integration.conftest import FORBIDDEN_IN_MESSAGES, GatewayThread
from tests.integration.exchange_fixtures import FAST_DELIVERY, death_update

AT_BE = agreement_id_for("AT", "BE")
ALL_SCOPES = (
    "civil:submit",
    "identity:query",
    "representation:request",
    "representation:act",
    "audit:read",
    "admin",
)
COMMAND_TIMEOUT_S = 60.0
SETTLE_S = 20.0
# ICAO Doc 9303 part 4's specimen passport.
SPECIMEN_MRZ = (
    "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<\nL898902C36UTO7408122F1204159ZE184226B<<<<<10\n"
)


@dataclass(frozen=True)
class Live:
    """The running deployment, and a way to run ``pouch`` as one of its callers."""

    sites: dict[str, Site]
    root: Path

    def environment(self, state: str, scopes: Sequence[str]) -> dict[str, str]:
        """The connection a script of ``state`` sets once, with a fresh token."""
        site = self.sites[state]
        token_file = self.root / f"{state}-{uuid.uuid4().hex[:8]}.token"
        token_file.write_text(site.token(scopes, now=time.time()), encoding="ascii")
        env = {k: v for k, v in os.environ.items() if not k.startswith("POUCH_")}
        return env | {
            "POUCH_TARGET": site.local_target,
            "POUCH_CA": str(site.pki.ca_cert),
            "POUCH_CERT": str(site.pki.client_cert("operator")),
            "POUCH_KEY": str(site.pki.client_key("operator")),
            "POUCH_TOKEN_FILE": str(token_file),
        }

    def pouch(
        self, state: str, *args: str, scopes: Sequence[str] = ALL_SCOPES
    ) -> subprocess.CompletedProcess[str]:
        return run_pouch(list(args), self.environment(state, scopes))

    def pouch_json(self, state: str, *args: str) -> Any:
        done = self.pouch(state, *args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def file(self, name: str, text: str) -> Path:
        path = self.root / f"{uuid.uuid4().hex[:8]}-{name}"
        path.write_text(text, encoding="utf-8")
        return path


def run_pouch(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    for marker in FORBIDDEN_IN_MESSAGES:
        assert marker not in done.stderr, f"{marker!r} in what pouch said: {done.stderr}"
    return done


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """AT and BE with their registries, shared by the module's tests (made once: about
    2 s to set up and stop, for each of 8 tests if it were per test).

    Sharing is safe: each test submits, opens and lists what it made itself and finds it
    by its id; the audit test reads a log that only grows.
    """
    root = tmp_path_factory.mktemp("client-cli")
    sites = prepare_sites(
        root,
        ["AT", "BE"],
        now=datetime.now(UTC),
        agreements=[("AT", "BE")],
        delivery=FAST_DELIVERY,
        checkpoint_interval_s=0.5,
    )
    registries = [RegistryProcess(sites[state]) for state in ("AT", "BE")]
    try:
        for registry in registries:
            registry.start()
        with (
            GatewayThread(Gateway(load_settings(sites["AT"].config_path))),
            GatewayThread(Gateway(load_settings(sites["BE"].config_path))),
        ):
            yield Live(sites=sites, root=root)
    finally:
        for registry in registries:
            registry.stop()


def refused(
    done: subprocess.CompletedProcess[str], code: str, reason: str
) -> subprocess.CompletedProcess[str]:
    """Assert ``done`` is a refusal printed in words: status, reason, exit code 1."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"refused the call: {code} (reason {reason})" in done.stderr, done.stderr
    return done


def row(text: str, name: str) -> str:
    """The value in the row ``name`` of a printed two-column table."""
    match = re.search(rf"│ {re.escape(name)}\s*│ (.+?)\s*│", text)
    assert match is not None, f"no row {name!r} in:\n{text}"
    return match.group(1)


def settled(check: Callable[[], Any]) -> Any:
    """``check()`` once it returns something true, within the settling time."""
    deadline = time.monotonic() + SETTLE_S
    while not (found := check()):
        assert time.monotonic() < deadline, "never settled"
        time.sleep(0.1)
    return found


# -- civil ---------------------------------------------------------------------------


def test_civil_submit_status_and_list_then_a_purpose_not_agreed_and_a_bad_field_are_refused(
    live: Live,
) -> None:
    update = live.file("death.json", json.dumps(message_to_dict(death_update(date.today()))))
    reference = f"cli-test-{uuid.uuid4().hex[:8]}"
    envelope = ["--to", "BE", "--agreement", AT_BE]

    submitted = live.pouch(
        "AT", "civil", "submit", "--file", str(update), "--purpose", CIVIL_PURPOSE, *envelope,
        "--reference", reference,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    assert row(submitted.stdout, "reference") == reference
    assert row(submitted.stdout, "state") == "QUEUED"
    message_id = row(submitted.stdout, "message id")

    status = live.pouch_json("AT", "civil", "status", message_id, "--wait", "20")["status"]
    assert (status["message_id"], status["client_reference"]) == (message_id, reference)
    assert status["recipient_state"] == "BE"
    assert status["event_type"] == "CIVIL_EVENT_TYPE_DEATH"
    # BE's reference registry knows no such person: its decision came back, signed.
    assert (status["state"], status["reason_code"]) == ("DELIVERY_STATE_REJECTED", "UNKNOWN_PERSON")

    listed = live.pouch("AT", "civil", "list", "--to", "BE", "--limit", "200")
    assert listed.returncode == 0, listed.stderr
    assert message_id in listed.stdout and reference in listed.stdout

    not_agreed = live.pouch(
        "AT", "civil", "submit", "--file", str(update), "--purpose", "law_enforcement", *envelope
    )
    refused(not_agreed, "PERMISSION_DENIED", "PURPOSE_NOT_AGREED")
    assert "purpose is not agreed" in not_agreed.stderr

    tree = message_to_dict(death_update(date.today()))
    tree["event_date"]["month"] = 13
    bad = live.file("bad.json", json.dumps(tree))
    bad_field = live.pouch(
        "AT", "civil", "submit", "--file", str(bad), "--purpose", CIVIL_PURPOSE, *envelope, "--json"
    )
    refused(bad_field, "INVALID_ARGUMENT", "VALIDATION")
    assert "field update.event_date.month: must be 1 to 12" in bad_field.stderr
    error = json.loads(bad_field.stdout)["error"]
    assert (error["code"], error["reason"]) == ("INVALID_ARGUMENT", "VALIDATION")
    assert error["violations"] == [{"field": "update.event_date.month", "rule": "must be 1 to 12"}]


def test_civil_submit_batch_streams_many_and_says_which_were_refused(live: Live) -> None:
    good: dict[str, Any] = {"client_reference": f"batch-{uuid.uuid4().hex[:8]}"}
    good |= {"recipient_state": "BE", "update": message_to_dict(death_update(date.today()))}
    tree = message_to_dict(death_update(date.today()))
    tree["event_date"]["month"] = 13
    bad = {"client_reference": f"batch-{uuid.uuid4().hex[:8]}", "update": tree}
    lines = live.file("updates.jsonl", f"{json.dumps(good)}\n\n{json.dumps(bad)}\n")

    done = live.pouch(
        "AT", "civil", "submit-batch", str(lines), "--to", "BE", "--agreement", AT_BE,
        "--purpose", CIVIL_PURPOSE, "--json",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "pouch: 1 of 2 updates refused" in done.stderr
    taken, refused_one = json.loads(done.stdout)["results"]
    assert taken["client_reference"] == good["client_reference"]
    assert taken["message_id"] and taken["state"] == "DELIVERY_STATE_QUEUED"
    assert refused_one["client_reference"] == bad["client_reference"]
    assert refused_one["error_reason"] == "VALIDATION"
    assert "update.event_date.month: must be 1 to 12" in refused_one["error_message"]


# -- identity ------------------------------------------------------------------------


def test_identity_confirm_from_fields_and_from_an_mrz_then_a_missing_scope_is_refused(
    live: Live,
) -> None:
    query = ["identity", "confirm", "--partner", "BE", "--agreement", AT_BE]
    query += ["--purpose", IDENTITY_PURPOSES[0]]
    fields = ["--document-type", "passport", "--document-number", "L898902C3"]
    fields += ["--given-name", "Anna", "--family-name", "Eriksson", "--date-of-birth", "1974-08-12"]

    from_fields = live.pouch("AT", *query, *fields)
    assert from_fields.returncode == 0, from_fields.stderr
    assert row(from_fields.stdout, "result") in {"MATCH", "NO_MATCH", "PARTIAL"}
    assert row(from_fields.stdout, "document") != ""
    assert "L898902C3" not in from_fields.stdout  # nothing of the claim is printed back

    mrz = live.file("passport.mrz", SPECIMEN_MRZ)
    answer = live.pouch_json("AT", *query, "--mrz-file", str(mrz))
    assert answer["message_id"]
    assert answer["result"].startswith("MATCH_RESULT_")

    no_scope = live.pouch("AT", *query, *fields, scopes=["civil:submit"])
    refused(no_scope, "PERMISSION_DENIED", "SCOPE_MISSING")
    assert "the token lacks the scope 'identity:query'" in no_scope.stderr


# -- representation cases ------------------------------------------------------------


def _case_on(site: Site, case_id: str) -> representation_pb2.RepresentationCase | None:
    with Consulate(site) as consulate:
        try:
            return consulate.stub.GetCase(
                representation_pb2.GetCaseRequest(case_id=case_id),
                metadata=consulate.metadata,
                timeout=10,
            ).case
        except grpc.RpcError:
            return None


def test_a_case_opened_watched_and_worked_from_the_command_line_then_an_illegal_move_is_refused(
    live: Live,
) -> None:
    at, be = live.sites["AT"], live.sites["BE"]
    person = {
        "name": {"given_names": ["Mariam"], "family_names": ["Haidari"]},
        "date_of_birth": {"year": 1984, "month": 3, "day": 9},
        "nationality": "AT",
        "location": {"country_code": "TH", "locality": "Chiang Mai"},
        "contact": "+66 81 555 0199",
    }
    opened = live.pouch_json(
        "AT", "case", "open", "--representing", "BE", "--mission-country", "TH",
        "--agreement", AT_BE, "--purpose", REPRESENTATION_PURPOSE, "--kind", "lost_documents",
        "--person", str(live.file("person.json", json.dumps(person))),
        "--summary", "Passport stolen",
    )["case"]  # fmt: skip
    case_id = opened["case_id"]
    assert opened["state"] == "CASE_STATE_SUBMITTED"

    watcher = subprocess.Popen(
        [sys.executable, "-m", "gateway", "case", "watch", case_id, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=live.environment("AT", ["representation:request"]),
    )
    try:
        settled(lambda: _case_on(be, case_id))
        acknowledged = live.pouch("BE", "case", "transition", case_id, "acknowledged")
        assert acknowledged.returncode == 0, acknowledged.stderr
        assert row(acknowledged.stdout, "state") == "ACKNOWLEDGED"
        assert live.pouch("BE", "case", "transition", case_id, "accepted").returncode == 0
        noted = live.pouch("BE", "case", "note", case_id, "--text", "Met at the police station")
        assert noted.returncode == 0, noted.stderr
        assert row(noted.stdout, "by") == "BE"
        claim = live.pouch_json(
            "BE", "case", "claim", case_id, "--currency", "EUR", "--amount-minor", "12000",
            "--description", "TRAVEL_DOCUMENT_FEE",
        )["claim"]  # fmt: skip
        assert (claim["currency"], claim["amount_minor"]) == ("EUR", "12000")

        settled(lambda: (c := _case_on(at, case_id)) is not None and len(c.cost_claims) == 1)
        acknowledged_costs = live.pouch(
            "AT", "case", "acknowledge-costs", case_id, claim["claim_id"]
        )
        assert acknowledged_costs.returncode == 0, acknowledged_costs.stderr
        assert row(acknowledged_costs.stdout, "acknowledged") == "yes"

        shown = live.pouch("AT", "case", "show", case_id)
        assert shown.returncode == 0, shown.stderr
        assert row(shown.stdout, "state") == "ACCEPTED"
        assert "Met at the police station" in shown.stdout
        assert "TRAVEL_DOCUMENT_FEE" in shown.stdout
        listed = live.pouch_json("BE", "case", "list", "--state", "accepted")
        assert case_id in [c["case_id"] for c in listed["cases"]]

        illegal = live.pouch("AT", "case", "transition", case_id, "completed")
        refused(illegal, "FAILED_PRECONDITION", "ILLEGAL_TRANSITION")
        assert "cannot be moved to completed by the requesting state" in illegal.stderr
    finally:
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=COMMAND_TIMEOUT_S)
    assert watcher.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [event["event_kind"] for event in events]
    assert kinds[0] == "current", kinds
    assert "note_added" in kinds, kinds
    assert events[-1]["case"]["case_id"] == case_id
    assert "Traceback" not in err


class Relay:
    """A TCP relay on loopback to ``port``, whose connections a test can cut (a gateway
    restarting, a network dropping)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.target = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._listener.accept()
            except OSError:
                return  # closed
            far = socket.create_connection(("127.0.0.1", self._port))
            with self._lock:
                self._open += [near, far]
            for source, sink in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every connection through the relay; new ones are still taken."""
        with self._lock:
            cut, self._open = self._open, []
        for connection in cut:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def close(self) -> None:
        self._listener.close()
        self.cut()


def lines_of(stream: IO[str]) -> queue.Queue[str]:
    """The lines ``stream`` gives, as they come."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def next_line_with(lines: queue.Queue[str], text: str) -> str:
    deadline = time.monotonic() + SETTLE_S
    while (line := lines.get(timeout=max(0.1, deadline - time.monotonic()))) and text not in line:
        pass
    return line


def test_a_watch_that_loses_its_gateway_watches_again_and_sees_what_happened(
    live: Live,
) -> None:
    at, be = live.sites["AT"], live.sites["BE"]
    with Consulate(at) as requester:
        case_id = requester.request("BE", AT_BE).case_id
    relay = Relay(at.local_port)
    env = live.environment("AT", ["representation:request"]) | {"POUCH_TARGET": relay.target}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "gateway", "case", "watch", case_id, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert watcher.stdout is not None and watcher.stderr is not None
        out, err = lines_of(watcher.stdout), lines_of(watcher.stderr)
        assert json.loads(next_line_with(out, '"current"'))["case"]["case_id"] == case_id
        relay.cut()
        lost = next_line_with(err, "watching again")
        assert f"lost the gateway at {relay.target}" in lost
        again = json.loads(next_line_with(out, '"current"'))  # the case as it now stands
        assert again["case"]["case_id"] == case_id
        with Consulate(be) as representing:
            representing.wait_for(case_id, lambda case: True)
            representing.stub.AddNote(
                representation_pb2.AddNoteRequest(case_id=case_id, text="Called the hotel"),
                metadata=representing.metadata,
                timeout=10,
            )
        noted = json.loads(next_line_with(out, '"note_added"'))
        assert [n["text"] for n in noted["case"]["notes"]] == ["Called the hotel"]
    finally:
        watcher.send_signal(signal.SIGINT)
        watcher.wait(timeout=COMMAND_TIMEOUT_S)
        relay.close()
    assert watcher.returncode == 0


# -- agreements ----------------------------------------------------------------------


def test_agreement_list_and_show_from_the_gateway_then_an_unknown_agreement_is_refused(
    live: Live,
) -> None:
    listed = live.pouch("AT", "agreement", "list", "--partner", "BE")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if AT_BE in line)
    assert "ACTIVE" in line and "AT-BE" in line

    shown = live.pouch_json("AT", "agreement", "show", AT_BE)
    assert shown["summary"]["status"] == "AGREEMENT_STATUS_ACTIVE"
    assert shown["summary"]["ref"]["digest"].startswith("sha256:")
    assert shown["summary"]["parties"] == ["AT", "BE"]

    unknown = live.pouch("AT", "agreement", "show", "no-such-agreement")
    refused(unknown, "NOT_FOUND", "UNKNOWN_AGREEMENT")


# -- audit ---------------------------------------------------------------------------


def test_audit_entries_checkpoint_proof_and_an_export_that_verifies_then_a_missing_scope(
    live: Live,
) -> None:
    auditor = ["audit:read"]
    entries = live.pouch("AT", "audit", "entries", "--limit", "5", scopes=auditor)
    assert entries.returncode == 0, entries.stderr
    assert "agreement_loaded" in entries.stdout
    listed = json.loads(
        live.pouch("AT", "audit", "entries", "--agreement", AT_BE, "--json", scopes=auditor).stdout
    )
    assert listed["entries"] and all(e["agreement"]["id"] == AT_BE for e in listed["entries"])

    kept = live.root / "last.checkpoint"
    checkpoint = live.pouch("AT", "audit", "checkpoint", "--out", str(kept), scopes=auditor)
    assert checkpoint.returncode == 0, checkpoint.stderr
    assert row(checkpoint.stdout, "origin") == "pouch.gateway/AT/audit"
    size = int(row(checkpoint.stdout, "tree size"))
    assert kept.read_text().splitlines()[1] == str(size)

    proof = live.pouch_json("AT", "audit", "proof", "--index", "0", "--size", str(size))
    assert size == 1 or proof["hashes"]

    bundle = live.root / "at.bundle"
    exported = live.pouch(
        "AT", "audit", "export", "--out", str(bundle), "--since-checkpoint", str(kept),
        scopes=auditor,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert row(exported.stdout, "bytes") == str(bundle.stat().st_size)
    verified = run_pouch(
        ["audit", "verify", str(bundle), "--bundle", str(live.sites["AT"].pki.bundle),
         "--bundle", str(live.sites["BE"].pki.bundle), "--since", str(kept)],
        dict(os.environ),
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout
    assert "VERIFIED" in verified.stdout

    no_scope = live.pouch("AT", "audit", "entries", scopes=["civil:submit"])
    refused(no_scope, "PERMISSION_DENIED", "SCOPE_MISSING")


# -- status --------------------------------------------------------------------------


def test_status_shows_gateway_partners_agreements_and_backlog_then_an_auditor_is_refused(
    live: Live,
) -> None:
    shown = live.pouch("AT", "status", scopes=["admin"])
    assert shown.returncode == 0, shown.stderr
    assert "gateway AT" in shown.stdout
    assert row(shown.stdout, "TLS certificate until").startswith("20")
    assert live.sites["BE"].peer_target in shown.stdout
    line = next(line for line in shown.stdout.splitlines() if AT_BE in line)
    assert "ACTIVE" in line
    assert "dead letters" in shown.stdout
    partner = next(line for line in shown.stdout.splitlines() if line.startswith("│ BE "))
    assert re.search(r"│ (reachable|UNREACHABLE|not yet called) +│", partner), partner
    assert re.search(r"│ crl BE +│ OK +│ fresh: issued .* next update", shown.stdout)
    assert re.search(r"│ certificate gateway_tls +│ OK +│ valid .* to ", shown.stdout)

    tree = live.pouch_json("AT", "status")
    assert tree["gateway"]["state"] == "AT"
    assert [p["state"] for p in tree["gateway"]["partners"]] == ["BE"]
    assert [a["ref"]["id"] for a in tree["agreements"]["agreements"]] == [AT_BE]
    assert "dead_letters" in tree
    assert [p["state"] for p in tree["diagnostics"]["partners"]] == ["BE"]
    assert any(f["check"] == "crl own" for f in tree["diagnostics"]["findings"])

    auditor = live.pouch("AT", "status", scopes=["audit:read"])
    refused(auditor, "PERMISSION_DENIED", "SCOPE_MISSING")


# -- connection ----------------------------------------------------------------------


def test_options_given_on_the_command_line_work_and_an_unreached_gateway_exits_3(
    live: Live,
) -> None:
    at = live.sites["AT"]
    env = live.environment("AT", ["admin"])
    options = ["--ca", env.pop("POUCH_CA"), "--cert", env.pop("POUCH_CERT")]
    options += ["--key", env.pop("POUCH_KEY"), "--token-file", env.pop("POUCH_TOKEN_FILE")]
    del env["POUCH_TARGET"]

    reached = run_pouch(["status", "--gateway", at.local_target, *options], env)
    assert reached.returncode == 0, reached.stderr

    closed = f"127.0.0.1:{free_port()}"
    unreached = run_pouch(["status", "--target", closed, *options], env)
    assert unreached.returncode == 3
    assert f"cannot reach the gateway at {closed}" in unreached.stderr
    assert "Connection refused" in unreached.stderr

    other_ca = ["--ca", str(live.sites["BE"].pki.ca_cert), *options[2:]]
    untrusted = run_pouch(["status", "--target", at.local_target, *other_ca], env)
    assert untrusted.returncode == 3
    assert f"cannot reach the gateway at {at.local_target}" in untrusted.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
