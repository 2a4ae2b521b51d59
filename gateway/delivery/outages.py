"""A dependency that fails (a partner gateway, the registry): told in few lines.

A loop that retries reports each call to a dependency to its :class:`DependencyWatch`.
The watch promises, whatever the rate of calls:

* one WARNING line (``dependency_failing``) when calls start failing, with the reason
  code and the ids of the messages that waited on them;
* at most one summary line a ``summary_interval_s`` (a minute) while they keep failing
  (``dependency_still_failing``), with the failed tries since the start (``count``: one
  per message a failed call carried) and the ids of the messages waiting;
* one INFO line when a call succeeds again (``dependency_recovered``), with how long
  the failure lasted, how many tries failed and which messages had waited.

Lines carry reason codes, counts and message ids only (:mod:`gateway.events`); the
dependency's own error text never reaches them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gateway.events import Event, emit

SUMMARY_INTERVAL_S = 60.0


class DependencyWatch:
    """The failing or healthy state of one dependency, as one loop sees it.

    ``dependency`` names it in the lines (``registry``, ``partner``), ``partner`` the
    partner state where it is one, ``activity`` (``handover``, ``acknowledgement``,
    ``delivery``, ``case_event``) what was being done.
    """

    def __init__(
        self,
        dependency: str,
        *,
        activity: str,
        partner: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        summary_interval_s: float = SUMMARY_INTERVAL_S,
    ) -> None:
        self._dependency = dependency
        self._activity = activity
        self._partner = partner
        self._clock = clock
        self._interval = summary_interval_s
        self._since: float | None = None
        self._last_line = 0.0
        self._failures = 0
        self._waiting: set[str] = set()
        self.lines = 0
        """How many lines this watch wrote: what a test holds to its bound."""

    @property
    def failing(self) -> bool:
        return self._since is not None

    def failed(self, reason: str, message_ids: Sequence[str]) -> None:
        """A call for ``message_ids`` failed with ``reason`` (a reason code): one failed
        try for each of them (at least one, for a call that carried none)."""
        now = self._clock()
        self._failures += max(1, len(message_ids))
        self._waiting.update(message_ids)
        if self._since is None:
            self._since = self._last_line = now
            self._line(Event.DEPENDENCY_FAILING, reason, 0.0)
        elif now - self._last_line >= self._interval:
            self._last_line = now
            self._line(Event.DEPENDENCY_STILL_FAILING, reason, now - self._since)

    def succeeded(self) -> None:
        """A call succeeded: the end of a failure, if one was under way."""
        if self._since is None:
            return
        self._line(Event.DEPENDENCY_RECOVERED, None, self._clock() - self._since)
        self._since = None
        self._failures = 0
        self._waiting = set()

    def _line(self, event: Event, reason: str | None, seconds: float) -> None:
        self.lines += 1
        emit(
            event,
            dependency=self._dependency,
            partner=self._partner,
            kind=self._activity,
            reason=reason,
            count=self._failures,
            seconds=seconds,
            message_ids=self._waiting,
        )
