"""Hypothesis strategies for kernel and I/O tests.

Tensors are built from a drawn seed with a seeded ``torch.Generator`` (fast, and shrinks well:
hypothesis shrinks the shape and the seed, not millions of floats).
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INT_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)
ALL_DTYPES = (*FLOAT_DTYPES, torch.float64, *INT_DTYPES, torch.bool)


def seeds() -> st.SearchStrategy[int]:
    return st.integers(min_value=0, max_value=2**31 - 1)


def float_dtypes(
    *, include_bf16: bool = True, include_fp64: bool = False
) -> st.SearchStrategy[torch.dtype]:
    """Float dtypes; pass ``include_bf16=False`` for kernels under TRITON_INTERPRET (no bf16 math)."""
    dtypes = [d for d in FLOAT_DTYPES if include_bf16 or d != torch.bfloat16]
    return st.sampled_from(dtypes + ([torch.float64] if include_fp64 else []))


def dtypes(choices=ALL_DTYPES) -> st.SearchStrategy[torch.dtype]:
    return st.sampled_from(tuple(choices))


def shapes(
    *, min_dims: int = 1, max_dims: int = 3, min_side: int = 1, max_side: int = 17
) -> st.SearchStrategy[tuple[int, ...]]:
    """Shapes with small, often odd sides (odd sizes catch masking bugs in tiled kernels)."""
    return st.lists(
        st.integers(min_value=min_side, max_value=max_side), min_size=min_dims, max_size=max_dims
    ).map(tuple)


def random_tensor(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    seed: int,
    *,
    scale: float = 1.0,
    device: str = "cpu",
) -> torch.Tensor:
    """Deterministic random tensor: normal floats, full-range ints, fair bools."""
    gen = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        out = torch.randn(shape, generator=gen, dtype=torch.float32) * scale
        return out.to(dtype=dtype, device=device)
    if dtype == torch.bool:
        return (torch.randint(0, 2, shape, generator=gen) == 1).to(device)
    info = torch.iinfo(dtype)
    low, high = max(info.min, -(2**31)), min(info.max, 2**31 - 1)
    return torch.randint(low, high + 1, shape, generator=gen, dtype=torch.int64).to(
        dtype=dtype, device=device
    )


@st.composite
def tensors(
    draw,
    *,
    dtype: torch.dtype | st.SearchStrategy[torch.dtype] | None = None,
    shape: tuple[int, ...] | st.SearchStrategy[tuple[int, ...]] | None = None,
    scale: float = 1.0,
    device: str = "cpu",
) -> torch.Tensor:
    """A seeded random tensor of a drawn (or given) shape and dtype."""
    dtype = draw(dtype) if isinstance(dtype, st.SearchStrategy) else (dtype or draw(float_dtypes()))
    shape = draw(shape) if isinstance(shape, st.SearchStrategy) else (shape or draw(shapes()))
    return random_tensor(shape, dtype, draw(seeds()), scale=scale, device=device)


@st.composite
def state_dicts(
    draw, *, min_size: int = 0, max_size: int = 6, dtypes=ALL_DTYPES, max_dims: int = 3
) -> dict[str, torch.Tensor]:
    """Small named tensor collections, including 0-d and empty tensors."""
    names = draw(
        st.lists(
            st.from_regex(r"[a-z][a-z0-9_]{0,6}(\.[a-z0-9_]{1,6}){0,2}", fullmatch=True),
            min_size=min_size,
            max_size=max_size,
            unique=True,
        )
    )
    out = {}
    for name in names:
        dtype = draw(st.sampled_from(tuple(dtypes)))
        shape = draw(shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=9))
        out[name] = random_tensor(shape, dtype, draw(seeds()))
    return out
