"""Shared pytest set-up for the unit tests (no root, no network, no sleeps).

Hypothesis profiles: "default" has no per-example deadline (shared CI machines stall, and a
deadline flake says nothing about the code); "ci" also derandomizes so a failure reproduces;
"thorough" runs more examples locally. Pick one with HYPOTHESIS_PROFILE=name.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None)
settings.register_profile(
    "ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", deadline=None, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
