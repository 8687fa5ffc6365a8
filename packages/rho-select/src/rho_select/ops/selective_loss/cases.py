"""Hypothesis cases for the selective loss's ops (test-only: needs hypothesis).

Sizes are small and odd (vocabularies that are not a multiple of the kernel's vocabulary tile,
including ones above it, so the tile loop runs more than once with a ragged last step), with
ignored rows, fp32 and fp16 (the interpreter has no bf16 math), and chunk sizes from one row up.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from tensor_utils_dev.testing.strategies import seeds

IGNORE = -100
VOCABS = (1, 7, 37, 513, 1100)


def problem(seed: int, rows: int, hidden: int, vocab: int, dtype: torch.dtype, ignored: float):
    """``(hidden, weight, labels)`` with about ``ignored`` of the labels set to ``-100``."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(rows, hidden, generator=gen).to(dtype)
    w = (torch.randn(vocab, hidden, generator=gen) / hidden**0.5).to(dtype)
    labels = torch.randint(0, vocab, (rows,), generator=gen)
    labels[torch.rand(rows, generator=gen) < ignored] = IGNORE
    return h, w, labels


@st.composite
def _shape(draw):
    return (
        draw(st.integers(1, 23)),  # rows
        draw(st.integers(1, 19)),  # hidden
        draw(st.sampled_from(VOCABS)),
        draw(st.sampled_from([torch.float32, torch.float16])),
        draw(st.sampled_from([0.0, 0.3, 1.0])),  # fraction of ignored rows
        draw(st.sampled_from([0, 1, 3, 8])),  # chunk_size (0: automatic)
        draw(seeds()),
    )


def forward_cases():
    @st.composite
    def case(draw):
        rows, hidden, vocab, dtype, ignored, chunk, seed = draw(_shape())
        h, w, labels = problem(seed, rows, hidden, vocab, dtype, ignored)
        return (h, w, labels, chunk, IGNORE), {}

    return case()


def backward_cases():
    @st.composite
    def case(draw):
        rows, hidden, vocab, dtype, ignored, chunk, seed = draw(_shape())
        h, w, labels = problem(seed, rows, hidden, vocab, dtype, ignored)
        gen = torch.Generator().manual_seed(seed + 1)
        lse = torch.logsumexp((h.float() @ w.float().t()), 1)
        # a random subset of labelled rows is selected; sometimes a long unselected run
        keep = torch.rand(rows, generator=gen) < draw(st.sampled_from([0.0, 0.4, 1.0]))
        if draw(st.booleans()):
            keep[: rows // 2] = False
        scale = torch.where(keep & (labels != IGNORE), 1.0 / rows, 0.0)
        accumulate_fp32 = draw(st.booleans())
        return (h, w, labels.clamp(min=0), lse, scale, chunk, accumulate_fp32), {}

    return case()
