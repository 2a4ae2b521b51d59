"""Suite-wide settings: property tests have no per-example deadline; ``--fuzz-long``.

The suite runs on a 2-core machine beside real gateway processes; timing an example
would make a correct property fail when the machine is busy. The fuzz targets run on
a bounded budget unless ``--fuzz-long`` asks for a long run (see ``tests/fuzz_budget.py``).
"""

import pytest
from hypothesis import HealthCheck, settings

from tests import fuzz_budget

settings.register_profile("pouch", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pouch")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-long",
        action="store_true",
        default=False,
        help=f"run every fuzz target on {fuzz_budget.LONG_FACTOR} times its normal budget",
    )
    parser.addoption(
        "--fuzz-long-factor",
        type=int,
        default=fuzz_budget.LONG_FACTOR,
        help="the multiplier of --fuzz-long",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--fuzz-long"):
        fuzz_budget.set_long_run(config.getoption("--fuzz-long-factor"))
