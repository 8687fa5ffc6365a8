"""Property suite over every package's ops: the kernel agrees with the reference.

Each `ops/<op>/__init__.py` publishes its dispatched functions and `CASES = {op_name: strategy}`
(hypothesis strategies drawing small `(args, kwargs)`). For every op that has a Triton kernel,
this draws cases and runs kernel and reference on separate copies of the arguments, under
`TRITON_INTERPRET=1` on the CPU (or on CUDA when present). Compared: the returned tensors and
every tensor argument afterwards (in-place ops), which must be fully written (allocations are
NaN-poisoned) and equal within the output dtype's tolerance. An op whose outputs are only
equal up to a documented slack (e.g. quantization codes off by one at rounding ties) publishes
`CHECKS = {op_name: fn(actual, expected)}` over those two tensor lists instead. A kernel
without CASES fails: no op escapes the check.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tensor_utils.testing import assert_close, poison_allocations
from tools.workspace import members


def discover() -> list[tuple[str, object, object, object]]:
    found = []
    for m in members():
        ops = m.src / m.module / "ops"
        if not ops.is_dir():
            continue
        for folder in sorted(p for p in ops.iterdir() if (p / "__init__.py").exists()):
            module = importlib.import_module(f"{m.module}.ops.{folder.name}")
            cases = getattr(module, "CASES", {})
            checks = getattr(module, "CHECKS", {})
            for value in vars(module).values():
                if callable(value) and hasattr(value, "op_name") and value.triton is not None:
                    name = value.op_name
                    found.append((f"{m.name}:{name}", value, cases.get(name), checks.get(name)))
    return found


OPS = discover()


def flatten(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in flatten(item)]
    return []


def default_check(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.dtype == e.dtype, f"output {i}: {a.dtype} != {e.dtype}"
        assert_close(a, e, msg=f"output {i}: ")


@pytest.mark.parametrize("name,op,cases,check", OPS, ids=[o[0] for o in OPS])
def test_every_kernel_publishes_cases(name, op, cases, check):
    assert isinstance(cases, st.SearchStrategy), f"{name} has a Triton kernel but no CASES strategy"


WITH_CASES = [o for o in OPS if o[2] is not None]


@pytest.mark.triton  # the shared plugin skips it without CUDA or TRITON_INTERPRET=1
@pytest.mark.parametrize("name,op,cases,check", WITH_CASES, ids=[o[0] for o in WITH_CASES])
def test_kernel_matches_reference(name, op, cases, check):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    compare = check or default_check

    def copy(x):
        return x.detach().clone().to(device) if isinstance(x, torch.Tensor) else x

    def run(case, backend):
        args, kwargs = case
        args, kwargs = [copy(a) for a in args], {k: copy(v) for k, v in kwargs.items()}
        if backend == "triton":
            with poison_allocations():
                out = op(*args, backend=backend, **kwargs)
        else:
            out = op(*args, backend=backend, **kwargs)
        # Returned tensors, then every tensor argument as the call left it (in-place outputs).
        return flatten(out) + flatten(list(args) + list(kwargs.values()))

    @settings(max_examples=10)
    @given(case=cases)
    def check_case(case):
        compare(run(case, "triton"), run(case, "reference"))

    check_case()
