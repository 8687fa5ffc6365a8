"""Every Triton launch configuration compiles for the H100 (sm_90) on the CPU, within the shared
memory limit. Runs in a subprocess without TRITON_INTERPRET (the interpreter replaces kernels)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = """
import sys
from tensor_utils_dev.aot import H100_MAX_SHARED_BYTES, compile_for_h100
from megalodon_model.ops.cema.triton import aot_launches as cema_launches
from megalodon_model.ops.timestep_norm.triton import aot_launches as norm_launches
subset = sys.argv[1] == "subset"
launches = list(cema_launches()) + list(norm_launches())
if subset:  # bf16 at the model defaults (N=16; 64 features per group, no padding mask)
    launches = [l for l in launches if l.label.endswith("bf16-N16") or l.label.startswith(
        ("chunk_carry-N16", "bwd_chunk_carry-N16")) or l.label.endswith("bf16-F64-mask=False")]
for launch in launches:
    c = compile_for_h100(launch)
    assert c.shared_bytes <= H100_MAX_SHARED_BYTES, (launch.label, c.shared_bytes)
print(len(launches), "launches compiled")
"""


def _compile(which: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, which], env=env, capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_default_configurations_compile_for_h100():
    assert "launches compiled" in _compile("subset")


@pytest.mark.slow
def test_every_configuration_compiles_for_h100():
    assert "launches compiled" in _compile("all")
