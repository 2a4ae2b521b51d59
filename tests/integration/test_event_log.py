"""An operator follows each exchange through the JSON event lines of both gateways.

AT and BE run as ``pouch serve --log-format json`` processes, each with a reference
registry behind mutual TLS. AT's callers send, each under its own ``x-request-id``: a
civil-record update, an identity confirmation, a representation request and a
refused update. Once all has settled, both gateways stop, and their logs are read:

* on AT, the requesting side, each stage of each exchange is one event line carrying
  the caller's request id, later stages (sent, receipted) included;
* on BE, each stage of the update is one line under its message id;
* the request id comes back to the caller in the response metadata.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from pouch.v1 import common_pb2, identity_pb2
from pouch_devtools.demo.agreements import IDENTITY_PURPOSES
from pouch_devtools.demo.deployment import (
    GatewayProcess,
    RegistryProcess,
    Site,
    agreement_id_for,
    prepare_sites,
)
from tests.integration.case_fixtures import Consulate
from tests.integration.exchange_fixtures import (
    FAST_DELIVERY,
    TIMEOUT_S,
    LocalCaller,
    death_update,
    submission,
)

AT_BE = agreement_id_for("AT", "BE")
SETTLED_WITHIN_S = 20.0


@dataclass(frozen=True)
class Deployment:
    sites: dict[str, Site]
    gateways: dict[str, GatewayProcess]


@pytest.fixture
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("event-log")
    sites = prepare_sites(
        root, ["AT", "BE"], now=datetime.now(UTC), agreements=[("AT", "BE")], delivery=FAST_DELIVERY
    )
    gateways = {
        state: GatewayProcess(site, serve_options=["--log-format", "json"])
        for state, site in sites.items()
    }
    with contextlib.ExitStack() as stack:
        for site in sites.values():
            registry = RegistryProcess(site)
            stack.callback(registry.stop)
            registry.start()
        for process in gateways.values():
            stack.callback(process.kill)
            process.start()
        yield Deployment(sites=sites, gateways=gateways)


def traced(caller: LocalCaller, request_id: str) -> tuple[tuple[str, str], ...]:
    return (*caller.metadata, ("x-request-id", request_id))


class TracedConsulate(Consulate):
    """A consulate whose every call carries one request id."""

    def __init__(self, site: Site, request_id: str) -> None:
        super().__init__(site)
        self.request_id = request_id

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (*super().metadata, ("x-request-id", self.request_id))


def events(log_path: Path) -> list[dict[str, Any]]:
    """The event lines of a log; every line the JSON formatter wrote is an object."""
    found = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("{"):
            continue  # the process's own start and stop lines on stdout
        record = json.loads(line)
        if "event" in record:
            found.append(record)
    return found


def stages(lines: list[dict[str, Any]], **match: str) -> Counter[str]:
    return Counter(
        line["event"] for line in lines if all(line.get(k) == v for k, v in match.items())
    )


def test_each_stage_is_one_event_line_under_the_callers_request_id(
    deployment: Deployment,
) -> None:
    at, be = deployment.sites["AT"], deployment.sites["BE"]
    ids = {name: f"req-{name}-{uuid.uuid4().hex[:12]}" for name in ("civil", "identity", "case")}
    ids["refusal"] = f"req-refusal-{uuid.uuid4().hex[:12]}"
    with LocalCaller(at, ["civil:submit", "identity:query"]) as caller:
        update = submission(death_update(date.today()), agreement_id=AT_BE, recipient_state="BE")
        answer, call = caller.civil.SubmitUpdate.with_call(
            update, metadata=traced(caller, ids["civil"]), timeout=TIMEOUT_S
        )
        echoed = dict(call.trailing_metadata() or ()) | dict(call.initial_metadata() or ())
        assert echoed.get("x-request-id") == ids["civil"]
        civil_id = answer.message_id
        final = caller.wait_until_final(civil_id, within_s=SETTLED_WITHIN_S)
        # The reference registry knows nobody of that name: its decision is a rejection.
        assert final.state == common_pb2.DELIVERY_STATE_REJECTED

        claim = identity_pb2.IdentityClaim(
            document_type=identity_pb2.DOCUMENT_TYPE_PASSPORT,
            document_number="EV1234567",
            date_of_birth=common_pb2.CivilDate(year=1970, month=2, day=3),
            nationality="BE",
        )
        claim.name.given_names.append("Lea")
        claim.name.family_names.append("Peeters")
        confirmed = caller.identity.ConfirmIdentity(
            identity_pb2.ConfirmIdentityRequest(
                partner_state="BE", agreement_id=AT_BE, purpose=IDENTITY_PURPOSES[0], claim=claim
            ),
            metadata=traced(caller, ids["identity"]),
            timeout=TIMEOUT_S,
        )
        identity_id = confirmed.message_id

        refused = submission(
            death_update(date.today()), agreement_id=AT_BE, recipient_state="BE", purpose="gossip"
        )
        with pytest.raises(grpc.RpcError):
            caller.civil.SubmitUpdate(
                refused, metadata=traced(caller, ids["refusal"]), timeout=TIMEOUT_S
            )

    with TracedConsulate(at, ids["case"]) as consulate:
        case = consulate.request("BE", AT_BE)
    with Consulate(be) as partner:
        partner.wait_for(case.case_id, lambda c: c.case_id == case.case_id)
    time.sleep(1.0)  # the case message's delivery receipt reaches AT's log

    for state, process in deployment.gateways.items():
        assert process.terminate() == 0, f"gateway {state} did not stop cleanly"
    at_lines = events(deployment.gateways["AT"].log_path)
    be_lines = events(deployment.gateways["BE"].log_path)

    # The requesting side: every stage once, under the caller's request id.
    assert stages(at_lines, request_id=ids["civil"]) == Counter(
        {"submitted": 1, "sent": 1, "receipted": 1}
    )
    assert {line["message_id"] for line in at_lines if line.get("request_id") == ids["civil"]} == {
        civil_id
    }
    assert stages(at_lines, request_id=ids["identity"]) == Counter({"submitted": 1, "answered": 1})
    assert {
        line["message_id"] for line in at_lines if line.get("request_id") == ids["identity"]
    } == {identity_id}
    assert stages(at_lines, request_id=ids["refusal"]) == Counter({"refused": 1})
    (refusal,) = [line for line in at_lines if line.get("request_id") == ids["refusal"]]
    assert refusal["reason"] == "PURPOSE_NOT_AGREED"
    case_stages = stages(at_lines, request_id=ids["case"])
    assert case_stages["case_event"] == 1 and case_stages["sent"] == 1, case_stages

    # The receiving side: each stage of the update once, under its message id.
    assert stages(be_lines, message_id=civil_id) == Counter(
        {"delivered": 1, "handed_over": 1, "rejected": 1, "acknowledged": 1}
    )
