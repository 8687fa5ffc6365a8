"""Argument checks shared by the sparse GEMV ops (one-line ``ValueError``s)."""

from __future__ import annotations

import torch


def check_gather(
    name: str, x: torch.Tensor, weight: torch.Tensor, idx: torch.Tensor, *, rows: bool
):
    """``rows``: ``weight`` is (N, K) and ``x`` is (B, K); else ``weight`` is (N, M) and ``x`` is
    (B, len(idx)). Returns nothing; raises on the first problem."""
    if x.dim() != 2 or weight.dim() != 2:
        raise ValueError(f"{name}: x and weight must be 2-D, got {x.dim()}-D and {weight.dim()}-D")
    if idx.dim() != 1 or idx.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"{name}: idx must be a 1-D int32/int64 tensor, got {idx.dim()}-D {idx.dtype}"
        )
    if x.dtype != weight.dtype:
        raise ValueError(f"{name}: x is {x.dtype} but weight is {weight.dtype}")
    if not (x.device == weight.device == idx.device):
        raise ValueError(f"{name}: x, weight and idx must be on one device")
    if rows and x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{name}: x has {x.shape[1]} features but weight rows have {weight.shape[1]}"
        )
    if not rows and x.shape[1] != idx.shape[0]:
        raise ValueError(f"{name}: x has {x.shape[1]} columns but idx selects {idx.shape[0]} rows")


def check_blocks(
    name: str, x: torch.Tensor, weight_t: torch.Tensor, keep: torch.Tensor, block_size: int
):
    """``weight_t`` (N, M), ``x`` (B, N), ``keep`` one bool per block of ``block_size`` rows."""
    if x.dim() != 2 or weight_t.dim() != 2:
        raise ValueError(
            f"{name}: x and weight must be 2-D, got {x.dim()}-D and {weight_t.dim()}-D"
        )
    if block_size < 1:
        raise ValueError(f"{name}: block_size must be >= 1, got {block_size}")
    if x.dtype != weight_t.dtype:
        raise ValueError(f"{name}: x is {x.dtype} but weight is {weight_t.dtype}")
    if x.shape[1] != weight_t.shape[0]:
        raise ValueError(
            f"{name}: x has {x.shape[1]} columns but weight has {weight_t.shape[0]} rows"
        )
    blocks = -(-weight_t.shape[0] // block_size)
    if keep.dim() != 1 or keep.dtype != torch.bool or keep.shape[0] != blocks:
        raise ValueError(
            f"{name}: keep must be a 1-D bool tensor of {blocks} blocks, got "
            f"{tuple(keep.shape)} {keep.dtype}"
        )
    if not (x.device == weight_t.device == keep.device):
        raise ValueError(f"{name}: x, weight and keep must be on one device")


def check_threshold(name: str, x: torch.Tensor, weight_t: torch.Tensor, threshold) -> float:
    """``x`` (B, N) and ``weight_t`` (N, M) of one dtype and device, and one threshold (a
    number, or a one-element tensor): returned as a float."""
    if isinstance(threshold, torch.Tensor):
        if threshold.numel() != 1:
            raise ValueError(
                f"{name}: threshold must be one number (the projection's threshold), "
                f"got a tensor of shape {tuple(threshold.shape)}"
            )
        threshold = threshold.item()
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ValueError(f"{name}: threshold must be a number, got {type(threshold).__name__}")
    if x.dim() != 2 or weight_t.dim() != 2:
        raise ValueError(
            f"{name}: x and weight must be 2-D, got {x.dim()}-D and {weight_t.dim()}-D"
        )
    if x.dtype != weight_t.dtype:
        raise ValueError(f"{name}: x is {x.dtype} but weight is {weight_t.dtype}")
    if x.shape[1] != weight_t.shape[0]:
        raise ValueError(
            f"{name}: x has {x.shape[1]} columns but weight has {weight_t.shape[0]} rows"
        )
    if x.device != weight_t.device:
        raise ValueError(f"{name}: x and weight must be on one device")
    return float(threshold)
