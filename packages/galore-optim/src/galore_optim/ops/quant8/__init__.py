"""Block-wise 8-bit moments: Triton on CUDA, the PyTorch reference elsewhere."""

from tensor_utils.dispatch import dispatched

from . import naive
from .naive import QBLOCK, code_dtype, num_blocks

quantize_blockwise = dispatched(
    "quantize_blockwise",
    reference=naive.quantize_blockwise,
    triton="galore_optim.ops.quant8.triton:quantize_blockwise",
)
dequantize_blockwise = dispatched(
    "dequantize_blockwise",
    reference=naive.dequantize_blockwise,
    triton="galore_optim.ops.quant8.triton:dequantize_blockwise",
)
adam8bit_moments = dispatched(
    "adam8bit_moments",
    reference=naive.adam8bit_moments,
    triton="galore_optim.ops.quant8.triton:adam8bit_moments",
)

__all__ = [
    "QBLOCK",
    "adam8bit_moments",
    "code_dtype",
    "dequantize_blockwise",
    "naive",
    "num_blocks",
    "quantize_blockwise",
]


def _cases():
    """Small inputs for the cross-package kernel-vs-reference suite (interpreter-safe)."""
    import torch
    from hypothesis import strategies as st

    from tensor_utils_dev.testing.strategies import random_tensor, seeds

    def moment(numel, kind, seed):
        # Several decades inside each block, as Adam moments have.
        x = random_tensor((numel,), torch.float32, seed) * torch.logspace(-6, 0, numel)
        return x if kind == "signed" else x.abs()

    sizes, kinds = st.integers(1, 700), st.sampled_from(["signed", "unsigned"])

    @st.composite
    def quantize(draw):
        kind = draw(kinds)
        return (moment(draw(sizes), kind, draw(seeds())), kind), {}

    @st.composite
    def dequantize(draw):
        kind, numel, seed = draw(kinds), draw(sizes), draw(seeds())
        return (*naive.quantize_blockwise(moment(numel, kind, seed), kind), kind), {}

    @st.composite
    def adam(draw):
        numel, seed = draw(sizes), draw(seeds())
        grad = random_tensor((numel,), torch.float32, seed)
        m = naive.quantize_blockwise(moment(numel, "signed", seed + 1), "signed")
        v = naive.quantize_blockwise(moment(numel, "unsigned", seed + 2), "unsigned")
        return (grad, *m, *v, 0.9, 0.999, 1e-8), {}

    return {
        "quantize_blockwise": quantize(),
        "dequantize_blockwise": dequantize(),
        "adam8bit_moments": adam(),
    }


def _codes_within_one_step(actual, expected):
    """Float outputs as usual; 8-bit codes may differ by one step at a rounding tie (rarely)."""
    from tensor_utils_dev.testing import assert_close

    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert a.dtype == e.dtype
        if a.is_floating_point():
            assert_close(a, e)
        elif a.numel():
            diff = (a.int() - e.int()).abs()
            assert diff.max().item() <= 1 and (diff > 0).float().mean().item() <= 0.01


def __getattr__(name):
    # Built on demand: hypothesis is a test-only dependency.
    if name == "CASES":
        return _cases()
    if name == "CHECKS":
        return dict.fromkeys(("quantize_blockwise", "adam8bit_moments"), _codes_within_one_step)
    raise AttributeError(name)
