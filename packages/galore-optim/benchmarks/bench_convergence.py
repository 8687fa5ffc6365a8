"""Small LLaMA pre-training on real text for a fixed token budget: AdamW vs galore-torch vs
galore-optim (exact and randomized subspace solvers).

Model: GaLore's LLaMA-60M transformer body (d_model 512, ffn 1376, 8 layers, 8 heads) with a
byte-level vocabulary (256 tokens: no tokenizer download is possible offline). Corpus: the
Python standard library's source files of the running interpreter (docstrings, comments and
code; real text shipped with every Python), sorted by path; the last 5% of bytes are held out.
GaLore hyperparameters follow GaLore's 60M recipe: rank 128, T 200, scale 0.25, lr 0.01;
AdamW uses lr 1e-3. Linear warm-up (10%) then cosine decay to 10%, bf16 autocast, fp32 weights.

    python benchmarks/bench_convergence.py --steps 1000 --batch 64 --seq 256
"""

from __future__ import annotations

import argparse
import math
import sysconfig
import time
from pathlib import Path

import torch
from _common import RESULTS, galore_torch_classes

from tensor_utils.bench import write_csv


def corpus_bytes(limit: int) -> torch.Tensor:
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks, total = [], 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts:
            continue
        data = path.read_bytes()
        chunks.append(data)
        total += len(data)
        if total >= limit:
            break
    return torch.frombuffer(bytearray(b"\n".join(chunks)), dtype=torch.uint8).long()


def make_model(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=256,
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-batches", type=int, default=16)
    ap.add_argument(
        "--runs",
        nargs="*",
        default=["adamw", "galore_torch", "galore_optim_exact", "galore_optim_randomized"],
    )
    ap.add_argument("--out", default=str(RESULTS / "convergence.csv"))
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = corpus_bytes(64 << 20)
    split = int(len(data) * 0.95)
    train_data, val_data = data[:split], data[split:]
    tokens_per_step = args.batch * args.seq
    print(
        f"corpus {len(data) / 1e6:.1f}M bytes; {args.steps} steps x {tokens_per_step} tokens "
        f"= {args.steps * tokens_per_step / 1e6:.1f}M tokens",
        flush=True,
    )

    from galore_optim import GaLoreAdamW, galore_param_groups

    RefAdamW, _ = galore_torch_classes()
    galore_hp = {"rank": 128, "update_proj_gap": 200, "scale": 0.25, "proj_type": "std"}

    def optimizer_for(name, model):
        if name == "adamw":
            return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        groups = galore_param_groups(model, ["self_attn", "mlp"], **galore_hp)
        if name == "galore_torch":
            return RefAdamW(groups, lr=1e-2, no_deprecation_warning=True)
        solver = name.removeprefix("galore_optim_")
        for g in groups:
            if "rank" in g:
                g["solver"] = solver
        return GaLoreAdamW(groups, lr=1e-2)

    def batch_at(source, i, gen):
        starts = torch.randint(0, len(source) - args.seq - 1, (args.batch,), generator=gen)
        x = torch.stack([source[s : s + args.seq + 1] for s in starts.tolist()])
        return x.to(device, non_blocking=True)

    rows, summary = [], []
    for name in args.runs:
        model = make_model(0).to(device)
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
            vgen = torch.Generator().manual_seed(99)
            losses = []
            with (
                torch.no_grad(),
                torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"),
            ):
                for _ in range(args.eval_batches):
                    x = batch_at(val_data, 0, vgen)
                    losses.append(model(input_ids=x[:, :-1], labels=x[:, :-1]).loss.float().item())
            model.train()
            return sum(losses) / len(losses)

        t0 = time.perf_counter()
        for step in range(args.steps):
            x = batch_at(train_data, step, gen)
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
                print(
                    f"{name:26s} step {step + 1:5d} train {loss.item():.4f} val {val:.4f} "
                    f"ppl {math.exp(val):.3f} ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
        if device == "cuda":
            torch.cuda.synchronize()
        summary.append((name, math.exp(val), time.perf_counter() - t0))
        del model, opt
        for r in rows:
            r.update(
                {
                    "batch": args.batch,
                    "seq": args.seq,
                    "steps": args.steps,
                    "wall_s": round(summary[-1][2], 1),
                }
            )
        write_csv(args.out, rows)  # appends: each finished run is kept
        rows = []
    base = dict((n, p) for n, p, _ in summary)
    for n, p, secs in summary:
        rel_adamw = p / base["adamw"] - 1 if "adamw" in base else float("nan")
        rel_ref = p / base["galore_torch"] - 1 if "galore_torch" in base else float("nan")
        print(
            f"FINAL {n:26s} val ppl {p:.4f}  vs adamw {100 * rel_adamw:+.2f}%  "
            f"vs galore_torch {100 * rel_ref:+.2f}%  wall {secs:.0f} s"
        )


if __name__ == "__main__":
    main()
