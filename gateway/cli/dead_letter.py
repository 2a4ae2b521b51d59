"""``pouch dead-letter resend MESSAGE_ID``: put one of our dead letters back in the
outbox (``GatewayService.ResendDeadLetter``, scope ``admin``).

The gateway decides: only our own message given up at the delivery stage, its payload
still held, never signed for by the partner, under an agreement in force, goes again,
with its message id (the partner's inbox takes it at most once) and a fresh delivery
deadline. The command prints the message id and its status (``pending``) and exits 0;
a refusal prints the status and reason code (``NOT_FOUND``, ``NOT_DEAD_LETTER``,
``NOT_RESENDABLE``, ``ALREADY_DELIVERED``, ``PAYLOAD_PURGED``, or the agreement's) and
exits 1. ``pouch status`` lists the dead letters; ``pouch civil status MESSAGE_ID``
follows an update once resent.

Usage::

    pouch dead-letter resend 405fccdb-bca2-4492-bf20-03cc0e6c4aa2
"""

from __future__ import annotations

import click

from gateway.cli.client import GatewayClient, gateway_options
from pouch.v1 import gateway_pb2, gateway_pb2_grpc


@click.group(name="dead-letter")
def dead_letter() -> None:
    """Messages given up on: put one of ours back in the outbox."""


@dead_letter.command(name="resend")
@gateway_options
@click.argument("message_id")
def resend(client: GatewayClient, message_id: str) -> None:
    """Send a dead letter of ours again (admin): same message id, fresh deadline."""
    answer = client.unary(
        lambda ch: gateway_pb2_grpc.GatewayServiceStub(ch).ResendDeadLetter,
        gateway_pb2.ResendDeadLetterRequest(message_id=message_id),
    )
    client.emit(answer, lambda: f"{answer.message_id}: {answer.status}")
