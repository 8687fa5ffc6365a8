"""pytest glue for every suite in the monorepo (loaded from the root conftest.py).

- ``gpu`` tests are skipped without CUDA; ``triton`` tests without CUDA unless
  ``TRITON_INTERPRET=1`` (CPU interpreter); ``slow`` tests unless ``--run-slow`` or ``-m slow``.
- Fixtures: ``device`` ("cuda" when available, else "cpu"), ``interpreting``.
- Hypothesis profiles from ``HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import pytest
import torch

from tensor_utils.ops import triton_available, triton_interpreting


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow (real model)")


def pytest_configure(config):
    try:
        from .profiles import register_profiles
    except ImportError:  # hypothesis is a test-only dependency
        return
    register_profiles()


def pytest_collection_modifyitems(config, items):
    cuda = torch.cuda.is_available()
    can_triton = triton_available() and (cuda or triton_interpreting())
    run_slow = config.getoption("--run-slow") or "slow" in (config.getoption("-m") or "")
    skips = {
        "gpu": (cuda, "needs a CUDA device"),
        "triton": (can_triton, "needs triton with CUDA, or TRITON_INTERPRET=1"),
        "slow": (run_slow, "slow: run with --run-slow or -m slow"),
    }
    for item in items:
        for marker, (ok, reason) in skips.items():
            if not ok and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="session")
def interpreting() -> bool:
    """True when Triton kernels run on the CPU interpreter (keep shapes small, no bf16 math)."""
    return triton_interpreting() and not torch.cuda.is_available()
