"""Pick the Triton kernel or the PyTorch reference for an op.

Rule, first match wins: the call's ``backend=`` argument; the ``TENSOR_UTILS_BACKEND``
environment variable (``reference``, ``triton`` or ``auto``); otherwise Triton when every tensor
argument is on CUDA and triton imports, the reference in every other case. Forcing ``triton``
on CPU tensors works only under ``TRITON_INTERPRET=1`` (that is how CPU tests run kernels).

    from tensor_utils.dispatch import dispatched

    expo_extrapolate = dispatched(
        "expo_extrapolate",
        reference=naive.expo_extrapolate,
        triton="expo_merge.ops.extrapolate.triton:expo_extrapolate",  # imported lazily
    )
    out = expo_extrapolate(sft, aligned, alpha)              # auto
    out = expo_extrapolate(sft, aligned, alpha, backend="reference")
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Iterable
from typing import Literal

import torch

Backend = Literal["auto", "reference", "triton"]
BACKENDS = ("auto", "reference", "triton")
ENV_VAR = "TENSOR_UTILS_BACKEND"


@functools.cache
def triton_available() -> bool:
    """True when ``import triton`` works (it needs no GPU to import)."""
    try:
        importlib.import_module("triton")
    except Exception:  # ImportError, or a broken install raising something else
        return False
    return True


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _check(backend: str, where: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(
            f"{where}: unknown backend {backend!r} (choose from {', '.join(BACKENDS)})"
        )
    return backend


def select_backend(tensors: Iterable[object] = (), backend: str | None = None) -> str:
    """Resolve ``auto`` to ``reference`` or ``triton`` for these tensors."""
    requested = _check(backend, "backend argument") if backend else None
    if requested in (None, "auto"):
        requested = _check(os.environ.get(ENV_VAR, "auto").strip().lower() or "auto", ENV_VAR)
    tensors = [t for t in tensors if isinstance(t, torch.Tensor)]
    if requested == "auto":
        on_cuda = bool(tensors) and all(t.is_cuda for t in tensors)
        return "triton" if on_cuda and triton_available() else "reference"
    if requested == "triton":
        if not triton_available():
            raise RuntimeError("backend 'triton' requested but triton is not installed")
        if any(not t.is_cuda for t in tensors) and not triton_interpreting():
            raise RuntimeError(
                "backend 'triton' requested for CPU tensors; set TRITON_INTERPRET=1 to run "
                "the kernel on the CPU, or move the tensors to CUDA"
            )
    return requested


def _resolve(target: Callable | str) -> Callable:
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def dispatched(
    name: str,
    *,
    reference: Callable,
    triton: Callable | str | None = None,
) -> Callable:
    """Wrap an op so each call runs the backend ``select_backend`` picks for its tensor args.

    ``triton`` may be a ``"module:function"`` string, imported on first use so CPU-only code
    never imports the kernel module. The wrapper accepts ``backend=`` on top of the op's own
    arguments and exposes ``.op_name``, ``.reference``, ``.triton`` and ``.select(...)``.

    Convention for the cross-package suite (``tests/test_props_ops.py``): the op folder's
    ``__init__.py`` also defines ``CASES = {name: strategy}``, a hypothesis strategy per op
    drawing small ``(args, kwargs)`` (interpreter-sized, no bf16 math) on which kernel and
    reference must agree.
    """

    @functools.wraps(reference)
    def op(*args, backend: str | None = None, **kwargs):
        tensors = [*args, *kwargs.values()]
        chosen = select_backend(tensors, backend)
        if chosen == "triton":
            if triton is None:
                if backend == "triton" or os.environ.get(ENV_VAR) == "triton":
                    raise RuntimeError(f"{name}: has no Triton implementation")
                chosen = "reference"
            else:
                return _resolve(triton)(*args, **kwargs)
        return reference(*args, **kwargs)

    op.__name__ = name
    op.op_name = name  # marks a dispatched op; tests/ discovers ops by this attribute
    op.reference = reference
    op.triton = (lambda *a, **k: _resolve(triton)(*a, **k)) if triton is not None else None
    op.select = lambda *tensors, backend=None: select_backend(tensors, backend)
    return op
