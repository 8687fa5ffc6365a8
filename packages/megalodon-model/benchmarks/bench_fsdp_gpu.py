"""FSDP2 training-step throughput and peak memory of a ~1.0B-parameter Megalodon on N GPUs.

    torchrun --nproc-per-node 1 benchmarks/bench_fsdp_gpu.py --no-fsdp   # one GPU, plain model
    torchrun --nproc-per-node 1 benchmarks/bench_fsdp_gpu.py             # one GPU, FSDP2
    torchrun --nproc-per-node 2 benchmarks/bench_fsdp_gpu.py             # two GPUs, FSDP2

Every rank runs the same per-GPU batch (weak scaling), so the speed-up of N GPUs is
``tokens_per_s(N) / tokens_per_s(1)``. bf16 compute through ``MixedPrecisionPolicy`` (float32
shards, float32 gradient reduction) and activation checkpointing are on by default; AdamW steps
every iteration. Rank 0 appends one row to ``results/fsdp_gpu.csv`` (``--csv``) with the median
step time, global tokens/s and the largest per-GPU peak memory over the ranks.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from megalodon_model import MegalodonConfig, MegalodonForCausalLM
from megalodon_model.distributed import enable_checkpointing, mixed_precision, shard_model

RESULTS = Path(__file__).resolve().parent / "results" / "fsdp_gpu.csv"
# ~0.99B parameters: 16 blocks of width 2048, attention chunks of 2048 tokens
PRESET_1B = dict(
    vocab_size=32000,
    hidden_size=2048,
    num_hidden_layers=16,
    num_attention_heads=4,
    z_dim=512,
    value_dim=4096,
    intermediate_size=5632,
    chunk_size=2048,
    norm_num_groups=32,
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=4, help="sequences per GPU per step")
    p.add_argument("--seq", type=int, default=4096, help="two attention chunks")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--layers", type=int, default=PRESET_1B["num_hidden_layers"])
    p.add_argument("--fp32", action="store_true", help="no mixed precision (float32 compute)")
    p.add_argument("--no-checkpointing", action="store_true")
    p.add_argument("--no-reshard", action="store_true", help="reshard_after_forward=False")
    p.add_argument(
        "--no-fsdp", action="store_true", help="plain model (one GPU only), bf16 autocast"
    )
    p.add_argument("--csv", type=Path, default=RESULTS)
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if "RANK" not in os.environ or not torch.cuda.is_available():
        print("bench_fsdp_gpu.py: needs CUDA and torchrun --nproc-per-node N", file=sys.stderr)
        return 2
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    dist.init_process_group("nccl")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        if args.no_fsdp and world != 1:
            raise SystemExit("bench_fsdp_gpu.py: --no-fsdp is the one-GPU baseline (nproc 1)")
        torch.manual_seed(0)
        config = MegalodonConfig(**{**PRESET_1B, "num_hidden_layers": args.layers})
        model = MegalodonForCausalLM(config).to(device).train()
        n_params = sum(p.numel() for p in model.parameters())
        bf16 = not args.fp32
        if args.no_fsdp:
            if not args.no_checkpointing:
                enable_checkpointing(model)
        else:
            shard_model(
                model,
                mp_policy=mixed_precision(torch.bfloat16) if bf16 else None,
                reshard_after_forward=not args.no_reshard,
                gradient_checkpointing=not args.no_checkpointing,
            )
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        gen = torch.Generator(device=device).manual_seed(1 + rank)
        times = []
        for i in range(args.warmup + args.steps):
            if i == args.warmup:
                torch.cuda.reset_peak_memory_stats(device)
            ids = torch.randint(
                0, config.vocab_size, (args.batch, args.seq), device=device, generator=gen
            )
            torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            with torch.autocast("cuda", torch.bfloat16, enabled=args.no_fsdp and bf16):
                out = model(ids, labels=ids)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        peak = torch.tensor([torch.cuda.max_memory_allocated(device)], device=device)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        step_s = torch.tensor([statistics.median(times)], device=device)
        dist.all_reduce(step_s, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
        if rank == 0:
            row = {
                "package": "megalodon-model",
                "model": "megalodon",
                "params": n_params,
                "mode": "plain" if args.no_fsdp else "fsdp2",
                "gpus": world,
                "batch_per_gpu": args.batch,
                "seq": args.seq,
                "bf16": bf16,
                "checkpointing": not args.no_checkpointing,
                "reshard_after_forward": not args.no_reshard,
                "step_ms": round(step_s.item() * 1e3, 2),
                "tokens_per_s": round(world * args.batch * args.seq / step_s.item(), 1),
                "peak_mem_gib": round(peak.item() / 2**30, 3),
                "device": torch.cuda.get_device_name(device),
                "torch": torch.__version__,
            }
            print(json.dumps(row) if args.json else row)
            args.csv.parent.mkdir(parents=True, exist_ok=True)
            new = not args.csv.exists()
            with args.csv.open("a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(row))
                if new:
                    writer.writeheader()
                writer.writerow(row)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
