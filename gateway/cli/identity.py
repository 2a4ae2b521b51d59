"""``pouch identity confirm``: ask a partner state to confirm an identity, through this
state's gateway (``IdentityService``, scope ``identity:query``).

The claim is what the requester holds: from options (document type and number, names,
date of birth, sex, nationality), from an ICAO 9303 MRZ (``--mrz-file``, the lines as
printed; its first letter gives the document type), or whole from a file (``--file``,
an ``IdentityClaim`` in protobuf JSON); options given beside a file or an MRZ complete
or replace its fields. The answer is
hit/no-hit with per-field flags and the document's status: the partner never returns a
value the requester did not send, and nothing of the claim is printed back.

Usage::

    pouch identity confirm --partner BE --agreement at-be-civil \\
        --purpose emergency_travel_document --mrz-file passport.mrz
"""

from __future__ import annotations

import sys

import click

from gateway.cli.client import (
    GatewayClient,
    enum_choice,
    enum_label,
    fields_table,
    gateway_options,
    read_message,
    table,
)
from pouch.v1 import common_pb2, identity_pb2, identity_pb2_grpc

_DOCUMENT = "DOCUMENT_TYPE_"
_MRZ_DOCUMENT = {
    "P": identity_pb2.DOCUMENT_TYPE_PASSPORT,
    "I": identity_pb2.DOCUMENT_TYPE_IDENTITY_CARD,
}
_SEX = {"f": common_pb2.SEX_FEMALE, "m": common_pb2.SEX_MALE, "x": common_pb2.SEX_OTHER}


@click.group(name="identity")
def identity() -> None:
    """Identity confirmations: hit/no-hit, never a recorded value."""


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _date(text: str) -> common_pb2.CivilDate:
    """YYYY, YYYY-MM or YYYY-MM-DD, as far as the holder knows it."""
    parts = text.split("-")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if not 1 <= len(numbers) <= 3:
        raise click.BadParameter(
            f"{text!r}: write YYYY-MM-DD (or YYYY-MM, YYYY)", param_hint="--date-of-birth"
        )
    numbers += [0] * (3 - len(numbers))
    return common_pb2.CivilDate(year=numbers[0], month=numbers[1], day=numbers[2])


def _mrz(path: str) -> str:
    try:
        text = sys.stdin.read() if path == "-" else _read(path)
    except (OSError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"cannot read {path}: {e}", param_hint="--mrz-file") from e
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise click.BadParameter(f"{path} holds no MRZ line", param_hint="--mrz-file")
    return "\n".join(lines)


def _read(path: str) -> str:
    with open(path, encoding="ascii") as handle:  # noqa: PTH123 (a path or '-')
        return handle.read()


@identity.command(name="confirm")
@gateway_options
@click.option("--partner", required=True, help="The state asked to confirm, e.g. BE.")
@click.option("--agreement", "agreement_id", required=True, help="The agreement's id.")
@click.option("--purpose", required=True, help="The declared purpose, as the agreement names it.")
@click.option(
    "--file",
    "claim_file",
    metavar="FILE",
    help="The claim, an IdentityClaim in protobuf JSON ('-' reads standard input).",
)
@click.option(
    "--mrz-file",
    metavar="FILE",
    help="The document's machine-readable zone, its lines as printed ('-': standard input).",
)
@click.option("--document-type", type=enum_choice(identity_pb2.DocumentType.keys(), _DOCUMENT))
@click.option("--document-number")
@click.option("--given-name", "given_names", multiple=True, help="Repeat for each given name.")
@click.option("--family-name", "family_names", multiple=True, help="Repeat for each.")
@click.option("--date-of-birth", metavar="YYYY-MM-DD")
@click.option("--sex", type=click.Choice(sorted(_SEX), case_sensitive=False))
@click.option("--nationality", help="ISO 3166-1 alpha-2 code.")
@click.option("--case", "case_id", default="", help="The representation case this is for.")
@click.option("--legal-basis", default=None, help="The provision relied on, for special data.")
@click.option("--consent", is_flag=True, help="The person's explicit consent is recorded.")
def confirm(
    client: GatewayClient,
    partner: str,
    agreement_id: str,
    purpose: str,
    claim_file: str | None,
    mrz_file: str | None,
    document_type: str | None,
    document_number: str | None,
    given_names: tuple[str, ...],
    family_names: tuple[str, ...],
    date_of_birth: str | None,
    sex: str | None,
    nationality: str | None,
    case_id: str,
    legal_basis: str | None,
    consent: bool,
) -> None:
    """Ask PARTNER whether the claimed identity matches its record."""
    claim = (
        identity_pb2.IdentityClaim()
        if claim_file is None
        else read_message(claim_file, identity_pb2.IdentityClaim, "--file")
    )
    if mrz_file is not None:
        claim.mrz = _mrz(mrz_file)
        # ICAO 9303: the first letter of the zone names the kind of document.
        claim.document_type = _MRZ_DOCUMENT.get(claim.mrz[:1], claim.document_type)
    if document_type is not None:
        claim.document_type = identity_pb2.DocumentType.Value(_DOCUMENT + document_type.upper())
    if document_number is not None:
        claim.document_number = document_number
    if given_names:
        claim.name.ClearField("given_names")
        claim.name.given_names.extend(given_names)
    if family_names:
        claim.name.ClearField("family_names")
        claim.name.family_names.extend(family_names)
    if date_of_birth is not None:
        claim.date_of_birth.CopyFrom(_date(date_of_birth))
    if sex is not None:
        claim.sex = _SEX[sex.lower()]
    if nationality is not None:
        claim.nationality = nationality
    if claim.ByteSize() == 0:
        raise click.UsageError("no claim: give --mrz-file, --file or the document's fields")
    request = identity_pb2.ConfirmIdentityRequest(
        partner_state=partner,
        agreement_id=agreement_id,
        purpose=purpose,
        claim=claim,
        case_id=case_id,
    )
    if legal_basis is not None or consent:
        request.legal_basis.CopyFrom(
            common_pb2.LegalBasis(reference=legal_basis or "", consent_recorded=consent)
        )
    answer = client.unary(
        lambda ch: identity_pb2_grpc.IdentityServiceStub(ch).ConfirmIdentity, request
    )
    client.emit(
        answer,
        lambda: [
            fields_table(
                "identity confirmation",
                [
                    ("message id", answer.message_id),
                    (
                        "result",
                        enum_label(identity_pb2.MatchResult.Name(answer.result), "MATCH_RESULT_"),
                    ),
                    (
                        "document",
                        enum_label(
                            identity_pb2.DocumentStatus.Name(answer.document_status),
                            "DOCUMENT_STATUS_",
                        ),
                    ),
                ],
            ),
            *(
                [
                    table(
                        None,
                        ["field", "matched"],
                        [(f.field, _yes(f.matched)) for f in answer.fields],
                    )
                ]
                if answer.fields
                else []
            ),
        ],
    )
