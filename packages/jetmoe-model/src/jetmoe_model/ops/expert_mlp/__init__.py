"""The SwiGLU expert MLP of the MoE layer: two expert linears with ``silu(gate) * up`` between.

    y = expert_mlp(x, w_in, w_out, sorted_pair, expert_offsets, backend=None)

Semantics in ``naive.py``. Backends as for ``expert_linear`` (``jetmoe_model.ops.experts``):
``reference``/``loop`` and ``grouped_mm`` compose two expert linears with the activation in
PyTorch; ``triton`` runs the fused kernels (SwiGLU in the GEMM epilogues, forward and backward).
"""

from __future__ import annotations

import functools

import torch

from ..experts import grouped_mm as _grouped_mm
from ..experts import resolve_backend
from . import naive

OP_NAME = "jetmoe_expert_mlp"


@functools.cache
def triton_kernels():
    from . import triton as kernels

    return kernels


def expert_mlp(
    x: torch.Tensor,
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    sorted_pair: torch.Tensor,
    expert_offsets: torch.Tensor,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    chosen = resolve_backend(x, backend)
    if chosen == "triton":
        naive.check_mlp_args(x, w_in, w_out, sorted_pair, expert_offsets)
        return triton_kernels().swiglu_mlp(x, w_in, w_out, sorted_pair, expert_offsets)
    fn = _grouped_mm.expert_linear if chosen == "grouped_mm" else None
    return naive.expert_mlp(x, w_in, w_out, sorted_pair, expert_offsets, linear_fn=fn)


expert_mlp.op_name = OP_NAME
expert_mlp.reference = naive.expert_mlp
expert_mlp.grouped_mm = lambda *a: naive.expert_mlp(*a, linear_fn=_grouped_mm.expert_linear)
expert_mlp.triton = lambda *a: triton_kernels().swiglu_mlp(*a)
expert_mlp.select = lambda x, backend=None: resolve_backend(x, backend)


def _fp16_slack(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    """Two chained matmuls: the fused kernel rounds the activation once where the reference
    rounds h, silu(g) and the product; fp16 gets a few ulps of slack, fp32 the default."""
    from tensor_utils_dev.testing import assert_close

    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.dtype == e.dtype, f"output {i}: {a.dtype} != {e.dtype}"
        tol = 4e-3 if a.dtype == torch.float16 else None
        assert_close(a, e, atol=tol, rtol=tol, msg=f"output {i}: ")


CHECKS = {OP_NAME: _fp16_slack}


def _cases():
    """Small random routings (empty experts, odd sizes) for the cross-package property suite."""
    from hypothesis import strategies as st

    from tensor_utils_dev.testing.strategies import random_tensor, seeds

    from ...routing import random_expert_index, sort_by_expert

    @st.composite
    def case(draw):
        tokens = draw(st.integers(0, 9))
        experts = draw(st.integers(1, 5))
        top_k = draw(st.integers(1, experts))
        d = draw(st.integers(1, 19))
        f = draw(st.integers(1, 13))
        dtype = draw(st.sampled_from([torch.float32, torch.float16]))
        seed = draw(seeds())
        index = random_expert_index(tokens, experts, top_k, seed)
        routing = sort_by_expert(index, experts)
        x = random_tensor((tokens, d), dtype, seed + 1)
        w_in = random_tensor((experts, 2 * f, d), dtype, seed + 2, scale=0.5)
        w_out = random_tensor((experts, d, f), dtype, seed + 3, scale=0.5)
        return (x, w_in, w_out, routing.sorted_pair, routing.expert_offsets), {}

    return case()


def __getattr__(name):
    # CASES needs hypothesis (a test dependency): built on first access only.
    if name == "CASES":
        return {OP_NAME: _cases()}
    raise AttributeError(name)


__all__ = ["CHECKS", "OP_NAME", "expert_mlp", "naive", "triton_kernels"]
