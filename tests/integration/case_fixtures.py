"""A consulate on a gateway's local API, for the representation-case tests.

Each caller opens its own TLS channel with the site's operator certificate and mints a
fresh token per call; nothing is shared between tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from gateway.connect import bearer
from pouch.v1 import common_pb2, representation_pb2, representation_pb2_grpc
from pouch_devtools.demo.agreements import REPRESENTATION_PURPOSE
from pouch_devtools.demo.deployment import Site
from tests.integration.conftest import channel_to
from tests.integration.exchange_fixtures import TIMEOUT_S, unique_reference

T = TypeVar("T")
BOTH_SCOPES = ("representation:request", "representation:act")


class Consulate:
    def __init__(self, site: Site, scopes: Sequence[str] = BOTH_SCOPES) -> None:
        self._site = site
        self._scopes = tuple(scopes)
        self._channel = channel_to(
            site.local_target,
            trusted_ca=site.pki.ca_cert.read_bytes(),
            chain=site.pki.client_cert("operator").read_bytes(),
            key=site.pki.client_key("operator").read_bytes(),
        )
        self.stub = representation_pb2_grpc.RepresentationServiceStub(self._channel)

    def __enter__(self) -> Consulate:
        return self

    def __exit__(self, *exc: object) -> None:
        self._channel.close()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer(self._site.token(self._scopes, now=time.time()))

    def request(
        self, representing: str, agreement_id: str, **fields: object
    ) -> representation_pb2.RepresentationCase:
        person = representation_pb2.AssistedPerson(
            nationality=self._site.state,
            location=common_pb2.Place(country_code="TH", locality="Chiang-Mai-Old-Town"),
            contact="+66 81 555 0199",
        )
        person.name.given_names.append("Mariam")
        person.name.family_names.append("Haidari")
        person.date_of_birth.CopyFrom(common_pb2.CivilDate(year=1984, month=3, day=9))
        request = representation_pb2.RequestAssistanceRequest(
            client_reference=unique_reference("case"),
            representing_state=representing,
            mission_country="TH",
            agreement_id=agreement_id,
            purpose=REPRESENTATION_PURPOSE,
            kind=representation_pb2.ASSISTANCE_KIND_LOST_DOCUMENTS,
            person=person,
            summary="Passport stolen; needs an emergency travel document.",
        )
        for name, value in fields.items():
            if name == "person":
                request.person.CopyFrom(value)  # type: ignore[arg-type]
            elif name == "legal_basis":
                request.legal_basis.CopyFrom(value)  # type: ignore[arg-type]
            else:
                setattr(request, name, value)
        return self.stub.RequestAssistance(request, metadata=self.metadata, timeout=TIMEOUT_S).case

    def move(
        self, case_id: str, target: representation_pb2.CaseState.ValueType, reason: str = ""
    ) -> representation_pb2.RepresentationCase:
        request = representation_pb2.TransitionCaseRequest(
            case_id=case_id, target_state=target, reason=reason
        )
        return self.stub.TransitionCase(request, metadata=self.metadata, timeout=TIMEOUT_S).case

    def get(self, case_id: str) -> representation_pb2.RepresentationCase:
        request = representation_pb2.GetCaseRequest(case_id=case_id)
        return self.stub.GetCase(request, metadata=self.metadata, timeout=TIMEOUT_S).case

    def wait_for(
        self,
        case_id: str,
        until: Callable[[representation_pb2.RepresentationCase], bool],
        *,
        within_s: float = 15.0,
    ) -> representation_pb2.RepresentationCase:
        """The case once ``until`` holds for it (it may not be known here yet at first)."""
        deadline = time.monotonic() + within_s
        while True:
            try:
                case = self.get(case_id)
                if until(case):
                    return case
            except Exception:  # not delivered yet: NOT_FOUND
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"case did not reach the expected condition within {within_s}s"
                )
            time.sleep(0.05)
