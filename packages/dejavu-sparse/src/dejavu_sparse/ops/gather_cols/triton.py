"""Gathered-column GEMV/GEMM in Triton (split over the selected rows, float32 partials).

The weight is stored transposed, one contiguous row per input channel. Program (n, s) owns
BLOCK_N output columns and the s-th share of the selected rows: it streams BLOCK_J of those rows
at a time (row indices loaded once per step) against the batch's selected inputs with ``tl.dot``
(batch padded to 16) and writes its float32 partial sum; the partials are summed and rounded
once. Splitting over the selected rows keeps every SM busy at batch 1 without atomics, so
bfloat16 works (Triton has no bfloat16 ``atomic_add``). Above the measured crossover density
(``fallback.py``) one dense cuBLAS product runs instead.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tensor_utils.ops import KernelLaunch

from ...fallback import use_dense
from .._checks import check_gather

BLOCK_B = 16
CONFIGS = {  # dtype -> (BLOCK_J, BLOCK_N, num_warps)
    torch.float32: (32, 64, 4),
    torch.float16: (64, 128, 4),
    torch.bfloat16: (64, 128, 4),
}
MAX_BATCH = 16
PROGRAMS_PER_SM = 4


@triton.jit
def _gather_cols_kernel(
    x_ptr,
    wt_ptr,
    idx_ptr,
    part_ptr,
    B,
    M,
    k_sel,
    rows_per_split,
    stride_xb,
    stride_wk,
    BLOCK_B: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_N: tl.constexpr,
    IEEE: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < M
    offs_b = tl.arange(0, BLOCK_B)
    b_mask = offs_b < B
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    start = pid_s * rows_per_split
    for j0 in range(start, start + rows_per_split, BLOCK_J):
        offs_j = j0 + tl.arange(0, BLOCK_J)
        j_mask = offs_j < k_sel
        rows = tl.load(idx_ptr + offs_j, mask=j_mask, other=0).to(tl.int64)
        w = tl.load(
            wt_ptr + rows[:, None] * stride_wk + offs_n[None, :],
            mask=j_mask[:, None] & n_mask[None, :],
            other=0.0,
        )
        xs = tl.load(
            x_ptr + offs_b[:, None] * stride_xb + offs_j[None, :],
            mask=b_mask[:, None] & j_mask[None, :],
            other=0.0,
        )
        if IEEE:
            acc += tl.dot(xs, w, input_precision="ieee")
        else:
            acc += tl.dot(xs, w)
    part = part_ptr + pid_s.to(tl.int64) * B * M
    tl.store(
        part + offs_b[:, None] * M + offs_n[None, :], acc, mask=b_mask[:, None] & n_mask[None, :]
    )


def _splits(k: int, m: int, block_j: int, block_n: int, device: torch.device) -> int:
    tiles = triton.cdiv(m, block_n)
    sms = (
        torch.cuda.get_device_properties(device).multi_processor_count
        if device.type == "cuda"
        else 4
    )
    want = triton.cdiv(PROGRAMS_PER_SM * sms, tiles)
    return max(1, min(want, triton.cdiv(k, block_j)))


def gather_cols(x: torch.Tensor, weight_t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    check_gather("gather_cols", x, weight_t, idx, rows=False)
    batch, k = x.shape
    n, m = weight_t.shape
    if x.dtype not in CONFIGS:
        raise ValueError(
            f"gather_cols: the Triton backend takes float32/16 and bfloat16, not {x.dtype}"
        )
    if use_dense(x.device.type, batch, k, n) and not _interpreting():
        dense = torch.zeros(batch, n, dtype=x.dtype, device=x.device)
        dense.index_add_(1, idx.long(), x)  # repeated rows add up
        return dense @ weight_t
    if k == 0 or batch == 0:
        return torch.zeros(batch, m, dtype=x.dtype, device=x.device)
    x = x.contiguous()
    weight_t = weight_t if weight_t.stride(1) == 1 else weight_t.contiguous()
    block_j, block_n, warps = CONFIGS[x.dtype]
    splits = _splits(k, m, block_j, block_n, x.device)
    rows_per_split = triton.cdiv(triton.cdiv(k, splits), block_j) * block_j
    splits = triton.cdiv(k, rows_per_split)
    out = torch.empty(batch, m, dtype=x.dtype, device=x.device)
    for b0 in range(0, batch, MAX_BATCH):  # batches above 16: one launch per 16 rows
        b1 = min(batch, b0 + MAX_BATCH)
        xb = x[b0:b1]
        part = torch.empty(splits, b1 - b0, m, dtype=torch.float32, device=x.device)
        grid = (triton.cdiv(m, block_n), splits)
        _gather_cols_kernel[grid](
            xb, weight_t, idx, part, b1 - b0, m, k, rows_per_split, xb.stride(0),
            weight_t.stride(0), BLOCK_B=BLOCK_B, BLOCK_J=block_j, BLOCK_N=block_n,
            IEEE=x.dtype == torch.float32, num_warps=warps,  # pyright: ignore[reportCallIssue]
        )  # fmt: skip
        out[b0:b1] = part.sum(0)
    return out


def _interpreting() -> bool:
    from tensor_utils.ops import triton_interpreting

    return triton_interpreting()


def aot_launches():
    """Every configuration ``gather_cols`` launches (dtype x index dtype), for the sm_90 compile."""
    names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
    for dtype, (block_j, block_n, warps) in CONFIGS.items():
        t = names[dtype]
        for it in ("i32", "i64"):
            sig = {
                "x_ptr": f"*{t}", "wt_ptr": f"*{t}", "idx_ptr": f"*{it}", "part_ptr": "*fp32",
                "B": "i32", "M": "i32", "k_sel": "i32", "rows_per_split": "i32",
                "stride_xb": "i32", "stride_wk": "i32",
            }  # fmt: skip
            consts = {
                "BLOCK_B": BLOCK_B, "BLOCK_J": block_j, "BLOCK_N": block_n,
                "IEEE": dtype == torch.float32,
            }  # fmt: skip
            yield KernelLaunch(_gather_cols_kernel, sig, consts, num_warps=warps, label=f"{t}-{it}")
