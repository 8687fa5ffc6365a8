"""GPU decode latency at Llama-3-8B layer shapes (bf16): MLP block, attention block and one
whole decoder layer, sparse against dense cuBLAS in the same process, timed as CUDA-graph
replays (how a serving engine runs a decode step).

Sparse blocks include their selection cost inside the graph:

- ``dejavu``: the low-rank predictor (rank ``--rank``, default 1000) on the block's input, a
  fixed top-K of neurons / heads (Deja Vu's fixed K; graph-friendly) on the batch-summed scores,
  gathered-row GEMM for gate+up (interleaved rows) and Q of the kept heads, gathered-column GEMM
  for down and O; K/V of every head stay dense (the cache stays complete);
- ``teal`` / ``cats``: the same kernels with the kept set chosen by magnitude (``teal``: the
  top (1-s) input channels of each linear by max |x| over the batch; ``cats``: dense gate, then
  the top (1-s) neurons by max |silu(gate)|). A graph needs a fixed size, so magnitude top-K
  stands in for the threshold (same kept count as a threshold calibrated to that sparsity).

The dense fallback table is bypassed (``--no-fallback``, default on) so the gathered kernels are
timed at every batch; ``fallback`` rows show what the automatic choice runs.

    python benchmarks/bench_decode_gpu.py --out results/decode_gpu_h100.csv
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
D, INTER, H, KVH, HD = 4096, 14336, 32, 8, 128


def graph_ms(fn, reps: int = 50, inner: int = 10) -> float:
    """Median per-call milliseconds of ``fn`` captured in a CUDA graph ``inner`` times."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(inner):
            fn()
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / inner)
    times.sort()
    return times[len(times) // 2]


class Layer:
    """Synthetic weights of one Llama-3-8B layer, dense and in the gathered layouts."""

    def __init__(self, dtype, rank: int, layers: int):
        g = torch.Generator(device="cuda").manual_seed(0)

        def w(*shape):
            return (torch.randn(*shape, device="cuda", generator=g) / math.sqrt(shape[-1])).to(
                dtype
            )

        # several copies so that one replay streams more than the L2 (as in a deep model)
        self.copies = []
        for _ in range(layers):
            c: dict[str, Any] = {"q": w(H * HD, D), "k": w(KVH * HD, D), "v": w(KVH * HD, D), "o": w(D, H * HD),
                 "gate": w(INTER, D), "up": w(INTER, D), "down": w(D, INTER)}  # fmt: skip
            c["gate_up"] = torch.stack((c["gate"], c["up"]), 1).reshape(2 * INTER, D)
            c["down_t"] = c["down"].t().contiguous()
            c["o_t"] = c["o"].t().contiguous()
            for p in ("q", "k", "v", "gate", "up"):
                c[f"{p}_t"] = c[p].t().contiguous()
            c["pm"] = (w(rank, D), w(INTER, rank))
            c["ph"] = (w(rank, D), w(H, rank))
            self.copies.append(c)


def mlp_dense(c, x):
    return F.linear(F.silu(F.linear(x, c["gate"])) * F.linear(x, c["up"]), c["down"])


def mlp_sparse(c, x, mode, keep, ops):
    gather_rows, gather_cols = ops
    if mode == "dejavu":
        scores = (x @ c["pm"][0].t()) @ c["pm"][1].t()
        idx = scores.sum(0).topk(keep).indices
        pair = torch.stack((2 * idx, 2 * idx + 1), 1).reshape(-1)
        gu = gather_rows(x, c["gate_up"], pair).view(x.shape[0], -1, 2)
        return gather_cols(F.silu(gu[..., 0]) * gu[..., 1], c["down_t"], idx)
    if mode == "cats":
        a = F.silu(F.linear(x, c["gate"]))
        idx = a.abs().amax(0).topk(keep).indices
        return gather_cols(a[:, idx] * gather_rows(x, c["up"], idx), c["down_t"], idx)
    kin = round(keep / INTER * D)  # teal: the same sparsity on the inputs of gate/up and of down
    idx = x.abs().amax(0).topk(kin).indices
    xs = x[:, idx]
    h = F.silu(gather_cols(xs, c["gate_t"], idx)) * gather_cols(xs, c["up_t"], idx)
    jdx = h.abs().amax(0).topk(keep).indices
    return gather_cols(h[:, jdx], c["down_t"], jdx)


def attn_dense(c, x, kc, vc):
    b = x.shape[0]
    q = F.linear(x, c["q"]).view(b, H, 1, HD)
    k = F.linear(x, c["k"]).view(b, KVH, 1, HD)
    v = F.linear(x, c["v"]).view(b, KVH, 1, HD)
    kc[:, :, -1:] = k  # the new token's K/V written into the cache's last slot
    vc[:, :, -1:] = v
    o = F.scaled_dot_product_attention(q, kc, vc, enable_gqa=True)
    return F.linear(o.reshape(b, -1), c["o"])


def attn_sparse(c, x, kc, vc, mode, keep_heads, ops):
    gather_rows, gather_cols = ops
    b = x.shape[0]
    if mode == "teal":
        kin = round(keep_heads / H * D)
        idx = x.abs().amax(0).topk(kin).indices
        xs = x[:, idx]
        q = gather_cols(xs, c["q_t"], idx).view(b, H, 1, HD)
        k = gather_cols(xs, c["k_t"], idx).view(b, KVH, 1, HD)
        v = gather_cols(xs, c["v_t"], idx).view(b, KVH, 1, HD)
        kc[:, :, -1:] = k
        vc[:, :, -1:] = v
        o = F.scaled_dot_product_attention(q, kc, vc, enable_gqa=True).reshape(b, -1)
        jdx = o.abs().amax(0).topk(kin).indices
        return gather_cols(o[:, jdx], c["o_t"], jdx)
    scores = (x @ c["ph"][0].t()) @ c["ph"][1].t()
    heads = scores.sum(0).topk(keep_heads).indices
    rows = (heads[:, None] * HD + torch.arange(HD, device=x.device)).reshape(-1)
    q = gather_rows(x, c["q"], rows).view(b, keep_heads, 1, HD)
    kc[:, :, -1:] = F.linear(x, c["k"]).view(b, KVH, 1, HD)  # every head's K/V
    vc[:, :, -1:] = F.linear(x, c["v"]).view(b, KVH, 1, HD)
    kv = heads // (H // KVH)
    o = F.scaled_dot_product_attention(q, kc.index_select(1, kv), vc.index_select(1, kv))
    return gather_cols(o.reshape(b, -1), c["o_t"], rows)


def main() -> None:
    from dejavu_sparse.fallback import set_dense_fallback
    from dejavu_sparse.ops import gather_cols, gather_rows

    from tensor_utils_dev.bench import environment_tags, write_csv

    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(HERE / "results" / "decode_gpu.csv"))
    p.add_argument("--rank", type=int, default=1000)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--copies", type=int, default=4, help="layer copies cycled per replay (> L2)")
    p.add_argument("--batches", default="1,4,16")
    p.add_argument("--sparsities", default="0.4,0.5,0.7")
    p.add_argument("--quick", action="store_true", help="batch 1, 50%% only (smoke run)")
    args = p.parse_args()
    dtype = torch.bfloat16
    set_dense_fallback("cuda", {1: 1.0})  # time the gathered kernels at every batch
    layer = Layer(dtype, args.rank, args.copies)
    batches = [1] if args.quick else [int(b) for b in args.batches.split(",")]
    sparsities = [0.5] if args.quick else [float(s) for s in args.sparsities.split(",")]
    ops = (
        lambda *a: gather_rows(*a, backend="triton"),
        lambda *a: gather_cols(*a, backend="triton"),
    )
    tags = {**environment_tags(packages=["dejavu-sparse"]), "dtype": "bfloat16",
            "rank": str(args.rank), "context": str(args.context), "copies": str(args.copies),
            "timing": "cuda-graph replay, median"}  # fmt: skip
    rows = []
    for b in batches:
        x = torch.randn(b, D, device="cuda", dtype=dtype)
        kc = torch.randn(b, KVH, args.context, HD, device="cuda", dtype=dtype)
        vc = torch.randn_like(kc)

        def run(block, sparse, mode=None, s=0.0, x=x, kc=kc, vc=vc):
            keep, keep_h = max(1, round((1 - s) * INTER)), max(1, round((1 - s) * H))
            for c in layer.copies:
                if block in ("attn", "layer"):
                    y = (
                        attn_sparse(c, x, kc, vc, mode, keep_h, ops)
                        if sparse
                        else attn_dense(c, x, kc, vc)
                    )
                    h = x + y
                else:
                    h = x
                if block in ("mlp", "layer"):
                    h = h + (mlp_sparse(c, h, mode, keep, ops) if sparse else mlp_dense(c, h))

        dense = {blk: graph_ms(lambda blk=blk: run(blk, False)) / args.copies
                 for blk in ("mlp", "attn", "layer")}  # fmt: skip
        for mode in ("dejavu", "teal", "cats"):
            for s in sparsities:
                for blk in ("mlp", "attn", "layer"):
                    if mode == "cats" and blk == "attn":
                        continue
                    sp = (
                        graph_ms(lambda blk=blk, mode=mode, s=s: run(blk, True, mode, s))
                        / args.copies
                    )
                    d = (
                        graph_ms(lambda blk=blk: run(blk, False)) / args.copies
                    )  # same process, again
                    dense_ms = min(d, dense[blk])
                    rows.append({"batch": b, "mode": mode, "sparsity": s, "block": blk,
                                 "dense_ms": round(dense_ms, 4), "sparse_ms": round(sp, 4),
                                 "speedup": round(dense_ms / sp, 3)})  # fmt: skip
                    print(rows[-1], flush=True)
    write_csv(args.out, rows, tags=tags)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
