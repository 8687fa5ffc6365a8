"""The safetensors dtype names and their torch equivalents."""

from __future__ import annotations

import torch

from .errors import UnsupportedDtypeError

SAFETENSORS_TO_TORCH: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "U16": torch.uint16,
    "I32": torch.int32,
    "U32": torch.uint32,
    "I64": torch.int64,
    "U64": torch.uint64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "C64": torch.complex64,
}
TORCH_TO_SAFETENSORS: dict[torch.dtype, str] = {v: k for k, v in SAFETENSORS_TO_TORCH.items()}


def torch_dtype(name: object, *, where: str = "") -> torch.dtype:
    """Torch dtype for a safetensors dtype name (any header value is accepted: a non-string is
    an unknown dtype), or a one-line error naming ``where``."""
    dtype = SAFETENSORS_TO_TORCH.get(name) if isinstance(name, str) else None
    if dtype is None:
        known = ", ".join(SAFETENSORS_TO_TORCH)
        raise UnsupportedDtypeError(
            f"{where}: unknown dtype {name!r} (known: {known})"
            if where
            else f"unknown dtype {name!r}"
        )
    return dtype


def safetensors_dtype(dtype: torch.dtype, *, where: str = "") -> str:
    """Safetensors dtype name for a torch dtype; quantized and other exotic dtypes are refused."""
    try:
        return TORCH_TO_SAFETENSORS[dtype]
    except KeyError:
        prefix = f"{where}: " if where else ""
        raise UnsupportedDtypeError(
            f"{prefix}dtype {dtype} cannot be stored in safetensors"
        ) from None
