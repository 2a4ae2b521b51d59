"""How many inputs each fuzz target tries: a bounded budget, or a long run on request.

The normal suite gives every target a small budget (the whole fuzz suite takes a few
minutes on a 2-core machine). ``pytest --fuzz-long`` multiplies every budget by
:data:`LONG_FACTOR` for a long run; ``--fuzz-long-factor N`` sets another multiplier.
Targets read their budget through :func:`examples` at import time, which the suite's
``pytest_configure`` precedes.

    @settings(max_examples=examples(300))
    @given(st.binary())
    def test_...(data: bytes) -> None: ...
"""

from __future__ import annotations

LONG_FACTOR = 200
_factor = 1


def set_long_run(factor: int) -> None:
    global _factor
    _factor = max(1, factor)


def long_run() -> bool:
    return _factor > 1


def examples(default: int) -> int:
    """The budget of a target whose normal budget is ``default`` inputs."""
    return default * _factor
