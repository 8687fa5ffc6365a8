"""``timestep_norm``: Megalodon's causal cumulative group normalization with streaming state.

    y, count, mean, var = timestep_norm(x, prev_count, prev_mean, prev_var, weight, bias,
                                        padding_mask=None, eps=1e-5)

Backends: ``reference`` (PyTorch, shifted cumulative sums; the CPU path) and ``triton`` (chunked
Welford scan, forward and backward; auto on CUDA). ``(count, mean, var)`` is the state after the
last position: pass it back as ``prev_*`` to continue the sequence.
"""

from tensor_utils.ops import Backend, Op

from . import naive

timestep_norm = Op(
    "megalodon_model::timestep_norm",
    reference=naive.timestep_norm,
    backends=[
        Backend(
            "triton",
            "megalodon_model.ops.timestep_norm.triton:timestep_norm",
            aot="megalodon_model.ops.timestep_norm.triton:aot_launches",
        )
    ],
    cases="megalodon_model.ops.timestep_norm.cases:cases",
    check="megalodon_model.ops.timestep_norm.cases:check",
    library=False,  # differentiable: autograd runs through the backend
)

__all__ = ["timestep_norm"]
