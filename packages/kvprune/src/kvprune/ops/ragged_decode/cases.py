"""Random ragged caches on which the kernel must equal the reference (test support: needs
hypothesis). fp32/fp16 on the CPU (the interpreter has no bf16 math), bf16 too on CUDA."""

from __future__ import annotations

import torch
from hypothesis import strategies as st


def random_ragged_case(
    seed: int,
    lengths: list[int],
    slack: list[int],
    group: int,
    dim: int,
    dtype: torch.dtype,
    device: str = "cpu",
):
    """A ragged pool with the given segment lengths (slack rows filled with large garbage, which
    a correct kernel never reads) and matching queries: ``(q, k_pool, v_pool, offsets, lengths)``."""
    gen = torch.Generator().manual_seed(seed)
    caps = [n + s for n, s in zip(lengths, slack, strict=True)]
    rows = sum(caps)
    offsets = torch.tensor([0, *caps[:-1]], dtype=torch.int64).cumsum(0)
    k = torch.randn(rows, dim, generator=gen)
    v = torch.randn(rows, dim, generator=gen)
    for off, n, cap in zip(offsets.tolist(), lengths, caps, strict=True):
        k[off + n : off + cap] = 1e4  # would dominate the softmax if read
        v[off + n : off + cap] = 1e4
    q = torch.randn(len(lengths), group, dim, generator=gen)
    lens = torch.tensor(lengths, dtype=torch.int32, device=device)
    q, k, v = (t.to(dtype=dtype, device=device) for t in (q, k, v))
    return q, k, v, offsets.to(device), lens


@st.composite
def _case(draw, dtypes: tuple[torch.dtype, ...]):
    n_seg = draw(st.integers(1, 4))
    lengths = draw(st.lists(st.integers(0, 40), min_size=n_seg, max_size=n_seg))
    slack = draw(st.lists(st.integers(0, 3), min_size=n_seg, max_size=n_seg))
    group = draw(st.integers(1, 3))
    dim = draw(st.sampled_from([1, 3, 8, 17, 32]))
    dtype = draw(st.sampled_from(dtypes))
    seed = draw(st.integers(0, 2**31 - 1))
    q, k, v, offsets, lens = random_ragged_case(seed, lengths, slack, group, dim, dtype)
    return (q, k, v, offsets, lens, dim**-0.5), {}


def cases():
    """``(args, kwargs)`` of ``ragged_decode_attention``: up to 4 segments of 0-40 rows."""
    extra = (torch.bfloat16,) if torch.cuda.is_available() else ()
    return _case((torch.float32, torch.float16, *extra))
