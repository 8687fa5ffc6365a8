"""Random inputs on which the kernel must equal the reference (test support: needs hypothesis).

Interpreter-sized; fp32/fp16 on the CPU (the interpreter has no bf16 math), bf16 too on CUDA.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from tensor_utils_dev.testing.strategies import random_tensor, seeds, shapes


def cases(device: str | None = None):
    dtypes = [torch.float32, torch.float16]
    if (device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda":
        dtypes.append(torch.bfloat16)

    @st.composite
    def case(draw):
        shape = draw(shapes(max_dims=3, max_side=37))
        in_dtype, out_dtype = draw(st.sampled_from(dtypes)), draw(st.sampled_from(dtypes))
        seed = draw(seeds())
        sft = random_tensor(shape, in_dtype, seed)
        aligned = random_tensor(shape, in_dtype, seed + 1)
        alpha = draw(st.floats(min_value=-2.0, max_value=8.0, allow_nan=False))
        return (sft, aligned, alpha), {"out_dtype": out_dtype}

    return case()
