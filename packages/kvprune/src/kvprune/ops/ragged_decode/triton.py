# Triton's language is not Python that pyright can type: kernel bodies (tl.static_range,
# tl.tuple, None-indexing) and launches `kernel[grid](..., BLOCK=64, num_warps=4)`, which
# Triton types as the kernel's own signature. Off for this file only; host code keeps the
# other rules (optional access, attributes, returns).
# pyright: reportArgumentType=false, reportCallIssue=false, reportGeneralTypeIssues=false, reportOperatorIssue=false, reportIndexIssue=false
"""Split-K (flash-decoding) Triton kernel for decode attention over the ragged per-head cache.

Pass 1, grid ``(segments, splits)``: a program owns one KV group (all ``G`` query heads that
share the segment, padded to a 16-row tile so ``tl.dot`` runs on tensor cores), so each cached
key/value row is read from memory exactly once per step. It walks its share
``[split * CHUNK, (split + 1) * CHUNK)`` of the segment's rows in ``BLOCK_N`` tiles with an
online softmax (base 2: the scale is folded with ``log2 e``) and writes a partial
``(m, l, acc)`` of only the ``G`` real rows. With ``WEIGHTS`` it also writes each row's raw
logits into ``weights``.

Pass 2, grid ``(segments, G * D_PARTS [+ splits])``: each of the first programs merges the
partials of one query head for ``BLOCK_DM`` output columns (32 by default: more, smaller
programs finish sooner); with weights, the programs after them turn one split's logits into
probabilities ``exp(logit - lse)``. Empty splits store ``m = -inf`` and a zero ``acc``, so the
merge issues all its loads at once without first finding out which splits held rows.

Two launches, not one: a single-launch variant (the last program of a segment to finish
merges its partials, behind a per-segment arrival counter) measured 1.5-2.8x slower at batch 1
on the H100 in two designs (one head at a time, and all heads in one vectorised step), and a
balanced-work-list variant with an in-kernel merge 1.2-2x slower; all three were removed
(``docs/benchmarks/kvprune.md``). On Hopper, pass 2 is launched with programmatic dependent
launch (``gdc_launch_dependents`` in pass 1, ``gdc_wait`` in pass 2), so its launch overlaps
pass 1 (``pdl=False`` or ``KVPRUNE_PDL=0`` turns it off).

The split count comes from the longest segment and the SM count (enough programs to keep every
SM streaming, never a split without a tile of rows); ``num_splits``/``block_n`` override it.
Tiles, stages and programs per SM: ``default_tiles`` (two regimes, from H100 probes).

Same contract as ``naive.ragged_decode_attention``.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .naive import check_args

LOG2E = 1.4426950408889634


@triton.jit
def _split_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    off_ptr,
    len_ptr,
    w_ptr,
    m_ptr,
    l_ptr,
    acc_ptr,
    qk_scale,
    G,
    D,
    stride_k,
    stride_v,
    CHUNK,
    NUM_SPLITS: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    EVEN_D: tl.constexpr,
    WEIGHTS: tl.constexpr,
    PRECISION: tl.constexpr,
    GDC: tl.constexpr,
):
    if GDC:  # let the merge (launched with PDL) get scheduled now; it waits for our stores
        tl.extra.cuda.gdc_launch_dependents()  # pyright: ignore[reportAttributeAccessIssue]  (loaded at import by triton, not in its stubs)
    seg = tl.program_id(0)
    split = tl.program_id(1)
    off = tl.load(off_ptr + seg).to(tl.int64)
    length = tl.load(len_ptr + seg).to(tl.int32)
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    gmask = g < G
    dmask = d < D
    q = tl.load(
        q_ptr + seg.to(tl.int64) * G * D + g[:, None] * D + d[None, :],
        mask=gmask[:, None] & dmask[None, :],
        other=0.0,
    )
    start = split * CHUNK
    end = tl.minimum(start + CHUNK, length)
    m_i = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], dtype=tl.float32)
    k_base = k_ptr + off * stride_k
    v_base = v_ptr + off * stride_v
    for n0 in range(start, end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        nmask = n < end
        if EVEN_D:  # noqa: SIM108 (a constexpr if: Triton compiles only the taken branch)
            kv_mask = nmask[:, None]
        else:
            kv_mask = nmask[:, None] & dmask[None, :]
        k = tl.load(k_base + n[:, None] * stride_k + d[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # log2 units
        s = tl.where(nmask[None, :], s, float("-inf"))
        if WEIGHTS:
            tl.store(
                w_ptr + (off + n[None, :]) * G + g[:, None], s, mask=gmask[:, None] & nmask[None, :]
            )
        m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: every tile holds at least one row
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + n[:, None] * stride_v + d[None, :], mask=kv_mask, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    part = seg.to(tl.int64) * NUM_SPLITS + split
    tl.store(m_ptr + part * BLOCK_G + g, m_i)
    tl.store(l_ptr + part * BLOCK_G + g, l_i)
    # written even by an empty split (zeros): the merge then loads every partial at once,
    # without first learning which splits held rows (one round trip to L2, not two)
    tl.store(
        acc_ptr + (part * G + g[:, None]) * D + d[None, :],
        acc,
        mask=gmask[:, None] & dmask[None, :],
    )


@triton.jit
def _merge_kernel(
    out_ptr,
    off_ptr,
    len_ptr,
    w_ptr,
    m_ptr,
    l_ptr,
    acc_ptr,
    G,
    D,
    CHUNK,
    NUM_SPLITS: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DM: tl.constexpr,
    D_PARTS: tl.constexpr,
    GDC: tl.constexpr,
):
    if GDC:  # launched early (PDL): wait until pass 1 has finished and its stores are visible
        tl.extra.cuda.gdc_wait()  # pyright: ignore[reportAttributeAccessIssue]  (loaded at import by triton, not in its stubs)
    seg = tl.program_id(0)
    pid = tl.program_id(1)
    sp = tl.arange(0, NUM_SPLITS)
    base = seg.to(tl.int64) * NUM_SPLITS + sp
    # The two branches use distinct names: compiled Triton merges same-named values of an
    # if/else and rejects differing shapes.
    if pid < G * D_PARTS:  # BLOCK_DM output columns of query head `pid // D_PARTS`
        head = pid // D_PARTS
        d = (pid % D_PARTS) * BLOCK_DM + tl.arange(0, BLOCK_DM)
        dmask = d < D
        # independent loads, issued together (empty splits hold m = -inf and acc = 0)
        mo = tl.load(m_ptr + base * BLOCK_G + head)  # [SPLITS]
        lo = tl.load(l_ptr + base * BLOCK_G + head)
        acc_all = tl.load(
            acc_ptr + (base[:, None] * G + head) * D + d[None, :], mask=dmask[None, :], other=0.0
        )
        mo_max = tl.max(mo, 0)
        has_o = mo > float("-inf")
        wo = tl.where(has_o, tl.math.exp2(mo - tl.where(has_o, mo_max, 0.0)), 0.0)
        total_o = tl.sum(lo * wo, 0)  # 0 only for an empty segment
        safe_o = tl.where(total_o > 0, total_o, 1.0)
        res = tl.sum(acc_all * wo[:, None], 0) / safe_o
        tl.store(
            out_ptr + (seg.to(tl.int64) * G + head) * D + d,
            res.to(out_ptr.dtype.element_ty),
            mask=dmask,
        )
    else:  # logits -> probabilities for the rows of split `pid - G * D_PARTS`
        g = tl.arange(0, BLOCK_G)
        mw = tl.load(m_ptr + base[:, None] * BLOCK_G + g[None, :])  # [SPLITS, BLOCK_G]
        lw = tl.load(l_ptr + base[:, None] * BLOCK_G + g[None, :])
        mw_max = tl.max(mw, 0)
        has_w = mw > float("-inf")
        ww = tl.where(has_w, tl.math.exp2(mw - tl.where(has_w, mw_max[None, :], 0.0)), 0.0)
        total_w = tl.sum(lw * ww, 0)
        lse = mw_max + tl.math.log2(tl.where(total_w > 0, total_w, 1.0))
        gmask = g < G
        off = tl.load(off_ptr + seg).to(tl.int64)
        length = tl.load(len_ptr + seg).to(tl.int32)
        start = (pid - G * D_PARTS) * CHUNK
        end = tl.minimum(start + CHUNK, length)
        for n0 in range(start, end, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            nmask = n < end
            ptrs = w_ptr + (off + n[None, :]) * G + g[:, None]
            wmask = gmask[:, None] & nmask[None, :]
            logits = tl.load(ptrs, mask=wmask, other=0.0)
            tl.store(ptrs, tl.math.exp2(logits - lse[:, None]), mask=wmask)


def _pow2(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


MAX_SPLITS = 128
SMEM_BUDGET = 160 << 10  # of the H100's 227 KiB per block


def fit_stages(stages: int, block_n: int, block_d: int, elem: int) -> int:
    """Pipeline depth that keeps the K/V tile buffers in shared memory: each extra stage holds
    a K and a V tile. (float32, BLOCK_N=128, D=128 at the default 3 stages needs 278,528 bytes,
    over the H100's limit, as compiled for sm_90.)"""
    per_stage = 2 * block_n * block_d * elem
    return max(1, min(stages, 1 + SMEM_BUDGET // per_stage))


def plan_splits(
    max_len: int, n_seg: int, block_n: int, sm_count: int, *, programs_per_sm: int = 4
) -> int:
    """Power-of-two split count: about ``programs_per_sm`` programs per SM in total (enough
    loads in flight to stream memory), but no split shorter than one ``block_n`` tile."""
    tiles = max(1, -(-max_len // block_n))
    want = max(1, -(-programs_per_sm * sm_count // max(n_seg, 1)))
    return max(1, min(_pow2(want), _pow2(tiles), MAX_SPLITS))


class Tiles(NamedTuple):
    block_n: int
    stages: int
    programs_per_sm: int


def default_tiles(n_seg: int, dtype: torch.dtype, sm_count: int, need_weights: bool) -> Tiles:
    """Launch defaults, from interleaved H100 probes at Llama-3-8B shapes
    (results/decode_probe_h100.csv and decode_kernel_h100.csv, 2026-11-27 calls 3 to 5):

    - float32: 64-row tiles, 3 stages (a 128-row tile pair over shared memory);
    - with weights: 128-row tiles, 2 stages, 4 programs per SM. The two regimes below made
      the weights path 3-12% slower at 7 of 8 sizes (call 5 against call 3: its pass 2 turns each split's
      logits into probabilities, and smaller or fewer splits mean more or longer such passes);
    - few segments (batch 1 of 8 KV heads: at most one per 16 SMs): 64-row tiles, one stage,
      4 programs per SM. Every split then holds one or two small tiles, so nothing is left to
      pipeline, and the small shared-memory footprint lets more programs stream at once:
      11.6 against 13.0 us at batch 1 / 8k, within +-1% at the other batch-1 sizes;
    - otherwise: 128-row tiles, 2 stages, 2 programs per SM (longer splits: 1-2% faster than
      4 per SM at batch 4, 4k-32k, in both probes).
    """
    if dtype == torch.float32:
        return Tiles(64, 3, 4)
    if need_weights:
        return Tiles(128, 2, 4)
    if n_seg * 16 <= sm_count:
        return Tiles(64, 1, 4)
    return Tiles(128, 2, 2)


# On by default (Hopper+): with the one-round-trip merge, PDL saved 0.2-0.6 us per call at 7 of
# 8 sizes and was even at batch 1 / 8k (call 2), and 0.3-1.3 us at every size with the final
# tiles (call 6) on the H100 (results/decode_probe_h100.csv, decode_kernel_h100.csv).
PDL_DEFAULT = True


def _pdl_default(device: torch.device) -> bool:
    """Programmatic dependent launch for the merge unless turned off (``KVPRUNE_PDL=0``): only on
    Hopper or newer, compiled (not the interpreter)."""
    env = os.environ.get("KVPRUNE_PDL", "")
    want = env == "1" if env in ("0", "1") else PDL_DEFAULT
    return want and device.type == "cuda" and _capability(device.index or 0) >= 9


@functools.cache
def _capability(index: int) -> int:
    return torch.cuda.get_device_capability(index)[0]


def _prep(q, k_pool, v_pool, offsets, lengths):
    q = q.contiguous()
    if k_pool.stride(1) != 1:
        k_pool = k_pool.contiguous()
    if v_pool.stride(1) != 1:
        v_pool = v_pool.contiguous()
    if offsets.dtype != torch.int64:
        offsets = offsets.to(torch.int64)
    if lengths.dtype != torch.int32:
        lengths = lengths.to(torch.int32)
    return q, k_pool, v_pool, offsets, lengths


def ragged_decode_attention(
    q: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    offsets: torch.Tensor,
    lengths: torch.Tensor,
    scale: float,
    max_len: int | None = None,
    need_weights: bool = True,
    *,
    pdl: bool | None = None,
    num_splits: int | None = None,
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
    programs_per_sm: int | None = None,
    merge_block_d: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Triton version of ``naive.ragged_decode_attention`` (same arguments and results).

    ``num_splits`` (a power of two), ``block_n``, ``num_warps``, ``num_stages`` and
    ``programs_per_sm`` override the launch heuristics (tests use them to exercise several
    splits and tiles on tiny inputs; the benchmark to compare variants).
    ``pdl`` launches the merge with programmatic dependent launch (Hopper+: it is scheduled
    while pass 1 runs and waits on it in-kernel); default ``PDL_DEFAULT`` (on), or
    ``KVPRUNE_PDL=0/1``. Ignored (off) on devices older than compute capability 9.
    ``merge_block_d`` (a power of two, default 32) is the number of output columns one merge
    program handles.
    """
    check_args(q, k_pool, v_pool, offsets, lengths)
    q, k_pool, v_pool, offsets, lengths = _prep(q, k_pool, v_pool, offsets, lengths)
    n_seg, group, dim = q.shape
    out = torch.empty_like(q)
    weights = None
    if need_weights:
        weights = torch.zeros(k_pool.shape[0], group, dtype=torch.float32, device=q.device)
    if n_seg == 0:
        return out, weights
    if max_len is None:
        max_len = int(lengths.max())
    on_cpu = q.device.type == "cpu"  # the interpreter: small tiles keep tests quick
    sms = 8 if on_cpu else _sm_count(q.device.index or 0)
    tile = default_tiles(n_seg, q.dtype, sms, need_weights)
    block_n = block_n or (16 if on_cpu else tile.block_n)
    programs_per_sm = programs_per_sm or tile.programs_per_sm
    if num_splits is None:
        num_splits = plan_splits(max_len, n_seg, block_n, sms, programs_per_sm=programs_per_sm)
    splits = num_splits
    if splits < 1 or splits & (splits - 1):
        raise ValueError(f"num_splits must be a power of two, got {splits}")
    if merge_block_d is not None and (merge_block_d < 1 or merge_block_d & (merge_block_d - 1)):
        raise ValueError(f"merge_block_d must be a power of two, got {merge_block_d}")
    chunk = max(block_n, -(-max(max_len, 1) // splits))
    chunk = -(-chunk // block_n) * block_n
    block_g = max(16, _pow2(group))
    block_d = max(16, _pow2(dim))
    # one workspace allocation (host cost per call): m, l [S, splits, BLOCK_G], acc [S, splits, G, D]
    ml = n_seg * splits * block_g
    work = torch.empty(2 * ml + n_seg * splits * group * dim, dtype=torch.float32, device=q.device)
    m, ell, acc = work[:ml], work[ml : 2 * ml], work[2 * ml :]
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    stages = num_stages or tile.stages
    launch = {"num_stages": fit_stages(stages, block_n, block_d, q.element_size())}
    launch["num_warps"] = num_warps or 4
    if pdl is None:
        pdl = _pdl_default(q.device)
    else:
        pdl = bool(pdl) and not on_cpu and _capability(q.device.index or 0) >= 9
    _split_kernel[(n_seg, splits)](
        q,
        k_pool,
        v_pool,
        offsets,
        lengths,
        weights if need_weights else out,  # unused without WEIGHTS
        m,
        ell,
        acc,
        float(scale) * LOG2E,
        group,
        dim,
        k_pool.stride(0),
        v_pool.stride(0),
        chunk,
        NUM_SPLITS=splits,
        BLOCK_G=block_g,
        BLOCK_D=block_d,
        BLOCK_N=block_n,
        EVEN_D=block_d == dim,
        WEIGHTS=need_weights,
        PRECISION=precision,
        GDC=pdl,
        **launch,
    )
    block_dm = min(block_d, merge_block_d or 32)  # output columns per merge program
    _merge_kernel[(n_seg, group * (block_d // block_dm) + (splits if need_weights else 0))](
        out,
        offsets,
        lengths,
        weights if need_weights else out,
        m,
        ell,
        acc,
        group,
        dim,
        chunk,
        NUM_SPLITS=splits,
        BLOCK_G=block_g,
        BLOCK_D=block_d,
        BLOCK_N=block_n,
        BLOCK_DM=block_dm,
        D_PARTS=block_d // block_dm,
        GDC=pdl,
        num_warps=4,
        **({"launch_pdl": True} if pdl else {}),
    )
    return out, weights


AOT_HEAD_DIMS = (64, 96, 128, 256)  # 96: a padded BLOCK_D (EVEN_D off)
_TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def aot_launches():
    """The launch configurations of both passes on the GPU, for head dims ``AOT_HEAD_DIMS``
    (group sizes up to 16, so ``BLOCK_G`` 16): every dtype, with and without weights, every
    tile set ``default_tiles`` can return for them (stages through ``fit_stages``), PDL on and
    off, and for the merge every power-of-two split count up to ``MAX_SPLITS`` (its tile shape
    depends on it; pass 1 only indexes with it, so the extremes 1 and ``MAX_SPLITS``)."""
    from tensor_utils.ops import KernelLaunch

    splits_all = [1 << i for i in range(MAX_SPLITS.bit_length())]
    for dtype, t in _TRITON_TYPES.items():
        elem = torch.empty((), dtype=dtype).element_size()
        precision = "ieee" if dtype == torch.float32 else "tf32"
        for dim in AOT_HEAD_DIMS:
            block_d = max(16, _pow2(dim))
            for weights in (True, False):
                tiles = {
                    default_tiles(n_seg, dtype, 132, weights)[:2] for n_seg in (1, 8, 64, 1024)
                }
                for gdc in (True, False):
                    for block_n, stages in sorted(tiles):
                        for splits in (1, MAX_SPLITS):
                            yield KernelLaunch(
                                _split_kernel,
                                {
                                    "q_ptr": f"*{t}",
                                    "k_ptr": f"*{t}",
                                    "v_ptr": f"*{t}",
                                    "off_ptr": "*i64",
                                    "len_ptr": "*i32",
                                    "w_ptr": "*fp32" if weights else f"*{t}",
                                    "m_ptr": "*fp32",
                                    "l_ptr": "*fp32",
                                    "acc_ptr": "*fp32",
                                    "qk_scale": "fp32",
                                    **dict.fromkeys(("G", "D", "stride_k", "stride_v"), "i32"),
                                    "CHUNK": "i32",
                                },
                                {
                                    "NUM_SPLITS": splits,
                                    "BLOCK_G": 16,
                                    "BLOCK_D": block_d,
                                    "BLOCK_N": block_n,
                                    "EVEN_D": block_d == dim,
                                    "WEIGHTS": weights,
                                    "PRECISION": precision,
                                    "GDC": gdc,
                                },
                                num_warps=4,
                                num_stages=fit_stages(stages, block_n, block_d, elem),
                                label=f"split {t} D={dim} weights={weights} "
                                f"BLOCK_N={block_n} splits={splits} pdl={gdc}",
                            )
                        for splits in splits_all:
                            block_dm = min(block_d, 32)
                            yield KernelLaunch(
                                _merge_kernel,
                                {
                                    "out_ptr": f"*{t}",
                                    "off_ptr": "*i64",
                                    "len_ptr": "*i32",
                                    "w_ptr": "*fp32" if weights else f"*{t}",
                                    "m_ptr": "*fp32",
                                    "l_ptr": "*fp32",
                                    "acc_ptr": "*fp32",
                                    **dict.fromkeys(("G", "D", "CHUNK"), "i32"),
                                },
                                {
                                    "NUM_SPLITS": splits,
                                    "BLOCK_G": 16,
                                    "BLOCK_D": block_d,
                                    "BLOCK_N": block_n,
                                    "BLOCK_DM": block_dm,
                                    "D_PARTS": block_d // block_dm,
                                    "GDC": gdc,
                                },
                                num_warps=4,
                                label=f"merge {t} D={dim} weights={weights} "
                                f"BLOCK_N={block_n} splits={splits} pdl={gdc}",
                            )
