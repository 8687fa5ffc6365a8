"""The expert operator shared by the attention experts (MoA) and the MLP experts (MoE).

    y = expert_linear(x, weight, sorted_pair, expert_offsets,
                      input_order="token", output_order="pair", backend=None)

Registered as ``jetmoe_model::expert_linear`` (``tensor_utils.ops``). Semantics in ``naive.py``
(the reference loop). Backends:

- ``"reference"`` (alias ``"loop"``): the per-expert loop, like transformers' port (one host sync)
- ``"grouped_mm"``: gather + ``torch._grouped_mm`` + scatter (no host sync); only when asked for
- ``"triton"``: our padding-free fused gather/GEMM/scatter kernels, forward and backward, with a
  GEMV decode path for a handful of pairs (no host sync); tuning knobs in ``ops/options.py``
- ``"auto"`` (default): ``triton`` for CUDA tensors when triton imports, else ``reference``

Choose with ``backend=``, else ``TENSOR_UTILS_BACKEND`` (any of the names above), else ``auto``.
Forcing ``triton`` on CPU tensors runs the kernels in Triton's interpreter
(``TRITON_INTERPRET=1``; tiny shapes only).
"""

from __future__ import annotations

import torch

from tensor_utils.ops import Backend, Op

from . import naive


def _fake(
    x: torch.Tensor,
    weight: torch.Tensor,
    sorted_pair: torch.Tensor,
    expert_offsets: torch.Tensor,
    *,
    input_order: str = "token",
    output_order: str = "pair",
) -> torch.Tensor:
    """Output of the right shape for the compiler (the reference loop reads offsets on the host)."""
    naive.check_args(x, weight, sorted_pair, expert_offsets, input_order, output_order)
    return x.new_empty(sorted_pair.shape[0], weight.shape[1])


def grouped_mm_backend() -> Backend:
    """``torch._grouped_mm`` (CUDA and CPU; never picked by ``auto``: it needs 16-byte aligned
    rows, so it runs only when asked for)."""
    return Backend(
        "grouped_mm",
        "jetmoe_model.ops.experts.grouped_mm:expert_linear",
        device_types=("cuda", "cpu"),
        requires=(),
        interpretable=False,
        auto=False,
    )


expert_linear = Op(
    "jetmoe_model::expert_linear",
    reference=naive.expert_linear,
    backends=[
        Backend(
            "triton",
            "jetmoe_model.ops.experts.triton:expert_linear",
            aot="jetmoe_model.ops.experts.triton:aot_launches",
        ),
        grouped_mm_backend(),
    ],
    aliases={"loop": "reference"},
    cases="jetmoe_model.ops.experts.cases:cases",
    fake=_fake,
)

__all__ = ["expert_linear", "grouped_mm_backend", "naive"]
