"""The delivery backoff grows to its maximum, stays there, and never passes the deadline."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from gateway.delivery.backoff import Backoff

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
STEADY = Backoff(initial_s=1.0, maximum_s=300.0, multiplier=2.0, jitter_fraction=0.0)


def test_the_wait_doubles_up_to_the_maximum() -> None:
    rng = random.Random(1)
    assert [STEADY.delay_s(n, rng) for n in range(1, 11)] == [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0,
    ]  # fmt: skip


@pytest.mark.parametrize("attempts", [1_100, 50_000, 10**9])
def test_a_message_retried_thousands_of_times_waits_the_maximum_without_overflow(
    attempts: int,
) -> None:
    # 2.0 ** 1100 overflows a float: a partner down for days must not stop the dispatcher.
    assert STEADY.delay_s(attempts, random.Random(1)) == 300.0
    jittered = Backoff(initial_s=0.01, maximum_s=0.05, multiplier=1.5, jitter_fraction=0.2)
    assert 0.04 <= jittered.delay_s(attempts, random.Random(2)) <= 0.06


def test_no_retry_is_scheduled_past_the_deadline() -> None:
    rng = random.Random(1)
    assert STEADY.next_attempt(3, NOW, NOW + timedelta(seconds=4), rng) == NOW + timedelta(
        seconds=4
    )
    assert STEADY.next_attempt(4, NOW, NOW + timedelta(seconds=4), rng) is None


def test_a_multiplier_of_one_keeps_the_initial_wait() -> None:
    flat = Backoff(initial_s=2.0, maximum_s=60.0, multiplier=1.0, jitter_fraction=0.0)
    assert flat.delay_s(10**6, random.Random(1)) == 2.0
