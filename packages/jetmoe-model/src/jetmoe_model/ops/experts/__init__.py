"""The expert operator shared by the attention experts (MoA) and the MLP experts (MoE).

    y = expert_linear(x, weight, sorted_pair, expert_offsets,
                      input_order="token", output_order="pair", backend=None)

Semantics in ``naive.py`` (the reference loop). Backends:

- ``"reference"`` (alias ``"loop"``): the per-expert loop, like transformers' port (one host sync)
- ``"grouped_mm"``: gather + ``torch._grouped_mm`` + scatter (no host sync)
- ``"triton"``: our padding-free fused gather/GEMM/scatter kernels, forward and backward, with a
  GEMV decode path for a handful of pairs (no host sync)
- ``"auto"`` (default): ``triton`` for CUDA tensors when triton imports, else ``reference``

Choose with ``backend=``, else the ``JETMOE_EXPERT_BACKEND`` environment variable, else
``TENSOR_UTILS_BACKEND`` (``reference``/``triton``), else ``auto``. Forcing ``triton`` on CPU
tensors runs the kernels in Triton's interpreter (``TRITON_INTERPRET=1``; tiny shapes only).
"""

from __future__ import annotations

import functools
import os

import torch

from tensor_utils.dispatch import select_backend

from . import grouped_mm as _grouped_mm
from . import naive

BACKENDS = ("auto", "reference", "loop", "grouped_mm", "triton")
ENV_VAR = "JETMOE_EXPERT_BACKEND"
OP_NAME = "jetmoe_expert_linear"


def resolve_backend(x: torch.Tensor, backend: str | None = None) -> str:
    """The backend a call on ``x`` runs: ``reference``, ``grouped_mm`` or ``triton``."""
    requested = backend or os.environ.get(ENV_VAR, "").strip().lower() or None
    if requested is not None and requested not in BACKENDS:
        raise ValueError(
            f"expert backend {requested!r} is not one of {', '.join(BACKENDS)}"
            + ("" if backend else f" (from ${ENV_VAR})")
        )
    if requested == "loop":
        requested = "reference"
    if requested == "grouped_mm":
        if not _grouped_mm.available():
            raise RuntimeError("backend 'grouped_mm' needs torch._grouped_mm (PyTorch >= 2.8)")
        return "grouped_mm"
    # reference / triton / auto: tensor-utils' rule (TENSOR_UTILS_BACKEND, CUDA + triton -> triton)
    return select_backend([x], requested)


@functools.cache
def _triton_impl():
    from . import triton as kernels

    return kernels.expert_linear


def expert_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    sorted_pair: torch.Tensor,
    expert_offsets: torch.Tensor,
    *,
    input_order: str = "token",
    output_order: str = "pair",
    backend: str | None = None,
) -> torch.Tensor:
    chosen = resolve_backend(x, backend)
    kwargs = dict(input_order=input_order, output_order=output_order)
    if chosen == "triton":
        return _triton_impl()(x, weight, sorted_pair, expert_offsets, **kwargs)
    if chosen == "grouped_mm":
        return _grouped_mm.expert_linear(x, weight, sorted_pair, expert_offsets, **kwargs)
    return naive.expert_linear(x, weight, sorted_pair, expert_offsets, **kwargs)


expert_linear.op_name = OP_NAME
expert_linear.reference = naive.expert_linear
expert_linear.grouped_mm = _grouped_mm.expert_linear
expert_linear.triton = lambda *a, **k: _triton_impl()(*a, **k)
expert_linear.select = lambda x, backend=None: resolve_backend(x, backend)


def _cases():
    """Small random routings (empty experts, odd sizes, all three orders) for the
    cross-package property suite (``tests/test_props_ops.py``)."""
    from hypothesis import strategies as st

    from tensor_utils_dev.testing.strategies import random_tensor, seeds

    from ...routing import random_expert_index, sort_by_expert

    @st.composite
    def case(draw):
        tokens = draw(st.integers(0, 9))
        experts = draw(st.integers(1, 5))
        top_k = draw(st.integers(1, experts))
        n_in = draw(st.integers(1, 19))
        n_out = draw(st.integers(1, 19))
        dtype = draw(st.sampled_from([torch.float32, torch.float16]))
        input_order = draw(st.sampled_from(naive.INPUT_ORDERS))
        output_order = draw(st.sampled_from(naive.OUTPUT_ORDERS))
        seed = draw(seeds())
        index = random_expert_index(tokens, experts, top_k, seed)
        routing = sort_by_expert(index, experts)
        rows = tokens if input_order == "token" else tokens * top_k
        x = random_tensor((rows, n_in), dtype, seed + 1)
        w = random_tensor((experts, n_out, n_in), dtype, seed + 2, scale=0.5)
        return (x, w, routing.sorted_pair, routing.expert_offsets), dict(
            input_order=input_order, output_order=output_order
        )

    return case()


def __getattr__(name):
    # CASES needs hypothesis (a test dependency): built on first access only.
    if name == "CASES":
        return {OP_NAME: _cases()}
    raise AttributeError(name)


__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "OP_NAME",
    "expert_linear",
    "naive",
    "resolve_backend",
]
