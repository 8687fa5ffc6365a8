"""Property suite over every package's ops: the kernel agrees with the reference.

Each `ops/<op>/__init__.py` publishes its dispatched functions and `CASES = {op_name: strategy}`
(hypothesis strategies drawing small `(args, kwargs)`). For every op that has a Triton kernel,
this draws cases and checks, under `TRITON_INTERPRET=1` on the CPU (or on CUDA when present):
outputs fully written (allocations NaN-poisoned) and equal to the reference within the output
dtype's tolerance. A kernel without CASES fails: no op escapes the check.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tensor_utils.dispatch import triton_available
from tensor_utils.testing import assert_close, poison_allocations
from tools.workspace import members


def discover() -> list[tuple[str, object, object]]:
    found = []
    for m in members():
        ops = m.src / m.module / "ops"
        if not ops.is_dir():
            continue
        for folder in sorted(p for p in ops.iterdir() if (p / "__init__.py").exists()):
            module = importlib.import_module(f"{m.module}.ops.{folder.name}")
            cases = getattr(module, "CASES", {})
            for value in vars(module).values():
                if callable(value) and hasattr(value, "op_name") and value.triton is not None:
                    found.append((f"{m.name}:{value.op_name}", value, cases.get(value.op_name)))
    return found


OPS = discover()
needs_kernels = pytest.mark.skipif(
    not triton_available()
    or not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"),
    reason="needs triton with CUDA or TRITON_INTERPRET=1",
)


def flatten(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in flatten(item)]
    return []


@pytest.mark.parametrize("name,op,cases", OPS, ids=[name for name, _, _ in OPS])
def test_every_kernel_publishes_cases(name, op, cases):
    assert isinstance(cases, st.SearchStrategy), f"{name} has a Triton kernel but no CASES strategy"


@needs_kernels
@pytest.mark.parametrize(
    "name,op,cases",
    [o for o in OPS if o[2] is not None],
    ids=[o[0] for o in OPS if o[2] is not None],
)
def test_kernel_matches_reference(name, op, cases):
    device = "cuda" if torch.cuda.is_available() else "cpu"

    def on_device(x):
        return x.to(device) if isinstance(x, torch.Tensor) else x

    @settings(max_examples=10)
    @given(case=cases)
    def check(case):
        args, kwargs = case
        args = [on_device(a) for a in args]
        kwargs = {k: on_device(v) for k, v in kwargs.items()}
        expected = flatten(op(*args, backend="reference", **kwargs))
        with poison_allocations():
            actual = flatten(op(*args, backend="triton", **kwargs))
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert a.dtype == e.dtype
            assert_close(a, e, msg=f"{name}: ")

    check()
