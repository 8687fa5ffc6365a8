"""LLaMA-7B training steps on one GPU: peak memory and tokens per second per optimizer.

GaLore's headline claim is pre-training a 7B model inside a 24 GB consumer GPU with 8-bit
GaLore updated layer-wise (the paper's README: 22.8 GB at batch 16 with activation
checkpointing). This script builds LLaMA-7B (4096 hidden, 11008 FFN, 32 layers, 32 heads,
32000 vocabulary) with random bf16 weights, enables activation checkpointing, and trains a few
steps on random tokens with one optimizer per process (so each peak is its own):

- ``galore_optim``: ``GaLoreAdamW8bit`` + ``LayerwiseGaLore`` (gradients projected and freed in
  the backward hooks), rank 1024, scale 0.25, randomized-SVD refresh every ``--gap`` steps;
- ``galore_torch``: galore-torch 1.0's layer-wise 8-bit recipe (one ``GaLoreAdamW8bit`` or
  bitsandbytes ``Adam8bit`` per parameter, stepped in ``register_post_accumulate_grad_hook``,
  as the paper's ``torchrun_main.py --single_gpu``), same rank/scale/gap, its exact SVD;
- ``adamw8bit``: bitsandbytes ``AdamW8bit`` over all parameters (full gradients resident);
- ``adamw``: ``torch.optim.AdamW(fused=True)`` over the bf16 parameters.

Reported per method: peak allocated and reserved GPU memory over the whole run (weights
included), median step time of the steps without a refresh, tokens per second from it, and
the extra time of the refresh steps. Needs CUDA; galore-torch and bitsandbytes come from
carried wheels (``galore_torch`` and ``adamw8bit`` rows are skipped with a message otherwise).

    python benchmarks/bench_7b_gpu.py --method galore_optim --out results/llama7b_h100.csv
    python benchmarks/bench_7b_gpu.py --all --out results/llama7b_h100.csv   # one process each
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback

REQUIRES = "cuda"  # tools/bench.py skips this script on machines without a GPU
METHODS = ("galore_optim", "galore_torch", "adamw8bit", "adamw")
LLAMA_7B = dict(
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    vocab_size=32000,
    max_position_embeddings=2048,
)


def build_model(layers: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=LLAMA_7B["hidden_size"],
        intermediate_size=LLAMA_7B["intermediate_size"],
        num_hidden_layers=layers,
        num_attention_heads=LLAMA_7B["num_attention_heads"],
        num_key_value_heads=LLAMA_7B["num_key_value_heads"],
        vocab_size=LLAMA_7B["vocab_size"],
        max_position_embeddings=LLAMA_7B["max_position_embeddings"],
        use_cache=False,
    )
    config._attn_implementation = "sdpa"
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # build in bf16: no transient fp32 copy of 7B
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


def galore_targets(model):
    return [
        p
        for name, p in model.named_parameters()
        if p.ndim == 2 and ("self_attn" in name or "mlp" in name)
    ]


def make_step(method: str, model, args):
    """Returns ``step(loss)`` doing backward + the optimizer update for one method."""
    import torch

    if method == "galore_optim":
        from galore_optim import GaLoreAdamW8bit, LayerwiseGaLore, galore_param_groups

        groups = galore_param_groups(
            model,
            ["self_attn", "mlp"],
            rank=args.rank,
            update_proj_gap=args.gap,
            scale=0.25,
            solver="randomized",
        )
        opt = GaLoreAdamW8bit(groups, lr=1e-5, weight_decay=0.0)
        layerwise = LayerwiseGaLore(opt, accumulation_steps=1)

        def step(loss):
            loss.backward()
            layerwise.step()

        return step

    if method == "galore_torch":
        import bitsandbytes as bnb  # pyright: ignore[reportMissingImports]  (GPU-only peer)
        from galore_torch import (  # pyright: ignore[reportMissingImports]  (GPU-only peer)
            GaLoreAdamW8bit as TorchGaLoreAdamW8bit,
        )

        targets = {id(p) for p in galore_targets(model)}
        per_param = {}
        for p in model.parameters():
            if id(p) in targets:
                group = {
                    "params": [p],
                    "rank": args.rank,
                    "update_proj_gap": args.gap,
                    "scale": 0.25,
                    "proj_type": "std",
                }
                per_param[p] = TorchGaLoreAdamW8bit([group], lr=1e-5, weight_decay=0.0)
            else:
                per_param[p] = bnb.optim.Adam8bit([p], lr=1e-5, weight_decay=0.0)

        def hook(p):
            if p.grad is not None:
                per_param[p].step()
                per_param[p].zero_grad()

        for p in model.parameters():
            p.register_post_accumulate_grad_hook(hook)
        return lambda loss: loss.backward()

    if method == "adamw8bit":
        import bitsandbytes as bnb  # pyright: ignore[reportMissingImports]  (GPU-only peer)

        opt = bnb.optim.AdamW8bit(model.parameters(), lr=1e-5, weight_decay=0.0)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0, fused=True)

    def full_step(loss):
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return full_step


def run_method(method: str, args) -> dict:
    import torch

    torch.manual_seed(0)
    row = {
        "method": method,
        "layers": args.layers,
        "batch": args.batch,
        "seq": args.seq,
        "rank": args.rank if method.startswith("galore") else "",
        "gap": args.gap if method.startswith("galore") else "",
    }
    model = build_model(args.layers)
    row["params_billion"] = round(sum(p.numel() for p in model.parameters()) / 1e9, 3)
    torch.cuda.reset_peak_memory_stats()  # the peak below is training's (weights included)
    step = make_step(method, model, args)
    gen = torch.Generator(device="cuda").manual_seed(0)
    times, refresh = [], []
    for i in range(args.steps):
        ids = torch.randint(
            0, LLAMA_7B["vocab_size"], (args.batch, args.seq), device="cuda", generator=gen
        )
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        step(loss)
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        is_refresh = method.startswith("galore") and i % args.gap == 0
        (refresh if is_refresh else times).append(elapsed)
        print(f"{method} step {i}: {elapsed:.3f} s, loss {loss.item():.3f}", flush=True)
    median = statistics.median(times) if times else float("nan")
    row.update(
        peak_allocated_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
        peak_reserved_gib=round(torch.cuda.max_memory_reserved() / 2**30, 2),
        step_s=round(median, 4),
        tokens_per_s=round(args.batch * args.seq / median, 1) if times else "",
        refresh_extra_s=round(statistics.median(refresh) - median, 2) if refresh and times else "",
        refresh_steps=len(refresh),
        device=torch.cuda.get_device_name(),
        torch=torch.__version__,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--method", choices=METHODS)
    parser.add_argument("--all", action="store_true", help="every method, one process each")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--rank", type=int, default=1024)
    parser.add_argument("--gap", type=int, default=4, help="steps between subspace refreshes")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--timeout", type=int, default=330, help="seconds per method (--all)")
    parser.add_argument(
        "--peer-first-refresh-only",
        action="store_true",
        help="galore_torch: only the step-0 refresh and two plain steps (its exact SVD is slow)",
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("bench_7b_gpu: needs a CUDA device; skipped")
        return
    if args.all:
        rows = []
        for method in args.methods.split(","):
            cmd = [
                sys.executable,
                __file__,
                "--method",
                method,
                "--out",
                args.out + f".{method}.json",
            ]
            for key in ("layers", "batch", "seq", "rank", "gap", "steps"):
                cmd += [f"--{key}", str(getattr(args, key))]
            try:
                subprocess.run(cmd, timeout=args.timeout, check=False)
            except subprocess.TimeoutExpired:
                print(f"{method}: over {args.timeout} s, stopped")
            part = args.out + f".{method}.json"
            if os.path.exists(part):
                with open(part) as f:
                    rows.append(json.load(f))
                os.remove(part)
            else:
                rows.append({"method": method, "error": "no result (see log)"})
        from tensor_utils_dev.bench import environment_tags, write_csv

        write_csv(args.out, rows, tags=environment_tags(packages=["galore-optim"]))
        for r in rows:
            print(r)
        return
    try:
        row = run_method(args.method, args)
    except ImportError as exc:
        row = {"method": args.method, "error": f"skipped: {exc}"}
    except torch.OutOfMemoryError as exc:
        row = {
            "method": args.method,
            "error": "out of memory",
            "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        }
        print(str(exc).splitlines()[0])
    except Exception:
        traceback.print_exc()
        row = {"method": args.method, "error": "failed (see log)"}
    with open(args.out, "w") as f:
        json.dump(row, f)
    print(row)


if __name__ == "__main__":
    main()
