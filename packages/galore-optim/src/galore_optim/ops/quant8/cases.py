"""Random inputs on which the kernels must equal the reference, and the comparison for 8-bit
codes (test support: needs hypothesis and tensor-utils-dev)."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from tensor_utils_dev.testing import assert_close
from tensor_utils_dev.testing.strategies import random_tensor, seeds

from . import naive

_SIZES, _KINDS = st.integers(1, 700), st.sampled_from(["signed", "unsigned"])


def _moment(numel: int, kind: str, seed: int) -> torch.Tensor:
    # Several decades inside each block, as Adam moments have.
    x = random_tensor((numel,), torch.float32, seed) * torch.logspace(-6, 0, numel)
    return x if kind == "signed" else x.abs()


@st.composite
def _quantize(draw):
    kind = draw(_KINDS)
    return (_moment(draw(_SIZES), kind, draw(seeds())), kind), {}


@st.composite
def _dequantize(draw):
    kind, numel, seed = draw(_KINDS), draw(_SIZES), draw(seeds())
    return (*naive.quantize_blockwise(_moment(numel, kind, seed), kind), kind), {}


@st.composite
def _adam(draw):
    numel, seed = draw(_SIZES), draw(seeds())
    grad = random_tensor((numel,), torch.float32, seed)
    m = naive.quantize_blockwise(_moment(numel, "signed", seed + 1), "signed")
    v = naive.quantize_blockwise(_moment(numel, "unsigned", seed + 2), "unsigned")
    return (grad, *m, *v, 0.9, 0.999, 1e-8), {}


def quantize_cases():
    return _quantize()


def dequantize_cases():
    return _dequantize()


def adam8bit_cases():
    return _adam()


def codes_within_one_step(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    """Float outputs as usual; 8-bit codes may differ by one step at a rounding tie (rarely)."""
    assert len(actual) == len(expected), f"{len(actual)} outputs, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.dtype == e.dtype, f"output {i}: {a.dtype} != {e.dtype}"
        assert a.shape == e.shape, f"output {i}: shape {tuple(a.shape)} != {tuple(e.shape)}"
        if a.is_floating_point():
            assert_close(a, e, msg=f"output {i}: ")
        elif a.numel():
            diff = (a.int() - e.int()).abs()
            assert diff.max().item() <= 1, f"output {i}: codes differ by {diff.max().item()}"
            share = (diff > 0).float().mean().item()
            assert share <= 0.01, f"output {i}: {share:.1%} of codes differ by one step"
