"""A full training step (forward, backward, AdamW) of a ~1.1B-parameter JetMoE config in bf16 on
one GPU: tokens/s and peak memory for our expert backends and transformers' JetMoe (SDPA).
CSV: benchmarks/results/train_step.csv.

Config: 12 layers, d 1024, 8 experts top-2 in MoA (8 KV heads x 128) and MoE (D_ffn 2816),
vocab 32000; batch 4 x 2048 tokens.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from jetmoe_model import JetMoEConfig, JetMoEForCausalLM  # noqa: E402

from tensor_utils.bench import PeakMemory, write_csv  # noqa: E402

CONFIG = dict(
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

            model = JetMoeForCausalLM(JetMoeConfig(**CONFIG, attn_implementation="sdpa"))
        else:
            model = JetMoEForCausalLM(JetMoEConfig(**CONFIG, expert_backend=impl))
    return model.bfloat16().train()


def step_fn(model, impl, ids):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    extra = {"output_router_logits": True} if impl == "transformers" else {}

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
    parser.add_argument("--out", default=str(HERE / "results" / "train_step.csv"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_train_step: needs CUDA; nothing measured")
        return 0
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
        del model, step
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
