"""Shared settings for the test suite."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# No deadlines: the machines are shared and noisy, and speed is measured by
# benchmarks, never by timed assertions. Under CI the examples are derived
# from the test names (derandomize) so that a red run can be reproduced.
settings.register_profile(
    "default",
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True, max_examples=100)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "default")
