"""What ``pouch demo`` prints: each scenario's calls as steps, and its evidence as tables.

Steps are judged by :attr:`Step.as_expected`; a step that did not behave as expected
is a red row, and the demo's exit status says whether any did. Tables show paths of
fields and flags, never a document number or other stored value.
"""

from __future__ import annotations

from rich.table import Table

from pouch_devtools.demo.audit_scenario import AuditOutcome
from pouch_devtools.demo.case_copies import describe_claims
from pouch_devtools.demo.civil_scenario import CivilOutcome
from pouch_devtools.demo.identity_scenario import IdentityOutcome, describe_flags
from pouch_devtools.demo.representation_scenario import RepresentationOutcome
from pouch_devtools.demo.scenario import Step

TRANSFORMED = "transformed (masked, hashed or generalised)"


def steps_table(steps: list[Step]) -> Table:
    table = Table(title="Pouch demo: what crossed the wire")
    for column in ("caller", "called", "call", "expected", "outcome"):
        table.add_column(column)
    for step in steps:
        style = "green" if step.as_expected else "bold red"
        table.add_row(
            step.caller, step.target, step.call, step.expected, f"[{style}]{step.outcome}"
        )
    return table


def civil_steps(outcome: CivilOutcome, a: str, b: str) -> list[Step]:
    return [
        Step(
            f"{a} civil registry",
            f"{a} local API -> {b}",
            "CivilRecordService/SubmitUpdate (birth)",
            "APPLIED",
            f"{outcome.state}{': ' + outcome.reason_code if outcome.reason_code else ''}",
        ),
        Step(
            f"{a} civil registry",
            f"{a} local API",
            "SubmitUpdate, purpose 'law_enforcement'",
            "PERMISSION_DENIED",
            outcome.refused_purpose,
        ),
    ]


def civil_tables(outcome: CivilOutcome, a: str, b: str) -> list[Table]:
    policy = Table(title=f"What the agreement let cross ({a} -> {b}, a birth: minors' rules)")
    policy.add_column("field path")
    policy.add_column("what the policy did")
    for path in outcome.removed:
        policy.add_row(path, "removed")
    for path in outcome.transformed:
        policy.add_row(path, TRANSFORMED)
    receipts = Table(title="Evidence of the civil-record update")
    receipts.add_column("what")
    receipts.add_column("value")
    receipts.add_row("message id", outcome.message_id)
    receipts.add_row("delivery receipt", outcome.delivery_receipt)
    receipts.add_row("registry's decision", outcome.acknowledgement)
    receipts.add_row(f"rows in {b}'s registry for it", str(outcome.registry_rows))
    return [policy, receipts]


def identity_steps(outcome: IdentityOutcome, a: str, b: str) -> list[Step]:
    steps = [
        Step(
            f"{a} consulate (identity:query)",
            f"{a} local API -> {b}",
            f"IdentityService/ConfirmIdentity: {c.label}",
            c.expected,
            c.outcome if not c.document_status else f"{c.outcome}, document {c.document_status}",
        )
        for c in outcome.confirmations
    ]
    steps.append(
        Step(
            f"{a} consulate (identity:query)",
            f"{a} local API",
            "ConfirmIdentity, purpose 'law_enforcement'",
            "PERMISSION_DENIED",
            outcome.refused_purpose,
        )
    )
    return steps


def identity_table(outcome: IdentityOutcome, a: str, b: str) -> Table:
    table = Table(
        title=f"Identity confirmations {a} -> {b}: only flags come back, the number crosses "
        "as a keyed hash"
    )
    for column in ("claim", "message id", "answer", "per-field flags", "policy on the way out"):
        table.add_column(column)
    for c in outcome.confirmations:
        effect = [f"{path} removed" for path in c.removed]
        effect += [f"{path} transformed" for path in c.transformed]
        style = "green" if c.outcome == c.expected else "bold red"
        table.add_row(
            c.claimed,
            c.message_id,
            f"[{style}]{c.outcome}",
            describe_flags(c.flags),
            ", ".join(effect) or "-",
        )
    return table


def representation_steps(outcome: RepresentationOutcome) -> list[Step]:
    steps = [
        Step(action.actor, action.target, action.call, action.expected, action.outcome)
        for action in outcome.actions
    ]
    states = ", ".join(
        f"{view.case_state} at {view.state} (costs {describe_claims(view.cost_claims)})"
        for view in outcome.views
    )
    steps.append(
        Step(
            " and ".join(view.state for view in outcome.views) or "both consulates",
            "both local APIs",
            "GetCase on both gateways",
            "in step",
            f"in step: {states}"
            if outcome.in_step
            else "NOT in step: " + "; ".join(outcome.differences),
        )
    )
    return steps


def representation_table(outcome: RepresentationOutcome, requester: str) -> Table:
    effect = [f"{path} removed" for path in outcome.removed]
    effect += [f"{path} transformed" for path in outcome.transformed]
    table = Table(
        title=f"Representation case {outcome.case_id or '(not created)'} on both gateways",
        caption=f"policy on {requester}'s case messages: "
        + (", ".join(effect) or "every field sent is allowed by the agreement"),
    )
    for column in (
        "gateway",
        "case state",
        "notes",
        "cost claims",
        "events its consulate received",
    ):
        table.add_column(column)
    events = dict(outcome.events)
    for view in outcome.views:
        style = "green" if outcome.in_step else "bold red"
        table.add_row(
            view.state,
            f"[{style}]{view.case_state}",
            str(view.notes),
            describe_claims(view.cost_claims),
            ", ".join(events.get(view.state, ())) or "-",
        )
    return table


def audit_steps(outcome: AuditOutcome, a: str, b: str) -> list[Step]:
    verdict = "verified" if outcome.verified else "FAILED: " + "; ".join(outcome.failures)
    return [
        Step(
            f"{a} auditor (audit:read)",
            f"{a} local API",
            "AuditService/ExportBundle, verified offline",
            "verified",
            f"{verdict} ({outcome.bundle_bytes} bytes, tree size {outcome.tree_size}, "
            f"{'cosigned by ' + outcome.cosigned_by if outcome.published else 'not published'})",
        )
    ]


def audit_table(outcome: AuditOutcome, a: str) -> Table:
    table = Table(title=f"{a}'s audit log (decision records: no personal data)")
    for column in (
        "index",
        "event",
        "exchange",
        "decision",
        "reason code",
        "fields removed / transformed",
    ):
        table.add_column(column)
    for entry in outcome.entries:
        table.add_row(*entry)
    return table


def evidence_table(outcome: AuditOutcome, a: str, b: str) -> Table:
    """The signatures on ``a``'s published checkpoint, and the TLS groups seen."""
    title = (
        f"{a}'s published checkpoint {outcome.tree_size}: its signatures, checked with pinned keys"
    )
    groups = ", ".join(group for _, group in outcome.key_exchange) or "none counted"
    table = Table(title=title, caption=f"TLS key exchange {a} to {b} (seen by {b}): {groups}")
    for column in ("signed by", "role", "algorithm", "key ID", "verified"):
        table.add_column(column)
    for signer, role, algorithm, key_id, verified in outcome.signatures:
        style = "green" if verified == "yes" else "bold red"
        table.add_row(signer, role, algorithm, key_id, f"[{style}]{verified}")
    return table
