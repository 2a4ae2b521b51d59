"""Suite-wide settings: property tests have no per-example deadline.

The suite runs on a 2-core machine beside real gateway processes; timing an example
would make a correct property fail when the machine is busy.
"""

from hypothesis import HealthCheck, settings

settings.register_profile("pouch", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pouch")
