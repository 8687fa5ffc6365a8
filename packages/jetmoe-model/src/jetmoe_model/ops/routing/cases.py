"""Random router logits on which the routing kernel must equal the reference, and the
comparison of two routings (test support: needs hypothesis and tensor-utils-dev)."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from tensor_utils_dev.testing import assert_close
from tensor_utils_dev.testing.strategies import seeds


@st.composite
def _case(draw):
    tokens = draw(st.integers(0, 40))  # up to 5 token blocks of 8 in the interpreter
    experts = draw(st.integers(1, 9))
    top_k = draw(st.integers(1, experts))
    gate_dtype = draw(st.sampled_from([torch.float32, torch.float16]))
    gen = torch.Generator().manual_seed(draw(seeds()))
    logits = torch.randn(tokens, experts, generator=gen) * 3  # fp32: no ties in practice
    return (logits, top_k, gate_dtype), {}


def cases():
    """``(logits, top_k, gate_dtype)``: 0-40 tokens, 1-9 experts, fp32/fp16 gates."""
    return _case()


def same_routing(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    """Flattened ``TopKRouting`` (+ the call's tensor arguments): logits, gates, expert_index,
    sorted_pair, expert_offsets, then ``pair_position`` where the backend returns it (the Triton
    routing does, the reference does not), which must invert ``sorted_pair``."""
    actual, expected = list(actual), list(expected)
    if len(actual) == len(expected) + 1:  # the backend's pair_position
        pos, sorted_pair = actual.pop(5), actual[3]
        rows = torch.arange(sorted_pair.numel(), device=pos.device, dtype=pos.dtype)
        assert torch.equal(pos[sorted_pair], rows), "pair_position does not invert sorted_pair"
    assert len(actual) == len(expected), f"{len(actual)} outputs, expected {len(expected)}"
    names = ["logits", "gates", "expert_index", "sorted_pair", "expert_offsets"]
    names += [f"argument {i}" for i in range(len(actual) - len(names))]
    for name, a, e in zip(names, actual, expected, strict=True):
        assert a.dtype == e.dtype and a.shape == e.shape, (
            f"{name}: {a.dtype} {tuple(a.shape)} != {e.dtype} {tuple(e.shape)}"
        )
        if a.is_floating_point():
            assert_close(a, e, msg=f"{name}: ")
        else:
            assert torch.equal(a.cpu(), e.cpu()), f"{name} differs"
