"""Canary values planted in every string field of a payload never leave the payload's path.

Each payload builder plants distinctive values (``CANARY-<probe>-<field>-<code>``) in
the fields of one payload: names of children, parents and spouses, places of birth,
act references, registry identifiers, new names, country codes. Some payloads pass
and travel from AT to BE through real gateway and registry processes; some are
refused (purpose not agreed, an invalid field, a kind not agreed). Each is sent alone
and in a bulk stream. Once every accepted message is settled, the word ``CANARY``
must appear nowhere in the evidence and diagnostics of either gateway:

a. any column of any audit table, in either database (read with SQL);
b. either gateway's log file, written at DEBUG, in the text and in the JSON format;
c. the Prometheus metrics of either gateway;
d. anything a refused caller was told: status message, details and trailers.

The registries legitimately receive the allowed values, and the outbox and inbox
hold them sealed; neither is looked at. A new exchange type joins by adding builders
of its payloads to :data:`PAYLOAD_BUILDERS`: the test checks that, for each payload
type, the builders together plant a canary in every string field it has.
"""

from __future__ import annotations

import contextlib
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from pouch.v1 import civil_pb2, common_pb2, identity_pb2
from pouch_devtools.demo.agreements import CIVIL_PURPOSE, IDENTITY_PURPOSES
from pouch_devtools.demo.deployment import (
    GatewayProcess,
    RegistryProcess,
    Site,
    agreement_id_for,
    prepare_sites,
)
from tests.integration.civil_builders import gateway_database, query_sqlite
from tests.integration.conftest import error_reason
from tests.integration.exchange_fixtures import (
    FAST_DELIVERY,
    TIMEOUT_S,
    LocalCaller,
    submission,
    unique_reference,
)

MARKER = "CANARY"
AT_BE = agreement_id_for("AT", "BE")
SETTLED_WITHIN_S = 20.0
# The audit entry that closes an accepted message on the sender's side.
CLOSING_KINDS = ("receipted", "dead_lettered")


# -- canaries and probes ---------------------------------------------------------


@dataclass
class Canaries:
    """Hands out the canary values of one probe and remembers them."""

    probe: str
    values: list[str] = field(default_factory=list)

    def __call__(self, tag: str) -> str:
        value = f"{MARKER}-{self.probe}-{tag}"
        self.values.append(value)
        return value


@dataclass(frozen=True)
class Told:
    """One answer to the caller: the message id if accepted, else the refusal."""

    message_id: str | None
    reason: str | None
    text: str


@dataclass(frozen=True)
class Probe:
    """One payload with canaries, and how the local API is asked to send it."""

    label: str
    payload: Message
    canaries: Sequence[str]
    refused_with: str | None
    send: Callable[[LocalCaller], list[Told]]


def what_was_told(error: grpc.RpcError) -> str:
    """Everything a refusal carries back: message, details, trailers (raw bytes too)."""
    parts: list[str] = []
    if isinstance(error, grpc.Call):
        parts.append(str(error.details()))
        for key, value in error.trailing_metadata() or ():
            shown = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            parts.append(f"{key}: {shown}")
        for key, value in error.initial_metadata() or ():
            parts.append(f"{key}: {value!r}")
    debug = getattr(error, "debug_error_string", None)
    if callable(debug):
        parts.append(str(debug()))
    return "\n".join(parts)


def civil_probe(
    label: str,
    build: Callable[[Canaries, date], civil_pb2.CivilRecordUpdate],
    *,
    purpose: str = CIVIL_PURPOSE,
    refused_with: str | None = None,
) -> Callable[[date], Probe]:
    """A civil-record update, sent with SubmitUpdate and again in a SubmitUpdates stream."""

    def probe(today: date) -> Probe:
        canaries = Canaries(label)
        update = build(canaries, today)

        def send(caller: LocalCaller) -> list[Told]:
            told: list[Told] = []
            request = submission(update, agreement_id=AT_BE, recipient_state="BE", purpose=purpose)
            try:
                told.append(Told(caller.submit(request), None, ""))
            except grpc.RpcError as e:
                told.append(Told(None, error_reason(e), what_was_told(e)))
            again = submission(
                update,
                agreement_id=AT_BE,
                recipient_state="BE",
                purpose=purpose,
                reference=unique_reference(f"bulk-{label.lower()}"),
            )
            answers = caller.civil.SubmitUpdates(
                iter([civil_pb2.SubmitUpdatesRequest(update=again)]),
                metadata=caller.metadata,
                timeout=TIMEOUT_S,
            )
            for answer in answers:
                if answer.error_reason:
                    text = f"{answer.error_message}\n{answer}"
                    told.append(Told(None, answer.error_reason, text))
                else:
                    told.append(Told(answer.message_id, None, str(answer)))
            return told

        return Probe(label, update, canaries.values, refused_with, send)

    return probe


# -- civil-record updates --------------------------------------------------------


def _date(day: date) -> common_pb2.CivilDate:
    return common_pb2.CivilDate(year=day.year, month=day.month, day=day.day)


def _name(c: Canaries, who: str) -> common_pb2.PersonName:
    return common_pb2.PersonName(
        given_names=[c(f"{who}-GIVEN-7Q2"), c(f"{who}-GIVEN2-5RD")],
        family_names=[c(f"{who}-FAMILY-X9K")],
    )


def _person(
    c: Canaries, who: str, *, born: common_pb2.CivilDate, identified: bool = True
) -> civil_pb2.Person:
    return civil_pb2.Person(
        name=_name(c, who),
        date_of_birth=born,
        place_of_birth=common_pb2.Place(country_code="BE", locality=c(f"{who}-BIRTHPLACE-J6V")),
        nationalities=["BE", "AT"],
        registry_identifier=c(f"{who}-REGID-8HF") if identified else "",
    )


def _party(role: civil_pb2.PartyRole.ValueType, person: civil_pb2.Person) -> civil_pb2.Party:
    return civil_pb2.Party(role=role, person=person)


def _update(
    c: Canaries,
    today: date,
    event: civil_pb2.CivilEventType.ValueType,
    parties: Sequence[civil_pb2.Party],
) -> civil_pb2.CivilRecordUpdate:
    return civil_pb2.CivilRecordUpdate(
        event_type=event,
        event_date=_date(today),
        event_place=common_pb2.Place(country_code="AT", locality=c("LOCALITY-M3P")),
        parties=parties,
        act_reference=c("ACT-4WZ"),
    )


ADULT = common_pb2.CivilDate(year=1961, month=3, day=14)


def birth(c: Canaries, today: date) -> civil_pb2.CivilRecordUpdate:
    child = _person(c, "CHILD", born=_date(today))
    return _update(
        c,
        today,
        civil_pb2.CIVIL_EVENT_TYPE_BIRTH,
        [
            _party(civil_pb2.PARTY_ROLE_SUBJECT, child),
            _party(civil_pb2.PARTY_ROLE_MOTHER, _person(c, "MOTHER", born=ADULT)),
            _party(civil_pb2.PARTY_ROLE_FATHER, _person(c, "FATHER", born=ADULT)),
            _party(civil_pb2.PARTY_ROLE_DECLARANT, _person(c, "DECLARANT", born=ADULT)),
        ],
    )


def death(c: Canaries, today: date) -> civil_pb2.CivilRecordUpdate:
    # The registry knows no such identifier: BE's registry rejects it (UNKNOWN_PERSON).
    return _update(
        c,
        today,
        civil_pb2.CIVIL_EVENT_TYPE_DEATH,
        [
            _party(civil_pb2.PARTY_ROLE_SUBJECT, _person(c, "DECEASED", born=ADULT)),
            _party(civil_pb2.PARTY_ROLE_SPOUSE, _person(c, "WIDOW", born=ADULT)),
        ],
    )


def marriage(c: Canaries, today: date) -> civil_pb2.CivilRecordUpdate:
    return _update(
        c,
        today,
        civil_pb2.CIVIL_EVENT_TYPE_MARRIAGE,
        [
            _party(civil_pb2.PARTY_ROLE_SPOUSE, _person(c, "BRIDE", born=ADULT)),
            _party(civil_pb2.PARTY_ROLE_SPOUSE, _person(c, "GROOM", born=ADULT)),
        ],
    )


def name_change(c: Canaries, today: date) -> civil_pb2.CivilRecordUpdate:
    update = _update(
        c,
        today,
        civil_pb2.CIVIL_EVENT_TYPE_NAME_CHANGE,
        [_party(civil_pb2.PARTY_ROLE_SUBJECT, _person(c, "RENAMED", born=ADULT, identified=False))],
    )
    update.new_name.CopyFrom(_name(c, "NEWNAME"))
    return update


def nationality_acquired(c: Canaries, today: date) -> civil_pb2.CivilRecordUpdate:
    update = _update(
        c,
        today,
        civil_pb2.CIVIL_EVENT_TYPE_NATIONALITY_ACQUIRED,
        [_party(civil_pb2.PARTY_ROLE_SUBJECT, _person(c, "NATURALISED", born=ADULT))],
    )
    update.nationality = "BE"
    return update


def adoption(c: Canaries, today: date) -> civil_pb2.CivilRecordUpdate:
    """Valid, but a kind the agreement does not list."""
    return _update(
        c,
        today,
        civil_pb2.CIVIL_EVENT_TYPE_ADOPTION,
        [
            _party(civil_pb2.PARTY_ROLE_SUBJECT, _person(c, "ADOPTEE", born=ADULT)),
            _party(civil_pb2.PARTY_ROLE_ADOPTIVE_PARENT, _person(c, "ADOPTER", born=ADULT)),
        ],
    )


def broken_fields(c: Canaries, today: date) -> civil_pb2.CivilRecordUpdate:
    """Canaries where codes belong, a control character in a name, an act reference too
    long: validation refuses it, naming the fields."""
    update = nationality_acquired(c, today)
    update.nationality = c("NATIONALITY-2LB")
    update.event_place.country_code = c("COUNTRY-6YN")
    update.act_reference = c("ACT-TOO-LONG-") + "9" * 64
    person = update.parties[0].person
    person.place_of_birth.country_code = c("BIRTHCOUNTRY-3KQ")
    person.nationalities.append(c("NATIONALITIES-0PS"))
    person.name.given_names.append(c("BIDI-GIVEN-1ZA") + "\u202e")
    return update


PAYLOAD_BUILDERS: list[Callable[[date], Probe]] = [
    civil_probe("BIRTH", birth),
    civil_probe("DEATH", death),
    civil_probe("MARRIAGE", marriage),
    civil_probe("NAMECHANGE", name_change),
    civil_probe("NATURALISATION", nationality_acquired),
    civil_probe("PURPOSE", birth, purpose="marketing", refused_with="PURPOSE_NOT_AGREED"),
    civil_probe("INVALID", broken_fields, refused_with="VALIDATION"),
    civil_probe("ADOPTION", adoption, refused_with="KIND_NOT_AGREED"),
]


# -- identity confirmations -----------------------------------------------------


def identity_probe(
    label: str,
    build: Callable[[Canaries], identity_pb2.IdentityClaim],
    *,
    purpose: str = IDENTITY_PURPOSES[0],
    refused_with: str | None = None,
) -> Callable[[date], Probe]:
    """An identity claim, asked of BE with ConfirmIdentity."""

    def probe(today: date) -> Probe:
        del today
        canaries = Canaries(label)
        claim = build(canaries)

        def send(caller: LocalCaller) -> list[Told]:
            request = identity_pb2.ConfirmIdentityRequest(
                partner_state="BE", agreement_id=AT_BE, purpose=purpose, claim=claim
            )
            try:
                answer = caller.identity.ConfirmIdentity(
                    request, metadata=caller.metadata, timeout=TIMEOUT_S
                )
            except grpc.RpcError as e:
                return [Told(None, error_reason(e), what_was_told(e))]
            return [Told(answer.message_id, None, str(answer))]

        return Probe(label, claim, canaries.values, refused_with, send)

    return probe


def claimed_identity(c: Canaries) -> identity_pb2.IdentityClaim:
    return identity_pb2.IdentityClaim(
        document_type=identity_pb2.DOCUMENT_TYPE_PASSPORT,
        document_number=c("NUMBER-4TT"),
        name=_name(c, "HOLDER"),
        date_of_birth=ADULT,
        nationality="BE",
    )


def broken_identity(c: Canaries) -> identity_pb2.IdentityClaim:
    claim = claimed_identity(c)
    claim.nationality = c("NATIONALITY-2KX")
    claim.mrz = c("MRZ-8PL")
    return claim


IDENTITY_LABELS = frozenset({"IDENTITY", "IDPURPOSE", "IDINVALID"})
IDENTITY_BUILDERS: list[Callable[[date], Probe]] = [
    identity_probe("IDENTITY", claimed_identity),
    identity_probe(
        "IDPURPOSE", claimed_identity, purpose="marketing", refused_with="PURPOSE_NOT_AGREED"
    ),
    identity_probe("IDINVALID", broken_identity, refused_with="VALIDATION"),
]


# -- coverage of the payloads' string fields -------------------------------------


def string_paths(descriptor: Descriptor, prefix: str = "") -> set[str]:
    """Every string field of a message type, as a dotted path (``[]`` for lists)."""
    paths: set[str] = set()
    for f in descriptor.fields:
        path = f"{prefix}{f.name}{'[]' if f.is_repeated else ''}"
        if f.type == FieldDescriptor.TYPE_STRING:
            paths.add(path)
        elif f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type is not None:
            paths |= string_paths(f.message_type, f"{path}.")
    return paths


def planted_paths(message: Message, prefix: str = "") -> set[str]:
    """The string fields of ``message`` that hold a canary."""
    paths: set[str] = set()
    for f, value in message.ListFields():
        path = f"{prefix}{f.name}{'[]' if f.is_repeated else ''}"
        values = list(value) if f.is_repeated else [value]
        if f.type == FieldDescriptor.TYPE_STRING:
            if any(v.startswith(MARKER) for v in values):
                paths.add(path)
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            for v in values:
                paths |= planted_paths(v, f"{path}.")
    return paths


# -- the deployment --------------------------------------------------------------


@dataclass(frozen=True)
class Deployment:
    sites: dict[str, Site]
    gateways: dict[str, GatewayProcess]


@pytest.fixture(params=["text", "json"])
def deployment(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Deployment]:
    """Gateways logging everything they log at DEBUG, in each of the two formats."""
    root = tmp_path_factory.mktemp(f"leak-probe-{request.param}")
    sites = prepare_sites(
        root,
        ["AT", "BE"],
        now=datetime.now(UTC),
        agreements=[("AT", "BE")],
        delivery=FAST_DELIVERY,
        checkpoint_interval_s=0.5,
    )
    options = ["--log-level", "DEBUG", "--log-format", request.param]
    gateways = {state: GatewayProcess(site, serve_options=options) for state, site in sites.items()}
    with contextlib.ExitStack() as stack:
        for site in sites.values():
            registry = RegistryProcess(site)
            stack.callback(registry.stop)
            registry.start()
        for process in gateways.values():
            stack.callback(process.kill)
            process.start()
        yield Deployment(sites=sites, gateways=gateways)


def metrics_text(site: Site) -> str:
    url = f"http://127.0.0.1:{site.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as answer:
        return str(answer.read().decode("utf-8"))


def audit_tables_text(site: Site) -> str:
    """Every column of every row of every audit table, as text."""
    db = gateway_database(site)
    tables = query_sqlite(
        db, "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'audit%'"
    )
    assert ("audit_entries",) in tables
    lines: list[str] = []
    for (table,) in tables:
        for row in query_sqlite(db, f'SELECT * FROM "{table}"'):  # noqa: S608 (names from sqlite)
            lines.append(
                " | ".join(
                    v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row
                )
            )
    return "\n".join(lines)


def closed_message_ids(site: Site) -> set[str]:
    marks = ", ".join("?" for _ in CLOSING_KINDS)
    rows = query_sqlite(
        gateway_database(site),
        f"SELECT message_id FROM audit_entries WHERE event_kind IN ({marks})",  # noqa: S608
        CLOSING_KINDS,
    )
    return {row[0] for row in rows}


def leaks(text: str) -> list[str]:
    """Lines of ``text`` that carry a canary, however it is cased."""
    return [line for line in text.splitlines() if MARKER.lower() in line.lower()]


def assert_no_canary(where: str, text: str) -> None:
    found = leaks(text)
    assert not found, f"canary values reached {where}:\n" + "\n".join(found[:20])


# -- the test ----------------------------------------------------------------------


def test_canary_values_never_reach_audit_entries_logs_metrics_or_errors(
    deployment: Deployment,
) -> None:
    at, be = deployment.sites["AT"], deployment.sites["BE"]
    builders = [*PAYLOAD_BUILDERS, *IDENTITY_BUILDERS]
    probes = [build(datetime.now(UTC).date()) for build in builders]

    # Together the builders plant a canary in every string field of each payload type.
    unplanted: dict[str, set[str]] = {}
    for probe in probes:
        descriptor = probe.payload.DESCRIPTOR
        assert isinstance(descriptor, Descriptor)
        missing = unplanted.setdefault(descriptor.full_name, string_paths(descriptor))
        missing -= planted_paths(probe.payload)
    for name, missing in unplanted.items():
        assert not missing, f"no canary in {name} fields {sorted(missing)}"

    accepted: list[str] = []
    with LocalCaller(at, ["civil:submit", "identity:query"]) as caller:
        for probe in probes:
            for told in probe.send(caller):
                assert told.reason == probe.refused_with, (probe.label, told)
                assert_no_canary(f"what the caller was told about {probe.label}", told.text)
                if told.message_id is not None:
                    accepted.append(told.message_id)
    sent_twice = [p for p in probes if p.refused_with is None and p.label not in IDENTITY_LABELS]
    answered = [p for p in probes if p.refused_with is None and p.label in IDENTITY_LABELS]
    assert len(accepted) == 2 * len(sent_twice) + len(answered)

    # Settled: AT holds the closing evidence of every accepted message.
    deadline = time.monotonic() + SETTLED_WITHIN_S
    while not set(accepted) <= closed_message_ids(at):
        assert time.monotonic() < deadline, "accepted updates did not settle"
        time.sleep(0.2)

    for site in (at, be):
        evidence = audit_tables_text(site)
        assert evidence, f"{site.state} audited nothing"
        assert_no_canary(f"{site.state}'s audit tables", evidence)
        metrics = metrics_text(site)
        assert "pouch" in metrics
        assert_no_canary(f"{site.state}'s metrics", metrics)

    # Stopped, so that everything either gateway had to say is in its log.
    for state, process in deployment.gateways.items():
        assert process.terminate() == 0, f"gateway {state} did not stop cleanly"
        log = process.log_path.read_text(encoding="utf-8", errors="replace")
        assert f"pouch gateway {state} ready" in log
        assert_no_canary(f"{state}'s log {process.log_path}", log)
