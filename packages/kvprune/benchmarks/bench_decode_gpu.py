"""H100 benchmark: decode attention over the compressed ragged cache vs full-cache SDPA, and the
GPU memory a compressed cache really frees, at Llama-3-8B shapes with synthetic weights.

    python packages/kvprune/benchmarks/bench_decode_gpu.py            # CUDA: the real sweep
    python packages/kvprune/benchmarks/bench_decode_gpu.py --smoke    # CPU: tiny shapes, checks the script

(1) Kernel timing, per context n in 4k..32k, batch 1 and 4: full cache = ``F.scaled_dot_product_
attention`` of one query token over K/V ``[B, 8, n, 128]`` fp16 (GQA, ``enable_gqa``), as
transformers' SDPA path runs it; compressed = ``ragged_decode_attention`` (Triton) over a pool
where every KV head keeps its own number of rows, half of n on average (per-head fractions
spread over 0.25..0.75). Times are ``tensor_utils.bench.time_fn`` medians (CUDA events, L2
flushed). Target: compressed at least 1.6x faster at half the entries.

(2) Memory, per context: a 4-layer model with Llama-3-8B layer shapes (hidden 4096, 32 query /
8 KV heads, head_dim 128, random fp16 weights) prefilled with n tokens then decoding 16 tokens,
once with a DynamicCache and once with KVPruneCache(StreamingLLM(kept_fraction=0.5)). Measured:
``torch.cuda.memory_allocated`` after the prompt (cache resident) and the peak during decoding
(``PeakMemory``); the difference is compared with the bytes the report says were freed.

Rows go to ``results/decode_gpu.csv``; without CUDA (and without --smoke) the script says so and
exits 0 so ``nox -s bench`` still runs on CPU machines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from tensor_utils.bench import PeakMemory, time_fn, write_csv

RESULTS = Path(__file__).parent / "results"
LLAMA3_8B = dict(hidden=4096, heads=32, kv_heads=8, head_dim=128, intermediate=14336)


def ragged_half(b, h, n, d, dtype, device, seed=0):
    """A pool where KV head (b, h) keeps a fraction in [0.25, 0.75] of n rows, mean 0.5."""
    gen = torch.Generator().manual_seed(seed)
    fr = torch.linspace(0.25, 0.75, b * h)[torch.randperm(b * h, generator=gen)]
    lengths = (fr * n).long().clamp(min=1)
    offsets = lengths.cumsum(0) - lengths
    rows = int(lengths.sum())
    k = torch.randn(rows, d, dtype=dtype, device=device)
    v = torch.randn(rows, d, dtype=dtype, device=device)
    return k, v, offsets.to(device), lengths.to(device=device, dtype=torch.int32)


def bench_kernel(contexts, batches, device, smoke):
    from kvprune.ops.ragged_decode import ragged_decode_attention

    s = LLAMA3_8B
    h, hq, d = s["kv_heads"], s["heads"], s["head_dim"]
    dtype = torch.float16 if device == "cuda" else torch.float32
    backend = "triton" if device == "cuda" else "reference"
    rows = []
    for b in batches:
        for n in contexts:
            q = torch.randn(b, hq, 1, d, dtype=dtype, device=device)
            k = torch.randn(b, h, n, d, dtype=dtype, device=device)
            v = torch.randn_like(k)
            full = time_fn(
                lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
                device=device,
                **({"warmup": 1, "rep": 3} if smoke else {}),
            )
            del k, v
            kp, vp, off, lens = ragged_half(b, h, n, d, dtype, device)
            qr = q.view(b, h, hq // h, d).reshape(b * h, hq // h, d)
            max_len = int(lens.max())

            def ragged(qr=qr, kp=kp, vp=vp, off=off, lens=lens, max_len=max_len):
                return ragged_decode_attention(
                    qr, kp, vp, off, lens, d**-0.5, max_len, backend=backend
                )

            comp = time_fn(ragged, device=device, **({"warmup": 1, "rep": 3} if smoke else {}))
            kept = int(lens.sum()) / (b * h * n)
            for name, t in (("full_sdpa", full), ("ragged_kernel", comp)):
                rows.append(
                    dict(
                        bench="decode_attention",
                        method=name,
                        batch=b,
                        context=n,
                        kept_fraction=1.0 if name == "full_sdpa" else round(kept, 4),
                        median_ms=t.median_ms,
                        p20_ms=t.p20_ms,
                        p80_ms=t.p80_ms,
                    )
                )
            print(
                f"B={b} n={n}: full SDPA {full.median_ms:.4f} ms, ragged (kept {kept:.2f}) "
                f"{comp.median_ms:.4f} ms, speedup {full.median_ms / comp.median_ms:.2f}x",
                flush=True,
            )
            del kp, vp, ragged
    return rows


def synthetic_model(device, layers, smoke):
    from transformers import LlamaConfig, LlamaForCausalLM

    s = LLAMA3_8B
    if smoke:
        s = dict(hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128)
    config = LlamaConfig(
        vocab_size=1024,
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=layers,
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        head_dim=s["head_dim"],
        max_position_embeddings=40000,
        rope_theta=500000.0,
    )
    dtype = torch.float16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()


def bench_memory(contexts, device, smoke, layers=4, new_tokens=16):
    from kvprune import KVPruneCache, StreamingLLM
    from kvprune.generate import cache_kwarg
    from transformers import DynamicCache

    model = synthetic_model(device, layers, smoke)
    kw = cache_kwarg(model)
    rows = []
    for n in contexts:
        ids = torch.randint(3, 1024, (1, n), device=device)
        results = {}
        for name in ("dynamic", "kvprune_streaming_0.5"):
            if device == "cuda":
                torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated() if device == "cuda" else 0
            if name == "dynamic":
                cache = DynamicCache(config=model.config)
            else:
                cache = KVPruneCache(model, StreamingLLM(kept_fraction=0.5), backend=None)
            with torch.no_grad():
                out = model(ids, **{kw: cache})
                tok = out.logits[:, -1:].argmax(-1)
                del out
                resident = (torch.cuda.memory_allocated() - before) if device == "cuda" else 0
                with PeakMemory(cuda=device == "cuda") as peak:
                    for _ in range(new_tokens):
                        out = model(tok, **{kw: cache})
                        tok = out.logits[:, -1:].argmax(-1)
                        del out
            freed = cache.report().freed_bytes if name != "dynamic" else 0
            results[name] = (resident, peak.cuda_bytes - before if device == "cuda" else 0, freed)
            rows.append(
                dict(
                    bench="memory",
                    method=name,
                    batch=1,
                    context=n,
                    layers=layers,
                    resident_bytes=resident,
                    decode_peak_bytes=results[name][1],
                    reported_freed_bytes=freed,
                )
            )
            del cache
        (r_d, p_d, _), (r_k, p_k, freed) = results["dynamic"], results["kvprune_streaming_0.5"]
        print(
            f"n={n}: resident after prompt dynamic {r_d / 1e6:.1f} MB vs kvprune {r_k / 1e6:.1f} MB "
            f"(measured drop {(r_d - r_k) / 1e6:.1f} MB, report says freed {freed / 1e6:.1f} MB); "
            f"decode peak {p_d / 1e6:.1f} vs {p_k / 1e6:.1f} MB",
            flush=True,
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run (checks the script)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.smoke:
        print("bench_decode_gpu: no CUDA device; nothing measured (use --smoke to test the script)")
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    contexts = [256, 512] if args.smoke else [4096, 8192, 16384, 32768]
    batches = [1] if args.smoke else [1, 4]
    rows = bench_kernel(contexts, batches, device, args.smoke)
    rows += bench_memory(contexts, device, args.smoke)
    name = "decode_gpu_smoke.csv" if args.smoke else "decode_gpu.csv"
    if args.smoke:
        print(f"smoke run: {len(rows)} rows (not written to results/)")
        return 0
    write_csv(RESULTS / name, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
