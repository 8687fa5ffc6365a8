"""Every registered Triton kernel compiles for the H100 (sm_90) on the CPU and fits its shared
memory (``tensor_utils_dev.aot``): the interpreter never compiles, so compile errors and
shared-memory overflows would otherwise first show on the GPU.

Each Triton backend declares ``aot_launches()`` (``Backend.aot``): a ``KernelLaunch`` per
configuration its launcher can choose (dtypes, tiles, warps, stages, constexpr flags). The
default suite compiles a representative subset, the first launch each backend lists for each of
its kernels (``tensor_utils_dev.aot.representative``); the full sweep of every configuration
(1461 launches, compiled by one process per CPU core) is ``slow``. Compiles run in a child
process without ``TRITON_INTERPRET`` (the interpreter replaces kernels by Python functions).
"""

from __future__ import annotations

import pytest

from tensor_utils.ops import Backend, Op
from tensor_utils_dev.aot import compile_ops_in_subprocess, missing_aot
from tensor_utils_dev.testing.opcheck import import_ops, ops_of
from tools.workspace import members

pytest.importorskip("triton")

MEMBERS = [m for m in members() if (m.src / m.module / "ops").is_dir()]
for _m in MEMBERS:
    import_ops(_m.module, _m.src)
OPS = sorted((op for m in MEMBERS for op in ops_of(m.module)), key=lambda op: op.name)
TRITON = [(op, b.name) for op in OPS for b in op.backends.values() if "triton" in b.requires]
MODULES = [f"{m.module}.ops" for m in MEMBERS]


def _records(full: bool) -> dict[tuple[str, str], list[dict]]:
    found: dict[tuple[str, str], list[dict]] = {}
    for record in compile_ops_in_subprocess(MODULES, full=full):
        found.setdefault((record["op"], record["backend"]), []).append(record)
    return found


@pytest.fixture(scope="module")
def representative():
    return _records(full=False)


@pytest.fixture(scope="module")
def everything():
    return _records(full=True)


def _check(records, op, backend):
    got = records.get((op.name, backend))
    assert got, f"{op.name}[{backend}]: aot_launches() yielded no launch"
    failed = [f"{r['kernel']} [{r['label']}]: {r['error']}" for r in got if "error" in r]
    assert not failed, "\n".join(failed)


def test_every_triton_backend_declares_its_launches():
    assert TRITON, "no Triton backends found: the registry walk is broken"
    assert not missing_aot(OPS), f"Triton backends without aot=: {missing_aot(OPS)}"


def test_a_triton_backend_without_launches_fails_the_check():
    def ref(x):
        return x

    op = Op(
        "tu_aot_test::no_launches",
        reference=ref,
        backends=[Backend("triton", ref, aot=None)],
        library=False,
    )
    assert missing_aot([op]) == ["tu_aot_test::no_launches[triton]"]
    with pytest.raises(AssertionError, match="yielded no launch"):
        _check({}, op, "triton")


@pytest.mark.parametrize("op,backend", TRITON, ids=[f"{o.name}[{b}]" for o, b in TRITON])
def test_representative_launches_compile_and_fit(representative, op, backend):
    _check(representative, op, backend)


@pytest.mark.slow
@pytest.mark.parametrize("op,backend", TRITON, ids=[f"{o.name}[{b}]" for o, b in TRITON])
def test_every_launch_compiles_and_fits(everything, op, backend):
    _check(everything, op, backend)
