"""Timestep normalization in Triton, forward and backward, parallel over time in chunks.

Forward, three launches over x [B, L, D] with G groups of d_g features:

1. ``_stats``: one program per (batch row, block of groups, chunk of T tokens) merges its tokens'
   group statistics (mean a_t, variance v_t over the d_g features) Welford-style into the
   chunk's (mean, variance); the chunk's count of valid tokens comes from the padding mask.
2. ``_carry``: one program per (batch row, block of groups) merges the chunks in order, starting
   from the prior / streamed state (count, mean, var), writing the statistics entering each
   chunk and the final state.
3. ``_output``: per chunk again, from its entering statistics, token by token: the running
   (mean, var), ``y``, and the per-token mean and 1/std kept for the backward ([B, L, G] float32).

Backward: with g_mu = -r sum_f dy w and g_var = -r^3/2 sum_f dy w (x - mu) per token, and c the
first position's running mean (a constant shift for accuracy), the gradient of everything
through the cumulative sums is two reverse cumulative sums over time,

    RA_t = sum_{s>=t} (g_mu_s - 2 (mu_s - c) g_var_s) / n_s,   RB_t = sum_{s>=t} g_var_s / n_s
    dx_t = dy_t w r_t + (RA_t + 2 RB_t (x_t - c)) / d_g

run as chunk sums (``_bwd_sums``), a suffix sum over chunks (PyTorch, [B, nc, G]) and a reverse
pass per chunk (``_bwd_output``, with dw/db by atomic adds). The prior's gradients are
``n0 (RA_0 + 2 RB_0 (prev_mean - c))`` and ``n0 RB_0``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tensor_utils.ops import KernelLaunch

_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
TILE = 1024  # groups x features per program
BLOCK_FS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def chunk_tokens(length: int) -> int:
    root = max(1, int(length**0.5))
    return max(4, min(256, 1 << (root - 1).bit_length()))


def blocks(dim: int, groups: int) -> tuple[int, int]:
    per = dim // groups
    bf = 1 << max(0, (per - 1).bit_length())
    if bf > BLOCK_FS[-1]:
        raise ValueError(
            f"timestep_norm (triton): {per} features per group is above {BLOCK_FS[-1]}"
        )
    return bf, max(1, TILE // bf)


@triton.jit
def _tile(pid, G, dg, BLOCK_G: tl.constexpr, BLOCK_F: tl.constexpr):
    n_gb = tl.cdiv(G, BLOCK_G)
    b = (pid // n_gb).to(tl.int64)
    g = (pid % n_gb) * BLOCK_G + tl.arange(0, BLOCK_G)
    f = tl.arange(0, BLOCK_F)
    gm = g < G
    m = gm[:, None] & (f[None, :] < dg)
    col = g[:, None] * dg + f[None, :]
    return b, g, gm, m, col


@triton.jit
def _token(x_ptr, row, col, m, dg):
    xv = tl.load(x_ptr + row + col, mask=m, other=0.0).to(tl.float32)
    a = tl.sum(xv, axis=1) / dg
    dev = tl.where(m, xv - a[:, None], 0.0)
    v = tl.sum(dev * dev, axis=1) / dg
    return xv, a, v


@triton.jit
def _valid(mask_ptr, b, t, L, g, HAS_MASK: tl.constexpr):
    """(valid token, inside the sequence) as vectors over the program's groups."""
    tt = g * 0 + t
    in_range = tt < L
    ok = in_range
    if HAS_MASK:
        pad = tl.load(mask_ptr + b * L + tt, mask=in_range, other=1)
        ok = ok & (pad == 0)
    return ok, in_range


@triton.jit
def _stats(
    x_ptr, mask_ptr, cm_ptr, cv_ptr, L, D, G, dg, chunk, n_chunks,
    HAS_MASK: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_F: tl.constexpr,
):  # fmt: skip
    b, g, gm, m, col = _tile(tl.program_id(0), G, dg, BLOCK_G, BLOCK_F)
    c = tl.program_id(1)
    cnt = tl.zeros([BLOCK_G], dtype=tl.float32)
    mu = tl.zeros([BLOCK_G], dtype=tl.float32)
    var = tl.zeros([BLOCK_G], dtype=tl.float32)
    for i in range(0, chunk):
        t = c * chunk + i
        ok, _in_range = _valid(mask_ptr, b, t, L, g, HAS_MASK)
        _, a, v = _token(x_ptr, (b * L + t) * D, col, m & ok[:, None], dg)
        n = cnt + tl.where(ok, 1.0, 0.0)
        inv = tl.where(ok, 1.0 / tl.maximum(n, 1.0), 0.0)
        delta = a - mu
        mu = mu + delta * inv
        var = var + inv * (v - var + delta * delta * (n - 1.0) * inv)
        cnt = n
    out = (b * n_chunks + c) * G + g
    tl.store(cm_ptr + out, mu, mask=gm)
    tl.store(cv_ptr + out, var, mask=gm)


@triton.jit
def _carry(
    cn_ptr, cm_ptr, cv_ptr, pn_ptr, pm_ptr, pv_ptr, im_ptr, iv_ptr, om_ptr, ov_ptr, G, n_chunks,
    BLOCK_G: tl.constexpr,
):  # fmt: skip
    n_gb = tl.cdiv(G, BLOCK_G)
    pid = tl.program_id(0)
    b = (pid // n_gb).to(tl.int64)
    g = (pid % n_gb) * BLOCK_G + tl.arange(0, BLOCK_G)
    gm = g < G
    n = tl.load(pn_ptr + b).to(tl.float32)
    mu = tl.load(pm_ptr + b * G + g, mask=gm, other=0.0).to(tl.float32)
    var = tl.load(pv_ptr + b * G + g, mask=gm, other=0.0).to(tl.float32)
    for c in range(0, n_chunks):
        out = (b * n_chunks + c) * G + g
        tl.store(im_ptr + out, mu, mask=gm)
        tl.store(iv_ptr + out, var, mask=gm)
        nb = tl.load(cn_ptr + b * n_chunks + c)
        mb = tl.load(cm_ptr + out, mask=gm, other=0.0)
        vb = tl.load(cv_ptr + out, mask=gm, other=0.0)
        tot = n + nb
        inv = 1.0 / tl.maximum(tot, 1.0)
        delta = mb - mu
        new_mu = mu + delta * nb * inv
        new_var = (n * var + nb * vb + delta * delta * n * nb * inv) * inv
        has = nb > 0
        mu = tl.where(has, new_mu, mu)
        var = tl.where(has, new_var, var)
        n = tot
    tl.store(om_ptr + b * G + g, mu, mask=gm)
    tl.store(ov_ptr + b * G + g, var, mask=gm)


@triton.jit
def _output(
    x_ptr, mask_ptr, w_ptr, bias_ptr, nin_ptr, im_ptr, iv_ptr, y_ptr, sm_ptr, sr_ptr,
    L, D, G, dg, chunk, n_chunks, eps,
    HAS_MASK: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_F: tl.constexpr,
):  # fmt: skip
    b, g, gm, m, col = _tile(tl.program_id(0), G, dg, BLOCK_G, BLOCK_F)
    c = tl.program_id(1)
    w = tl.load(w_ptr + col, mask=m, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + col, mask=m, other=0.0).to(tl.float32)
    cnt = tl.load(nin_ptr + b * n_chunks + c) + tl.zeros([BLOCK_G], dtype=tl.float32)
    stat = (b * n_chunks + c) * G + g
    mu = tl.load(im_ptr + stat, mask=gm, other=0.0)
    var = tl.load(iv_ptr + stat, mask=gm, other=0.0)
    for i in range(0, chunk):
        t = c * chunk + i
        ok, in_range = _valid(mask_ptr, b, t, L, g, HAS_MASK)
        row = (b * L + t) * D
        xv, a, v = _token(x_ptr, row, col, m & ok[:, None], dg)
        n = cnt + tl.where(ok, 1.0, 0.0)
        inv = tl.where(ok, 1.0 / tl.maximum(n, 1.0), 0.0)
        delta = a - mu
        mu = mu + delta * inv
        var = var + inv * (v - var + delta * delta * (n - 1.0) * inv)
        cnt = n
        rstd = 1.0 / tl.sqrt(tl.maximum(var, 0.0) + eps)
        yv = (xv - mu[:, None]) * rstd[:, None] * w + bias
        yv = tl.where(ok[:, None], yv, 0.0)
        tl.store(y_ptr + row + col, yv.to(y_ptr.dtype.element_ty), mask=m & in_range[:, None])
        tl.store(sm_ptr + (b * L + t) * G + g, mu, mask=gm & in_range)
        tl.store(sr_ptr + (b * L + t) * G + g, rstd, mask=gm & in_range)


@triton.jit
def _token_grads(
    x_ptr, dy_ptr, mask_ptr, sm_ptr, sr_ptr, w, b, t, L, D, G, dg, g, gm, m, col, cnt,
    dmf, dvf, shift, HAS_MASK: tl.constexpr,
):  # fmt: skip
    """Per-token (A', B) terms of the reverse sums, and what dx and dw need."""
    ok, in_range = _valid(mask_ptr, b, t, L, g, HAS_MASK)
    row = (b * L + t) * D
    mt = m & ok[:, None]
    xv = tl.load(x_ptr + row + col, mask=mt, other=0.0).to(tl.float32)
    dyv = tl.load(dy_ptr + row + col, mask=mt, other=0.0).to(tl.float32)
    mu = tl.load(sm_ptr + (b * L + t) * G + g, mask=gm & in_range, other=0.0)
    r = tl.load(sr_ptr + (b * L + t) * G + g, mask=gm & in_range, other=0.0)
    dyw = dyv * w
    g_mu = -r * tl.sum(dyw, axis=1)
    g_var = -0.5 * r * r * r * tl.sum(dyw * (xv - mu[:, None]), axis=1)
    is_last = t == L - 1
    g_mu = g_mu + tl.where(is_last, dmf, 0.0)
    g_var = g_var + tl.where(is_last, dvf, 0.0)
    inv = 1.0 / tl.maximum(cnt, 1.0)
    ta = tl.where(in_range, (g_mu - 2.0 * (mu - shift) * g_var) * inv, 0.0)
    tb = tl.where(in_range, g_var * inv, 0.0)
    return ok, in_range, row, xv, dyv, mu, r, ta, tb


@triton.jit
def _bwd_sums(
    x_ptr, dy_ptr, mask_ptr, w_ptr, sm_ptr, sr_ptr, nend_ptr, dmf_ptr, dvf_ptr, sa_ptr, sb_ptr,
    L, D, G, dg, chunk, n_chunks,
    HAS_MASK: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_F: tl.constexpr,
):  # fmt: skip
    b, g, gm, m, col = _tile(tl.program_id(0), G, dg, BLOCK_G, BLOCK_F)
    c = tl.program_id(1)
    w = tl.load(w_ptr + col, mask=m, other=0.0).to(tl.float32)
    shift = tl.load(sm_ptr + b * L * G + g, mask=gm, other=0.0)
    dmf = tl.load(dmf_ptr + b * G + g, mask=gm, other=0.0)
    dvf = tl.load(dvf_ptr + b * G + g, mask=gm, other=0.0)
    # count after the chunk's last token
    cnt = tl.load(nend_ptr + b * n_chunks + c) + tl.zeros([BLOCK_G], dtype=tl.float32)
    sa = tl.zeros([BLOCK_G], dtype=tl.float32)
    sb = tl.zeros([BLOCK_G], dtype=tl.float32)
    for i in range(0, chunk):
        t = c * chunk + chunk - 1 - i
        ok, _in_range, _row, _xv, _dyv, _mu, _r, ta, tb = _token_grads(
            x_ptr, dy_ptr, mask_ptr, sm_ptr, sr_ptr, w, b, t, L, D, G, dg, g, gm, m, col, cnt,
            dmf, dvf, shift, HAS_MASK,
        )  # fmt: skip
        sa += ta
        sb += tb
        cnt = cnt - tl.where(ok, 1.0, 0.0)
    out = (b * n_chunks + c) * G + g
    tl.store(sa_ptr + out, sa, mask=gm)
    tl.store(sb_ptr + out, sb, mask=gm)


@triton.jit
def _bwd_output(
    x_ptr, dy_ptr, mask_ptr, w_ptr, sm_ptr, sr_ptr, nend_ptr, dmf_ptr, dvf_ptr, ra_ptr, rb_ptr,
    dx_ptr, dw_ptr, db_ptr, L, D, G, dg, chunk, n_chunks,
    HAS_MASK: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_F: tl.constexpr,
):  # fmt: skip
    b, g, gm, m, col = _tile(tl.program_id(0), G, dg, BLOCK_G, BLOCK_F)
    c = tl.program_id(1)
    w = tl.load(w_ptr + col, mask=m, other=0.0).to(tl.float32)
    shift = tl.load(sm_ptr + b * L * G + g, mask=gm, other=0.0)
    dmf = tl.load(dmf_ptr + b * G + g, mask=gm, other=0.0)
    dvf = tl.load(dvf_ptr + b * G + g, mask=gm, other=0.0)
    cnt = tl.load(nend_ptr + b * n_chunks + c) + tl.zeros([BLOCK_G], dtype=tl.float32)
    out = (b * n_chunks + c) * G + g
    ra = tl.load(ra_ptr + out, mask=gm, other=0.0)  # sums over the later chunks
    rb = tl.load(rb_ptr + out, mask=gm, other=0.0)
    acc_w = tl.zeros([BLOCK_G, BLOCK_F], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_G, BLOCK_F], dtype=tl.float32)
    for i in range(0, chunk):
        t = c * chunk + chunk - 1 - i
        ok, in_range, row, xv, dyv, mu, r, ta, tb = _token_grads(
            x_ptr, dy_ptr, mask_ptr, sm_ptr, sr_ptr, w, b, t, L, D, G, dg, g, gm, m, col, cnt,
            dmf, dvf, shift, HAS_MASK,
        )  # fmt: skip
        ra += ta
        rb += tb
        dxv = dyv * w * r[:, None] + (ra[:, None] + 2.0 * rb[:, None] * (xv - shift[:, None])) / dg
        dxv = tl.where(ok[:, None], dxv, 0.0)
        tl.store(dx_ptr + row + col, dxv.to(dx_ptr.dtype.element_ty), mask=m & in_range[:, None])
        acc_w += dyv * (xv - mu[:, None]) * r[:, None]
        acc_b += dyv
        cnt = cnt - tl.where(ok, 1.0, 0.0)
    tl.atomic_add(dw_ptr + col, acc_w, mask=m)
    tl.atomic_add(db_ptr + col, acc_b, mask=m)


def _check(x, prev_mean, weight):
    if x.dtype not in _DTYPES:
        raise TypeError(
            f"timestep_norm (triton): x dtype {x.dtype} is not supported (float32/16, bfloat16)"
        )
    if x.shape[-1] % prev_mean.shape[-1]:
        raise ValueError(
            f"timestep_norm: {prev_mean.shape[-1]} groups do not divide {x.shape[-1]} features"
        )


def _layout(x, groups, padding_mask):
    batch, length, _dim = x.shape
    chunk = chunk_tokens(length)
    n_chunks = triton.cdiv(length, chunk)
    valid = (
        torch.ones(batch, length, device=x.device, dtype=torch.float32)
        if padding_mask is None
        else (~padding_mask.to(torch.bool)).float()
    )
    pad = n_chunks * chunk - length
    per_chunk = torch.nn.functional.pad(valid, (0, pad)).view(batch, n_chunks, chunk).sum(-1)
    return chunk, n_chunks, per_chunk


def _forward(x, prev_count, prev_mean, prev_var, weight, bias, padding_mask, eps):
    batch, length, dim = x.shape
    groups = prev_mean.shape[-1]
    dg = dim // groups
    bf, bg = blocks(dim, groups)
    chunk, n_chunks, per_chunk = _layout(x, groups, padding_mask)
    dev = x.device
    grid = batch * triton.cdiv(groups, bg)
    mask_arg = padding_mask.to(torch.uint8).contiguous() if padding_mask is not None else x
    has_mask = padding_mask is not None
    stat = torch.empty(batch, n_chunks, groups, device=dev, dtype=torch.float32)
    cm, cv, im, iv = stat, torch.empty_like(stat), torch.empty_like(stat), torch.empty_like(stat)
    om = torch.empty(batch, groups, device=dev, dtype=torch.float32)
    ov = torch.empty_like(om)
    _stats[(grid, n_chunks)](
        x, mask_arg, cm, cv, length, dim, groups, dg, chunk, n_chunks,
        HAS_MASK=has_mask, BLOCK_G=bg, BLOCK_F=bf,  # pyright: ignore[reportArgumentType]  (Triton takes ints for tl.constexpr)
    )  # fmt: skip
    pn = prev_count.to(torch.float32).contiguous()
    _carry[(grid,)](
        per_chunk.contiguous(), cm, cv, pn, prev_mean.float().contiguous(),
        prev_var.float().contiguous(), im, iv, om, ov, groups, n_chunks, BLOCK_G=bg,  # pyright: ignore[reportArgumentType]  (Triton takes ints for tl.constexpr)
    )  # fmt: skip
    n_in = (pn[:, None] + torch.cumsum(per_chunk, 1) - per_chunk).contiguous()
    y = torch.empty_like(x)
    sm = torch.empty(batch, length, groups, device=dev, dtype=torch.float32)
    sr = torch.empty_like(sm)
    _output[(grid, n_chunks)](
        x, mask_arg, weight.contiguous(), bias.contiguous(), n_in, im, iv, y, sm, sr,
        length, dim, groups, dg, chunk, n_chunks, eps,
        HAS_MASK=has_mask, BLOCK_G=bg, BLOCK_F=bf,  # pyright: ignore[reportArgumentType]  (Triton takes ints for tl.constexpr)
    )  # fmt: skip
    count = prev_count + per_chunk.sum(1).to(prev_count.dtype)
    empty = (count == 0)[:, None]
    om = torch.where(empty, prev_mean.float(), om)
    ov = torch.where(empty, prev_var.float(), ov)
    return y, count, om.to(prev_mean.dtype), ov.to(prev_var.dtype), sm, sr, n_in + per_chunk


def _backward(x, padding_mask, weight, prev_count, prev_mean, sm, sr, n_end, dy, dmf, dvf):
    batch, length, dim = x.shape
    groups = prev_mean.shape[-1]
    dg = dim // groups
    bf, bg = blocks(dim, groups)
    chunk, n_chunks, _ = _layout(x, groups, padding_mask)
    dev = x.device
    grid = batch * triton.cdiv(groups, bg)
    mask_arg = padding_mask.to(torch.uint8).contiguous() if padding_mask is not None else x
    has_mask = padding_mask is not None
    sa = torch.empty(batch, n_chunks, groups, device=dev, dtype=torch.float32)
    sb = torch.empty_like(sa)
    w = weight.contiguous()
    _bwd_sums[(grid, n_chunks)](
        x, dy, mask_arg, w, sm, sr, n_end, dmf, dvf, sa, sb, length, dim, groups, dg, chunk,
        n_chunks, HAS_MASK=has_mask, BLOCK_G=bg, BLOCK_F=bf,  # pyright: ignore[reportArgumentType]  (Triton takes ints for tl.constexpr)
    )  # fmt: skip
    # sums over the chunks after each chunk (exclusive suffix sums)
    ra = (sa.flip(1).cumsum(1).flip(1) - sa).contiguous()
    rb = (sb.flip(1).cumsum(1).flip(1) - sb).contiguous()
    dx = torch.empty_like(x)
    dw = torch.zeros(dim, device=dev, dtype=torch.float32)
    db = torch.zeros(dim, device=dev, dtype=torch.float32)
    _bwd_output[(grid, n_chunks)](
        x, dy, mask_arg, w, sm, sr, n_end, dmf, dvf, ra, rb, dx, dw, db, length, dim, groups,
        dg, chunk, n_chunks, HAS_MASK=has_mask, BLOCK_G=bg, BLOCK_F=bf,  # pyright: ignore[reportArgumentType]  (Triton takes ints for tl.constexpr)
    )  # fmt: skip
    n0 = prev_count.float()[:, None]
    total_a, total_b = sa.sum(1), sb.sum(1)
    shift = sm[:, 0] if length else prev_mean.float()
    d_mean = n0 * (total_a + 2.0 * total_b * (prev_mean.float() - shift))
    d_var = n0 * total_b
    return dx, d_mean, d_var, dw, db


class _TimestepNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, prev_count, prev_mean, prev_var, weight, bias, padding_mask, eps):
        y, count, mean, var, sm, sr, n_end = _forward(
            x, prev_count, prev_mean, prev_var, weight, bias, padding_mask, eps
        )
        ctx.save_for_backward(x, padding_mask, weight, prev_count, prev_mean, sm, sr, n_end)
        ctx.mark_non_differentiable(count)
        return y, count, mean, var

    @staticmethod
    def backward(ctx, dy, _dcount, dmean, dvar):
        x, padding_mask, weight, prev_count, prev_mean, sm, sr, n_end = ctx.saved_tensors
        batch, groups = prev_mean.shape
        dy = torch.zeros_like(x) if dy is None else dy.to(x.dtype).contiguous()
        zeros = torch.zeros(batch, groups, device=x.device, dtype=torch.float32)
        dmf = zeros if dmean is None else dmean.float().contiguous()
        dvf = zeros if dvar is None else dvar.float().contiguous()
        dx, d_mean, d_var, dw, db = _backward(
            x, padding_mask, weight, prev_count, prev_mean, sm, sr, n_end, dy, dmf, dvf
        )
        return (
            dx, None, d_mean.to(prev_mean.dtype), d_var.to(prev_mean.dtype),
            dw.to(weight.dtype), db.to(weight.dtype), None, None,
        )  # fmt: skip


def timestep_norm(
    x: torch.Tensor,
    prev_count: torch.Tensor,
    prev_mean: torch.Tensor,
    prev_var: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    _check(x, prev_mean, weight)
    if x.shape[1] == 0:
        return x.clone(), prev_count.clone(), prev_mean.clone(), prev_var.clone()
    return _TimestepNorm.apply(
        x.contiguous(), prev_count, prev_mean, prev_var, weight, bias, padding_mask, float(eps)
    )


def aot_launches():
    """Every kernel at every (x dtype, features-per-group block, mask) the backend launches."""
    ints = {"L": "i32", "D": "i32", "G": "i32", "dg": "i32", "chunk": "i32", "n_chunks": "i32"}
    for bf in BLOCK_FS:
        bg = max(1, TILE // bf)
        const = {"BLOCK_G": bg, "BLOCK_F": bf}
        for dt in _DTYPES.values():
            for has_mask in (False, True):
                mk = "*u8" if has_mask else f"*{dt}"
                tag = f"{dt}-F{bf}-mask={has_mask}"
                c = {**const, "HAS_MASK": has_mask}
                yield KernelLaunch(
                    _stats,
                    {"x_ptr": f"*{dt}", "mask_ptr": mk, "cm_ptr": "*fp32", "cv_ptr": "*fp32",
                     **ints},
                    c, label=f"stats-{tag}",
                )  # fmt: skip
                yield KernelLaunch(
                    _output,
                    {"x_ptr": f"*{dt}", "mask_ptr": mk, "w_ptr": f"*{dt}", "bias_ptr": f"*{dt}",
                     "nin_ptr": "*fp32", "im_ptr": "*fp32", "iv_ptr": "*fp32", "y_ptr": f"*{dt}",
                     "sm_ptr": "*fp32", "sr_ptr": "*fp32", **ints, "eps": "fp32"},
                    c, label=f"output-{tag}",
                )  # fmt: skip
                grads = {"x_ptr": f"*{dt}", "dy_ptr": f"*{dt}", "mask_ptr": mk,
                         "w_ptr": f"*{dt}", "sm_ptr": "*fp32", "sr_ptr": "*fp32",
                         "nend_ptr": "*fp32", "dmf_ptr": "*fp32", "dvf_ptr": "*fp32"}  # fmt: skip
                yield KernelLaunch(
                    _bwd_sums, {**grads, "sa_ptr": "*fp32", "sb_ptr": "*fp32", **ints}, c,
                    label=f"bwd_sums-{tag}",
                )  # fmt: skip
                yield KernelLaunch(
                    _bwd_output,
                    {**grads, "ra_ptr": "*fp32", "rb_ptr": "*fp32", "dx_ptr": f"*{dt}",
                     "dw_ptr": "*fp32", "db_ptr": "*fp32", **ints},
                    c, label=f"bwd_output-{tag}",
                )  # fmt: skip
        yield KernelLaunch(
            _carry,
            {"cn_ptr": "*fp32", "cm_ptr": "*fp32", "cv_ptr": "*fp32", "pn_ptr": "*fp32",
             "pm_ptr": "*fp32", "pv_ptr": "*fp32", "im_ptr": "*fp32", "iv_ptr": "*fp32",
             "om_ptr": "*fp32", "ov_ptr": "*fp32", "G": "i32", "n_chunks": "i32"},
            {"BLOCK_G": bg}, label=f"carry-G{bg}",
        )  # fmt: skip
