"""When to try again: exponential backoff with jitter, capped, never past the deadline.

Every loop that retries (delivery, hand-over to the registry, acknowledgements, case
events) takes its :class:`Backoff` from ``[delivery]`` through :func:`delivery_backoff`,
so one set of settings bounds them all: after ``n`` failures the next try waits at least
``min(maximum, initial * multiplier ** (n - 1)) * (1 - jitter)``, and no try is made
after the deadline."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.config import DeliverySection


@dataclass(frozen=True)
class Backoff:
    initial_s: float
    maximum_s: float
    multiplier: float
    jitter_fraction: float

    def delay_s(self, attempts: int, rng: random.Random) -> float:
        """The wait after the ``attempts``-th failed attempt (1 for the first)."""
        base = min(self.maximum_s, self._grown(max(0, attempts - 1)))
        spread = base * self.jitter_fraction
        return max(0.0, base + rng.uniform(-spread, spread))

    def _grown(self, steps: int) -> float:
        """``initial * multiplier ** steps``, once past ``maximum`` no further: a message
        retried for days counts thousands of attempts, and a float power that large
        overflows."""
        if self.multiplier <= 1 or self.initial_s <= 0:
            return self.initial_s
        if self.initial_s >= self.maximum_s:
            return self.maximum_s
        to_maximum = math.ceil(math.log(self.maximum_s / self.initial_s, self.multiplier))
        return self.initial_s * self.multiplier ** min(steps, to_maximum)

    def next_attempt(
        self, attempts: int, now: datetime, deadline: datetime, rng: random.Random
    ) -> datetime | None:
        """When to retry, or None when the next try would fall after the deadline."""
        when = now + timedelta(seconds=self.delay_s(attempts, rng))
        return None if when > deadline else when


def delivery_backoff(settings: DeliverySection) -> Backoff:
    """The backoff ``[delivery]`` configures, for every loop that retries."""
    return Backoff(
        initial_s=settings.backoff_initial_seconds,
        maximum_s=settings.backoff_max_seconds,
        multiplier=settings.backoff_multiplier,
        jitter_fraction=settings.jitter_fraction,
    )
