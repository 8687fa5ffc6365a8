"""Projected Adam step: Triton on CUDA, the PyTorch reference elsewhere."""

from tensor_utils.dispatch import dispatched

from . import naive

projected_adam_step = dispatched(
    "projected_adam_step",
    reference=naive.projected_adam_step,
    triton="galore_optim.ops.adam_step.triton:projected_adam_step",
)

apply_update = dispatched(
    "apply_update",
    reference=naive.apply_update,
    triton="galore_optim.ops.adam_step.triton:apply_update",
)

__all__ = ["apply_update", "naive", "projected_adam_step"]


def _cases():
    """Small inputs for the cross-package kernel-vs-reference suite (interpreter-safe)."""
    import torch
    from hypothesis import strategies as st

    from tensor_utils_dev.testing.strategies import random_tensor, seeds

    @st.composite
    def case(draw, with_moments: bool):
        side = draw(st.sampled_from(["right", "left", "full", "none"]))
        m, n = draw(st.integers(1, 40)), draw(st.integers(1, 40))
        r = draw(st.integers(1, min(m, n)))
        dtype = draw(st.sampled_from([torch.float32, torch.float16]))
        seed = draw(seeds())
        low = {"right": (m, r), "left": (r, n), "full": (r, r), "none": (m, n)}[side]
        gen = torch.Generator().manual_seed(seed)
        left = right = None
        if side in ("left", "full"):
            left = torch.linalg.qr(torch.randn(m, r, generator=gen)).Q.to(dtype)
        if side in ("right", "full"):
            right = torch.linalg.qr(torch.randn(n, r, generator=gen)).Q.T.contiguous().to(dtype)
        weight = random_tensor((m, n), dtype, seed)
        grad = random_tensor(low, dtype, seed + 1)
        if not with_moments:
            return (weight, grad, left, right, side, 0.1, 0.5, 0.01), {}
        exp_avg = random_tensor(low, dtype, seed + 2, scale=0.1)
        exp_avg_sq = random_tensor(low, dtype, seed + 3).abs() * 0.01
        hp = (0.9, 0.999, 1e-6, 3e-3, 0.25, 1e-3)
        return (weight, grad, exp_avg, exp_avg_sq, left, right, side, *hp), {}

    return {"projected_adam_step": case(True), "apply_update": case(False)}


def __getattr__(name):
    # Built on demand: hypothesis is a test-only dependency.
    if name == "CASES":
        return _cases()
    raise AttributeError(name)
