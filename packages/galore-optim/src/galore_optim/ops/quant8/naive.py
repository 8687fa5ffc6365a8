"""Reference block-wise 8-bit quantization of Adam moments (the spec for the Triton kernels).

A moment tensor is flattened and cut into blocks of ``QBLOCK`` (256) values; each block keeps
one fp32 ``absmax`` and one byte per value. The code is companded so small values keep
precision (Adam's second moment spans many decades):

- ``signed`` (first moment ``m``): ``u = x / absmax`` in ``[-1, 1]``,
  ``code = round(127 * sign(u) * sqrt(|u|))`` stored as int8; ``x ≈ sign(c) c² absmax`` with
  ``c = code / 127``.
- ``unsigned`` (second moment ``v >= 0``): ``code = round(255 * u ** (1/4))`` stored as uint8;
  ``x ≈ (code / 255) ** 4 * absmax`` (values down to ~2e-10 of the block max stay non-zero).

Rounding is ``floor(y + 0.5)`` (not half-to-even) so the kernel can match it exactly. An
all-zero block has ``absmax = 0`` and decodes to zeros.
"""

from __future__ import annotations

import torch

QBLOCK = 256
KINDS = ("signed", "unsigned")


def num_blocks(numel: int) -> int:
    return (numel + QBLOCK - 1) // QBLOCK


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown quantization kind {kind!r} (choose from {', '.join(KINDS)})")


def code_dtype(kind: str) -> torch.dtype:
    _check_kind(kind)
    return torch.int8 if kind == "signed" else torch.uint8


def _blocks(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(-1).float()
    pad = num_blocks(flat.numel()) * QBLOCK - flat.numel()
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, QBLOCK)


def quantize_blockwise(x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes, absmax)``: codes of ``x``'s shape (int8 / uint8), fp32 absmax per block."""
    _check_kind(kind)
    if not x.is_floating_point():
        raise TypeError(f"quantize_blockwise needs a float tensor, got {x.dtype}")
    blocks = _blocks(x)
    absmax = blocks.abs().amax(dim=1)
    safe = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    u = blocks / safe[:, None]
    if kind == "signed":
        y = torch.sqrt(u.abs()) * 127.0
        code = torch.sign(u) * torch.floor(y + 0.5)
        code = code.clamp(-127, 127).to(torch.int8)
    else:
        y = torch.sqrt(torch.sqrt(u.clamp_min(0.0))) * 255.0
        code = torch.floor(y + 0.5).clamp(0, 255).to(torch.uint8)
    codes = code.reshape(-1)[: x.numel()].reshape(x.shape)
    return codes, absmax


def dequantize_blockwise(codes: torch.Tensor, absmax: torch.Tensor, kind: str) -> torch.Tensor:
    """fp32 tensor of ``codes``'s shape."""
    _check_kind(kind)
    if codes.dtype != code_dtype(kind):
        raise TypeError(f"{kind} codes must be {code_dtype(kind)}, got {codes.dtype}")
    if absmax.numel() != num_blocks(codes.numel()):
        raise ValueError(
            f"absmax has {absmax.numel()} blocks, codes need {num_blocks(codes.numel())}"
        )
    c = _blocks(codes.float() if kind == "signed" else codes.to(torch.int16).float())
    if kind == "signed":
        c = c / 127.0
        x = torch.sign(c) * c * c
    else:
        c = c / 255.0
        c2 = c * c
        x = c2 * c2
    x = x * absmax.float()[:, None]
    return x.reshape(-1)[: codes.numel()].reshape(codes.shape)


def adam8bit_moments(
    grad: torch.Tensor,
    m_codes: torch.Tensor,
    m_absmax: torch.Tensor,
    v_codes: torch.Tensor,
    v_absmax: torch.Tensor,
    beta1: float,
    beta2: float,
    eps: float,
) -> torch.Tensor:
    """Dequantize the moments, update them with ``grad`` (fp32 math), requantize in place, and
    return ``N = m / (sqrt(v) + eps)`` (fp32, from the unquantized new moments)."""
    g = grad.float()
    m = dequantize_blockwise(m_codes, m_absmax, "signed")
    v = dequantize_blockwise(v_codes, v_absmax, "unsigned")
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    norm = m / (torch.sqrt(v) + eps)
    mc, ma = quantize_blockwise(m, "signed")
    vc, va = quantize_blockwise(v, "unsigned")
    m_codes.copy_(mc)
    m_absmax.copy_(ma)
    v_codes.copy_(vc)
    v_absmax.copy_(va)
    return norm
