"""Gathered-row GEMV/GEMM in Triton: each program computes BLOCK_M selected output rows.

A program loads BLOCK_M indices once, then streams those weight rows (contiguous in the
``nn.Linear`` layout, so each row is full 128-byte transactions) in BLOCK_K slices against the
batch's inputs, accumulating in float32 with ``tl.dot`` (the batch padded to 16, the smallest
dot tile; batch 1-16 share one kernel). Unselected rows are never read. Above the measured
crossover density (``fallback.py``) the dense cuBLAS product runs instead.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tensor_utils.ops import KernelLaunch

from ...fallback import use_dense
from .._checks import check_gather

BLOCK_B = 16
CONFIGS = {  # dtype -> (BLOCK_M, BLOCK_K, num_warps)
    torch.float32: (32, 64, 4),
    torch.float16: (64, 128, 4),
    torch.bfloat16: (64, 128, 4),
}
MAX_BATCH = 16


@triton.jit
def _gather_rows_kernel(
    x_ptr,
    w_ptr,
    idx_ptr,
    out_ptr,
    B,
    K,
    k_sel,
    stride_xb,
    stride_wn,
    stride_ob,
    BLOCK_B: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    IEEE: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < k_sel
    rows = tl.load(idx_ptr + offs_m, mask=m_mask, other=0).to(tl.int64)
    offs_b = tl.arange(0, BLOCK_B)
    b_mask = offs_b < B
    acc = tl.zeros((BLOCK_M, BLOCK_B), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < K
        w = tl.load(
            w_ptr + rows[:, None] * stride_wn + offs_k[None, :],
            mask=m_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        xt = tl.load(
            x_ptr + offs_b[None, :] * stride_xb + offs_k[:, None],
            mask=k_mask[:, None] & b_mask[None, :],
            other=0.0,
        )
        if IEEE:
            acc += tl.dot(w, xt, input_precision="ieee")
        else:
            acc += tl.dot(w, xt)
    tl.store(
        out_ptr + offs_b[None, :] * stride_ob + offs_m[:, None],
        acc.to(out_ptr.dtype.element_ty),
        mask=m_mask[:, None] & b_mask[None, :],
    )


def gather_rows(x: torch.Tensor, weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    check_gather("gather_rows", x, weight, idx, rows=True)
    batch, k = x.shape[0], idx.shape[0]
    if x.dtype not in CONFIGS:
        raise ValueError(
            f"gather_rows: the Triton backend takes float32/16 and bfloat16, not {x.dtype}"
        )
    if use_dense(x.device.type, batch, k, weight.shape[0]) and not _interpreting():
        return (x @ weight.t()).index_select(1, idx.long())
    x = x.contiguous()
    weight = weight if weight.stride(1) == 1 else weight.contiguous()
    out = torch.empty(batch, k, dtype=x.dtype, device=x.device)
    if k == 0 or batch == 0:
        return out
    block_m, block_k, warps = CONFIGS[x.dtype]
    for b0 in range(0, batch, MAX_BATCH):  # batches above 16: one launch per 16 rows
        b1 = min(batch, b0 + MAX_BATCH)
        xb, ob = x[b0:b1], out[b0:b1]
        _gather_rows_kernel[(triton.cdiv(k, block_m),)](
            xb, weight, idx, ob, b1 - b0, x.shape[1], k, xb.stride(0), weight.stride(0),
            ob.stride(0), BLOCK_B=BLOCK_B, BLOCK_M=block_m, BLOCK_K=block_k,
            IEEE=x.dtype == torch.float32, num_warps=warps,  # pyright: ignore[reportCallIssue]
        )  # fmt: skip
    return out


def _interpreting() -> bool:
    from tensor_utils.ops import triton_interpreting

    return triton_interpreting()


def aot_launches():
    """Every configuration ``gather_rows`` launches (dtype x index dtype), for the sm_90 compile."""
    names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
    for dtype, (block_m, block_k, warps) in CONFIGS.items():
        t = names[dtype]
        for it in ("i32", "i64"):
            sig = {
                "x_ptr": f"*{t}", "w_ptr": f"*{t}", "idx_ptr": f"*{it}", "out_ptr": f"*{t}",
                "B": "i32", "K": "i32", "k_sel": "i32", "stride_xb": "i32", "stride_wn": "i32",
                "stride_ob": "i32",
            }  # fmt: skip
            consts = {
                "BLOCK_B": BLOCK_B, "BLOCK_M": block_m, "BLOCK_K": block_k,
                "IEEE": dtype == torch.float32,
            }  # fmt: skip
            yield KernelLaunch(_gather_rows_kernel, sig, consts, num_warps=warps, label=f"{t}-{it}")
