"""Block-wise 8-bit moments: Triton on CUDA, the PyTorch reference elsewhere.

Registered as ``galore_optim::quantize_blockwise``, ``galore_optim::dequantize_blockwise`` and
``galore_optim::adam8bit_moments`` (``tensor_utils.ops``).
"""

from tensor_utils.ops import Backend, Op

from . import naive
from .naive import QBLOCK, code_dtype, num_blocks

_TRITON = "galore_optim.ops.quant8.triton"
_CASES = "galore_optim.ops.quant8.cases"


def _triton(name: str) -> Backend:
    return Backend("triton", f"{_TRITON}:{name}", aot=f"{_TRITON}:aot_launches")


quantize_blockwise = Op(
    "galore_optim::quantize_blockwise",
    reference=naive.quantize_blockwise,
    backends=[_triton("quantize_blockwise")],
    cases=f"{_CASES}:quantize_cases",
    check=f"{_CASES}:codes_within_one_step",
)
dequantize_blockwise = Op(
    "galore_optim::dequantize_blockwise",
    reference=naive.dequantize_blockwise,
    backends=[_triton("dequantize_blockwise")],
    cases=f"{_CASES}:dequantize_cases",
)
adam8bit_moments = Op(
    "galore_optim::adam8bit_moments",
    reference=naive.adam8bit_moments,
    backends=[_triton("adam8bit_moments")],
    cases=f"{_CASES}:adam8bit_cases",
    check=f"{_CASES}:codes_within_one_step",
    mutates_args=("m_codes", "m_absmax", "v_codes", "v_absmax"),
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
