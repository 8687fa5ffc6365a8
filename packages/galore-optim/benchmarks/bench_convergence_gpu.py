"""Small LLaMA pre-training on real text for a fixed token budget: AdamW vs galore-torch vs
galore-optim (exact and randomized subspace solvers).

Model: GaLore's LLaMA-60M (d_model 512, ffn 1376, 8 layers, 8 heads, vocab 32000, untied
embeddings: 58.1M parameters). Corpus: the token stream written by ``make_corpus.py`` (real
English technical text tokenized with the SmolLM2 tokenizer, ids remapped to the 31999 most
frequent plus one <unk>; validation documents held out). One process per optimizer (they may run
concurrently on one GPU); every run sees the same initialization and the same batches.
GaLore hyperparameters follow GaLore's 60M recipe: rank 128, T 200, scale 0.25, lr 0.01;
AdamW uses lr 1e-3. Linear warm-up (10%) then cosine decay to 10%, bf16 autocast, fp32 weights.

Needs CUDA and the token file (``make_corpus.py``, written to ``build/`` by default). The
page's runs, one process per optimizer (concurrent processes on one GPU are fine), then merged:

    python packages/galore-optim/benchmarks/make_corpus.py          # on a machine with SmolLM2
    B=packages/galore-optim/benchmarks
    for r in adamw galore_torch galore_optim_exact galore_optim_randomized; do
      python tools/run_gpu.py galore-optim --bench bench_convergence_gpu.py -- --runs $r \
        --out build/gpu/conv_$r.csv &
    done; wait
    python $B/bench_convergence_gpu.py --summarize build/gpu/conv_*.csv --out $B/results/convergence.csv

``--runs adamw_lr2e-3`` etc. set AdamW's learning rate (the sweep in ``convergence_adamw_lr.csv``).
``GALORE_BENCH_TINY=1`` shrinks the model (d 64, 2 layers, rank 16, T 20) for a CPU smoke test.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, galore_torch_classes

from tensor_utils_dev.bench import write_csv

DEFAULT_CORPUS = Path(__file__).resolve().parents[3] / "build" / "corpus_smollm2_v32000.npz"


def load_corpus(path: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``(train_ids, val_ids, info)`` from ``make_corpus.py``'s file (uint16 ids < 32000)."""
    with np.load(path) as z:
        train = torch.from_numpy(z["train"].astype(np.int64))
        val = torch.from_numpy(z["val"].astype(np.int64))
        info = json.loads(str(z["info"]))
    return train, val, info


def make_model(seed: int, vocab: int, *, tiny: bool = False) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    d, ffn, layers, heads = (64, 172, 2, 2) if tiny else (512, 1376, 8, 8)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=d,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def summarize(paths: list[str], out: str) -> None:
    """Merge per-run CSVs (one process each) into ``out`` and print final perplexities."""
    rows = []
    for p in paths:
        if Path(p).exists():
            with open(p, newline="") as f:
                rows += list(csv.DictReader(f))
    if not rows:
        print("no rows")
        return
    with open(out, "w", newline="") as f:
        fields = list(dict.fromkeys(k for r in rows for k in r))
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    last = {}
    for r in rows:
        if r["split"] == "val":
            last[r["run"]] = r
    ppl = {n: float(r["ppl"]) for n, r in last.items()}
    steps = {n: int(r["step"]) + 1 for n, r in last.items()}
    for n, r in last.items():
        rel_a = ppl[n] / ppl["adamw"] - 1 if "adamw" in ppl else float("nan")
        rel_g = ppl[n] / ppl["galore_torch"] - 1 if "galore_torch" in ppl else float("nan")
        print(
            f"FINAL {n:26s} step {steps[n]:5d}/{r['steps']} val loss {float(r['loss']):.4f} "
            f"ppl {ppl[n]:.3f}  vs adamw {100 * rel_a:+.2f}%  "
            f"vs galore_torch {100 * rel_g:+.2f}%  wall {r.get('wall_s', '?')} s"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-batches", type=int, default=16)
    ap.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    ap.add_argument(
        "--runs",
        nargs="*",
        default=["adamw", "galore_torch", "galore_optim_exact", "galore_optim_randomized"],
    )
    ap.add_argument("--summarize", nargs="*", help="merge these per-run CSVs into --out")
    ap.add_argument("--out", default=str(RESULTS / "convergence.csv"))
    args = ap.parse_args()
    if args.summarize is not None:
        summarize(args.summarize, args.out)
        return
    tiny = os.environ.get("GALORE_BENCH_TINY") == "1"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cuda" and not tiny:
        raise SystemExit("bench_convergence_gpu: needs CUDA (GALORE_BENCH_TINY=1: CPU smoke test)")
    if not Path(args.corpus).is_file():
        raise SystemExit(
            f"bench_convergence_gpu: no token file {args.corpus}; build it with make_corpus.py"
        )
    train_data, val_data, info = load_corpus(args.corpus)
    vocab = info["vocab"]
    tokens_per_step = args.batch * args.seq
    print(
        f"corpus {len(train_data) / 1e6:.2f}M train / {len(val_data) / 1e6:.2f}M val tokens "
        f"(vocab {vocab}, unk {100 * info['train_unk_fraction']:.2f}%); {args.steps} steps x "
        f"{tokens_per_step} tokens = {args.steps * tokens_per_step / 1e6:.1f}M tokens "
        f"({args.steps * tokens_per_step / len(train_data):.2f} epochs)",
        flush=True,
    )

    from galore_optim import GaLoreAdamW, galore_param_groups

    RefAdamW, _ = galore_torch_classes()
    galore_hp = {
        "rank": 16 if tiny else 128,
        "update_proj_gap": 20 if tiny else 200,
        "scale": 0.25,
        "proj_type": "std",
    }

    def optimizer_for(name, model):
        if name.startswith("adamw"):
            # "adamw" is GaLore's baseline (lr 1e-3); "adamw_lr4e-3" etc. for the lr sweep
            lr = float(name.removeprefix("adamw_lr")) if name != "adamw" else 1e-3
            return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        groups = galore_param_groups(model, ["self_attn", "mlp"], **galore_hp)
        if name == "galore_torch":
            return RefAdamW(groups, lr=1e-2, no_deprecation_warning=True)
        solver = name.removeprefix("galore_optim_")
        for g in groups:
            if "rank" in g:
                g["solver"] = solver
        return GaLoreAdamW(groups, lr=1e-2)

    def batch_at(source, gen):
        starts = torch.randint(0, len(source) - args.seq - 1, (args.batch,), generator=gen)
        x = torch.stack([source[s : s + args.seq + 1] for s in starts.tolist()])
        return x.to(device, non_blocking=True)

    summary = []
    for name in args.runs:
        model = make_model(0, vocab, tiny=tiny).to(device)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {n_params / 1e6:.2f}M parameters", flush=True)
        opt = optimizer_for(name, model)
        warmup = max(1, args.steps // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda s, warmup=warmup: (
                min(1.0, (s + 1) / warmup)
                * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
            ),
        )
        gen = torch.Generator().manual_seed(1234)  # same batches for every run

        def evaluate(model):
            model.eval()
            vgen = torch.Generator().manual_seed(99)  # same held-out batches every time
            losses = []
            with (
                torch.no_grad(),
                torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"),
            ):
                for _ in range(args.eval_batches):
                    x = batch_at(val_data, vgen)
                    losses.append(model(input_ids=x[:, :-1], labels=x[:, :-1]).loss.float().item())
            model.train()
            return sum(losses) / len(losses)

        common = {
            "batch": args.batch,
            "seq": args.seq,
            "steps": args.steps,
            "params": n_params,
            "vocab": vocab,
            "train_tokens_corpus": len(train_data),
        }
        rows = []
        t0 = time.perf_counter()
        for step in range(args.steps):
            x = batch_at(train_data, gen)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = model(input_ids=x[:, :-1], labels=x[:, :-1]).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            if step % 10 == 0 or step == args.steps - 1:
                rows.append(
                    {
                        "run": name,
                        "step": step,
                        "tokens": (step + 1) * tokens_per_step,
                        "split": "train",
                        "loss": loss.item(),
                    }
                )
            if (step + 1) % args.eval_every == 0 or step == args.steps - 1:
                val = evaluate(model)
                wall = time.perf_counter() - t0
                rows.append(
                    {
                        "run": name,
                        "step": step,
                        "tokens": (step + 1) * tokens_per_step,
                        "split": "val",
                        "loss": val,
                        "ppl": math.exp(val),
                    }
                )
                for r in rows:
                    r.update(common, wall_s=round(wall, 1))
                write_csv(args.out, rows)  # appends: a run cut short keeps its curve so far
                rows = []
                print(
                    f"{name:26s} step {step + 1:5d} train {loss.item():.4f} val {val:.4f} "
                    f"ppl {math.exp(val):.3f} ({wall:.0f} s)",
                    flush=True,
                )
        if device == "cuda":
            torch.cuda.synchronize()
        summary.append((name, math.exp(val), time.perf_counter() - t0))
        del model, opt
    for n, p, secs in summary:
        print(f"DONE {n:26s} val ppl {p:.4f}  wall {secs:.0f} s")


if __name__ == "__main__":
    main()
