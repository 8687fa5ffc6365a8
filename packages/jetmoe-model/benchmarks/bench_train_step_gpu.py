"""A full training step (forward, backward, AdamW) of a ~1.1B-parameter JetMoE config in bf16 on
one GPU: tokens/s and peak memory for our expert backends and transformers' JetMoe (SDPA).
CSV: benchmarks/results/train_step.csv.

Config: 12 layers, d 1024, 8 experts top-2 in MoA (8 KV heads x 128) and MoE (D_ffn 2816),
vocab 32000; batch 4 x 2048 tokens.

``--rounds R`` (R > 1) times the backends interleaved instead: all models are built first, then
R rounds each run ``--steps`` steps of every backend in turn, and the median over all of a
backend's steps is reported (rows ``bench=train_step_interleaved``, no peak memory: the models
share the GPU). On an H100 the same backend's step time drifted by up to 20% within one process,
so only interleaved timings compare backends fairly; the sequential mode gives the peak memory.
Needs CUDA; the page's runs:

    python tools/run_gpu.py jetmoe-model --bench bench_train_step_gpu.py -- --rounds 8 \
        --impls triton,grouped_mm,transformers --out build/gpu/train_step_interleaved.csv
    python tools/run_gpu.py jetmoe-model --bench bench_train_step_gpu.py -- --impls triton
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from typing import Any

import torch
from jetmoe_model import JetMoEConfig, JetMoEForCausalLM

from tensor_utils_dev.bench import PeakMemory, results_dir, write_csv

CONFIG: dict[str, Any] = dict(
    vocab_size=32000,
    hidden_size=1024,
    num_hidden_layers=12,
    num_key_value_heads=8,
    kv_channels=128,
    intermediate_size=2816,
    num_local_experts=8,
    num_experts_per_tok=2,
)


def build(impl: str):
    torch.manual_seed(0)
    with torch.device("cuda"):
        if impl == "transformers":
            from transformers import JetMoeConfig, JetMoeForCausalLM

            model = JetMoeForCausalLM(JetMoeConfig(**CONFIG))
            model.set_attn_implementation("sdpa")
        else:
            model = JetMoEForCausalLM(JetMoEConfig(**CONFIG, expert_backend=impl))
    return model.bfloat16().train()


def step_fn(model, impl, ids):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    extra = {"output_router_logits": True}  # every implementation adds its router losses

    def step():
        loss = model(ids, labels=ids, **extra).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impls", default="triton,grouped_mm,reference,transformers")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", default=str(results_dir(__file__) / "train_step.csv"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_train_step_gpu: needs CUDA; nothing measured")
        return 0
    if args.rounds > 1:
        return interleaved(args)
    rows = []
    for impl in args.impls.split(","):
        model = build(impl)
        params = sum(p.numel() for p in model.parameters())
        ids = torch.randint(0, CONFIG["vocab_size"], (args.batch, args.seq), device="cuda")
        step = step_fn(model, impl, ids)
        try:
            for _ in range(2):
                step()
            torch.cuda.synchronize()
            with PeakMemory() as mem:
                times = []
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    loss = step()
                    torch.cuda.synchronize()
                    times.append(time.perf_counter() - t0)
        except torch.OutOfMemoryError:
            print(f"{impl}: out of memory")
            continue
        times.sort()
        median = times[len(times) // 2]
        tokens = args.batch * args.seq
        row = dict(
            bench="train_step", impl=impl, params_m=round(params / 1e6, 1), batch=args.batch,
            seq=args.seq, step_ms=median * 1e3, tokens_per_s=tokens / median,
            peak_gb=mem.cuda_bytes / 2**30, loss=float(loss),
        )  # fmt: skip
        rows.append(row)
        write_csv(args.out, [row])  # per backend: a timeout keeps what was measured
        print(
            f"{impl:12s} {params / 1e6:7.1f}M params  {median * 1e3:8.1f} ms/step  "
            f"{tokens / median:9.0f} tok/s  peak {row['peak_gb']:.1f} GiB",
            flush=True,
        )
        del model, step, loss
        gc.collect()  # module reference cycles: without it the next backend's peak includes this one's
        torch.cuda.empty_cache()
    return 0


def interleaved(args) -> int:
    impls = args.impls.split(",")
    ids = torch.randint(0, CONFIG["vocab_size"], (args.batch, args.seq), device="cuda")
    steps, times = {}, {impl: [] for impl in impls}
    for impl in impls:
        model = build(impl)
        steps[impl] = (model, step_fn(model, impl, ids))
        for _ in range(2):  # warm-up: compiles, allocator pools, optimizer state
            steps[impl][1]()
    torch.cuda.synchronize()
    for _ in range(args.rounds):
        for impl in impls:
            for _ in range(args.steps):
                t0 = time.perf_counter()
                steps[impl][1]()
                torch.cuda.synchronize()
                times[impl].append(time.perf_counter() - t0)
    tokens = args.batch * args.seq
    for impl in impls:
        ts = sorted(times[impl])
        median = ts[len(ts) // 2]
        params = sum(p.numel() for p in steps[impl][0].parameters())
        row = dict(
            bench="train_step_interleaved", impl=impl, params_m=round(params / 1e6, 1),
            batch=args.batch, seq=args.seq, step_ms=median * 1e3, tokens_per_s=tokens / median,
            peak_gb=float("nan"), loss=float("nan"),
            p20_ms=ts[len(ts) // 5] * 1e3, p80_ms=ts[(4 * len(ts)) // 5] * 1e3,
        )  # fmt: skip
        write_csv(args.out, [row])
        print(
            f"{impl:12s} interleaved x{args.rounds}: median {median * 1e3:8.1f} ms/step "
            f"(p20 {row['p20_ms']:.1f}, p80 {row['p80_ms']:.1f})  {tokens / median:9.0f} tok/s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
