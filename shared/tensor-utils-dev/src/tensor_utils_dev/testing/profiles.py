"""Hypothesis profiles shared by every test suite: ci (bounded), dev (quick), thorough (long)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILES = ("ci", "dev", "thorough")


def register_profiles() -> str:
    """Register the profiles and load the one named by ``HYPOTHESIS_PROFILE`` (default: ci if CI is set, else dev)."""
    # First calls JIT-compile kernels or warm caches: a wall-clock deadline would be flaky.
    settings.register_profile(
        "ci",
        max_examples=30,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile("dev", max_examples=15, deadline=None)
    settings.register_profile(
        "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    name = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    if name not in PROFILES:
        raise ValueError(f"HYPOTHESIS_PROFILE={name!r}: choose one of {', '.join(PROFILES)}")
    settings.load_profile(name)
    return name
