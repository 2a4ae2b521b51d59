"""A partner's delivery is handed to the registry at once, not at the next poll.

Both gateways here poll for work every 30 seconds. AT's dispatcher is woken by the
submission, and BE's inbound loop by the delivery it stores, so the update is applied
by BE's registry and its signed acknowledgement recorded at AT within seconds. Were
BE's loop to wait for its next poll, the update would still be pending.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from pouch.v1 import common_pb2
from pouch_devtools.demo.deployment import agreement_id_for, prepare_sites
from tests.integration.exchange_fixtures import (
    FAST_DELIVERY,
    LocalCaller,
    death_update,
    running_gateways,
    submission,
)

POLL_S = 30.0
WITHIN_S = 10.0  # a third of the poll: only a wake-up gets the update through in time


def test_update_is_applied_and_acknowledged_long_before_either_gateway_polls(
    tmp_path: Path,
) -> None:
    sites = prepare_sites(
        tmp_path,
        ["AT", "BE"],
        now=datetime.now(UTC),
        agreements=[("AT", "BE")],
        delivery={**FAST_DELIVERY, "poll_interval_seconds": POLL_S},
    )
    with (
        running_gateways(sites, ["AT", "BE"], spool_root=tmp_path / "spool") as running,
        LocalCaller(sites["AT"], ["civil:submit"]) as clerk,
    ):
        time.sleep(1.0)  # both loops have made their first round and are pausing
        request = submission(
            death_update(datetime.now(UTC).date()),
            agreement_id=agreement_id_for("AT", "BE"),
            recipient_state="BE",
        )
        message_id = clerk.submit(request)
        status = clerk.wait_until_final(message_id, within_s=WITHIN_S)
        handed_over = running.spool_text("BE", message_id)

    assert status.state == common_pb2.DELIVERY_STATE_APPLIED, status
    assert handed_over is not None
