"""Every backend of a registered op against its reference, on the op's own cases.

This is the check the cross-package property suite runs for each op in the registry, and what
the mutation tests call on a deliberately broken kernel to show it is caught::

    from tensor_utils_dev.testing.opcheck import check_backend
    check_backend(op, "triton", max_examples=10)

Arguments are copied per backend (in-place ops cannot leak into the comparison); the backend
runs with NaN-poisoned allocations, so an element it never writes shows up. Compared: the
returned tensors, then every tensor argument as the call left it, with the dtype's tolerance or
the op's own ``check``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings

from tensor_utils.ops import REFERENCE, Op, registry

from .poison import poison_allocations
from .tolerances import assert_close

# Files in an op folder that are not backends: the reference, the cases, the dispatch module.
NOT_BACKENDS = {"__init__.py", "naive.py", "cases.py"}


def flatten(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in flatten(item)]
    if isinstance(out, dict):
        return [t for item in out.values() for t in flatten(item)]
    if hasattr(out, "__dataclass_fields__"):
        return [t for name in out.__dataclass_fields__ for t in flatten(getattr(out, name))]
    return []


def default_check(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(actual) == len(expected), f"{len(actual)} outputs, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.dtype == e.dtype, f"output {i}: {a.dtype} != {e.dtype}"
        assert a.shape == e.shape, f"output {i}: shape {tuple(a.shape)} != {tuple(e.shape)}"
        assert_close(a, e, msg=f"output {i}: ")


def run_backend(op: Op, backend: str, case: tuple[tuple, dict], device: str) -> list[torch.Tensor]:
    """One call on copies of the case's arguments; returns outputs then the arguments."""
    args, kwargs = case

    def copy(x: Any) -> Any:
        return x.detach().clone().to(device) if isinstance(x, torch.Tensor) else x

    args = tuple(copy(a) for a in args)
    kwargs = {k: copy(v) for k, v in kwargs.items()}
    if backend == REFERENCE:
        out = op(*args, backend=backend, **kwargs)
    else:
        with poison_allocations():
            out = op(*args, backend=backend, **kwargs)
    return flatten(out) + flatten(list(args) + list(kwargs.values()))


def check_backend(
    op: Op, backend: str, *, max_examples: int = 10, device: str | None = None
) -> None:
    """Draw the op's cases and assert ``backend`` agrees with the reference on each."""
    strategy = op.cases()
    if strategy is None:
        raise AssertionError(f"{op.name} publishes no cases")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    compare: Callable[..., None] = op.check() or default_check

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=strategy)
    def agree(case: tuple[tuple, dict]) -> None:
        compare(run_backend(op, backend, case, device), run_backend(op, REFERENCE, case, device))

    agree()


def import_ops(module: str, src: Path) -> list[str]:
    """Import every ``<module>.ops.<op>`` package under ``src`` (registering its ops)."""
    folder = src / module / "ops"
    imported = []
    if folder.is_dir():
        for op_dir in sorted(p for p in folder.iterdir() if (p / "__init__.py").exists()):
            name = f"{module}.ops.{op_dir.name}"
            importlib.import_module(name)
            imported.append(name)
    return imported


def backend_files(module: str, src: Path) -> dict[str, Path]:
    """``{dotted module: file}`` for every backend-looking file in ``<module>/ops/*/``."""
    found = {}
    folder = src / module / "ops"
    if folder.is_dir():
        for path in sorted(folder.glob("*/*.py")):
            if path.name in NOT_BACKENDS or path.name.startswith("_"):
                continue
            found[f"{module}.ops.{path.parent.name}.{path.stem}"] = path
    return found


def ops_of(module: str, ops: Iterable[Op] | None = None) -> list[Op]:
    """Registered ops whose reference lives in ``module``."""
    ops = registry().values() if ops is None else ops
    return [op for op in ops if op.reference.__module__.split(".")[0] == module]


def registered_backend_modules(ops: Iterable[Op]) -> set[str]:
    return {b.module for op in ops for b in op.backends.values() if b.module}
