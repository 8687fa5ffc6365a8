"""Projected Adam step: Triton on CUDA, the PyTorch reference elsewhere.

Registered as ``galore_optim::projected_adam_step`` and ``galore_optim::apply_update``
(``tensor_utils.ops``); both write their tensors in place and return nothing.
"""

from tensor_utils.ops import Backend, Op

from . import naive

_TRITON = "galore_optim.ops.adam_step.triton"

projected_adam_step = Op(
    "galore_optim::projected_adam_step",
    reference=naive.projected_adam_step,
    backends=[Backend("triton", f"{_TRITON}:projected_adam_step", aot=f"{_TRITON}:aot_launches")],
    cases="galore_optim.ops.adam_step.cases:projected_adam_step_cases",
    mutates_args=("weight", "exp_avg", "exp_avg_sq"),
)

apply_update = Op(
    "galore_optim::apply_update",
    reference=naive.apply_update,
    backends=[Backend("triton", f"{_TRITON}:apply_update", aot=f"{_TRITON}:aot_launches")],
    cases="galore_optim.ops.adam_step.cases:apply_update_cases",
    mutates_args=("weight",),
)

__all__ = ["apply_update", "naive", "projected_adam_step"]
