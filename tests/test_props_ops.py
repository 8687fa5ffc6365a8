"""Property suite over the op registry: no op escapes the checks.

Every member's ``ops/<op>/`` packages are imported (which registers their ops with
``tensor_utils.ops``). Then:

- every backend file on disk (``ops/<op>/*.py`` other than ``__init__``, ``naive``, ``cases``
  and ``_private`` helpers) is the module of a registered backend;
- every op with a backend publishes cases;
- every backend agrees with the reference on those cases (``check_backend``: NaN-poisoned
  allocations, per-dtype tolerances or the op's own check), under ``TRITON_INTERPRET=1`` on the
  CPU and for real on CUDA (``tools/gpu.py`` runs this file there too).

Backends that cannot run here (a CUDA-only library backend on a CPU machine) are skipped with
the reason, never silently.
"""

from __future__ import annotations

import pytest
import torch

from tensor_utils.ops import registry
from tensor_utils_dev.testing.opcheck import (
    backend_files,
    check_backend,
    import_ops,
    ops_of,
    registered_backend_modules,
)
from tools.workspace import members

MEMBERS = [m for m in members() if (m.src / m.module / "ops").is_dir()]
for _m in MEMBERS:
    import_ops(_m.module, _m.src)

OPS = sorted(
    (op for m in MEMBERS for op in ops_of(m.module)),
    key=lambda op: op.name,
)
PAIRS = [(op, name) for op in OPS for name in op.backends]


@pytest.mark.parametrize("m", MEMBERS, ids=lambda m: m.name)
def test_every_backend_file_is_registered(m):
    registered = registered_backend_modules(ops_of(m.module))
    unregistered = [
        str(p) for mod, p in backend_files(m.module, m.src).items() if mod not in registered
    ]
    assert not unregistered, f"backend files not registered with an op: {unregistered}"


@pytest.mark.parametrize("op", [op for op in OPS if op.backends], ids=lambda op: op.name)
def test_every_op_with_a_backend_publishes_cases(op):
    assert op.has_cases, f"{op.name} has backends {list(op.backends)} but no cases"


def test_registry_holds_every_package_op():
    assert {op.name for op in OPS} <= set(registry())
    assert OPS, "no ops found: the walk over members' ops folders is broken"


def _runnable(op, name):
    backend = op.backends[name]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not backend.importable():
        return f"needs {', '.join(backend.requires)}"
    if not backend.runs_on(device, None, forced=True):
        return f"does not run on {device}"
    return None


@pytest.mark.triton  # skipped without CUDA or TRITON_INTERPRET=1
@pytest.mark.parametrize("op,name", PAIRS, ids=[f"{op.name}[{n}]" for op, n in PAIRS])
def test_backend_matches_reference(op, name):
    reason = _runnable(op, name)
    if reason:
        pytest.skip(f"{op.name}[{name}] {reason}")
    check_backend(op, name, max_examples=10)
