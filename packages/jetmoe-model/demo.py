"""jetmoe-model's part of the tour: pre-train a tiny JetMoE for about a minute on real text.

The text is the docstrings of Python's standard library (shipped with every interpreter),
tokenized with SmolLM2's tokenizer; the vocabulary is cut down to the token ids that occur, so a
CPU step stays fast. Lines report the training loss falling, held-out loss before and after, and
how evenly the attention and MLP routers spread tokens over their experts.
"""

from __future__ import annotations

import importlib
import inspect
import time

import torch

MODULES = (
    "argparse", "collections", "json", "pathlib", "itertools", "functools", "textwrap",
    "statistics", "datetime", "decimal", "fractions", "heapq", "bisect", "string", "re",
    "shutil", "tempfile", "logging", "csv", "dataclasses", "enum", "typing", "contextlib",
    "difflib", "inspect", "zipfile", "tarfile", "subprocess", "threading", "queue",
)  # fmt: skip


def stdlib_docstrings() -> str:
    docs = []
    for name in MODULES:
        module = importlib.import_module(name)
        for obj in [module, *vars(module).values()]:
            if inspect.ismodule(obj) and obj is not module:
                continue
            doc = inspect.getdoc(obj) if callable(obj) or obj is module else None
            if doc and len(doc) > 80:
                docs.append(doc)
    return "\n\n".join(dict.fromkeys(docs))


def run(ctx) -> list[str]:
    from jetmoe_model import JetMoEConfig, JetMoEForCausalLM
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    device = torch.device(getattr(ctx, "device", "cpu") or "cpu")
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_dir)
    ids = torch.tensor(tokenizer(stdlib_docstrings())["input_ids"])
    vocab, compact = torch.unique(ids, return_inverse=True)  # real ids -> 0..V-1
    seq, batch = 64, 16
    usable = compact[: (compact.numel() // seq) * seq].view(-1, seq)
    held_out, train = usable[:32], usable[32:]

    config = JetMoEConfig(
        vocab_size=len(vocab), hidden_size=128, num_hidden_layers=2, num_key_value_heads=2,
        kv_channels=32, intermediate_size=256, num_local_experts=4, num_experts_per_tok=2,
        max_position_embeddings=seq, rms_norm_eps=1e-5,
    )  # fmt: skip
    model = JetMoEForCausalLM(config).to(device)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)

    def evaluate():
        model.eval()
        with torch.no_grad():
            x = held_out.to(device)
            out = model(x, labels=x, output_router_logits=True)
        model.train()
        return out

    before = evaluate()
    budget_s, steps, losses, start = 55.0, 0, [], time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    while time.perf_counter() - start < budget_s and steps < 2000:
        x = train[torch.randint(0, train.shape[0], (batch,), generator=gen)].to(device)
        out = model(x, labels=x, output_router_logits=True)  # + the paper's router losses
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(out.lm_loss.item())
        steps += 1
    seconds = time.perf_counter() - start
    after = evaluate()

    def trace(values, points=6):
        picks = [values[round(i * (len(values) - 1) / (points - 1))] for i in range(points)]
        return " -> ".join(f"{v:.2f}" for v in picks)

    lines = [
        f"tiny JetMoE: {params / 1e6:.2f}M params, 2 layers, MoA + MoE with 4 experts top-2, "
        f"{len(vocab)}-token vocabulary cut from SmolLM2's; {train.numel()} training tokens of "
        f"stdlib docstrings",
        f"trained {steps} steps ({steps * batch * seq} tokens) in {seconds:.0f} s on {device}: "
        f"train loss {trace(losses)}",
        f"held-out loss {before.lm_loss.item():.2f} -> {after.lm_loss.item():.2f} "
        f"(uniform guess = ln {len(vocab)} = {torch.log(torch.tensor(float(len(vocab)))):.2f})",
        f"aux losses after training (sum over 4 routers): load balance {after.aux_loss.item():.3f} "
        f"(4.000 = perfectly balanced), z-loss {after.z_loss.item():.2f}",
    ]
    names = [f"layer {i} {kind}" for i in range(2) for kind in ("attention", "mlp")]
    for name, index in zip(names, after.router_expert_index, strict=True):
        share = torch.bincount(index.reshape(-1).cpu(), minlength=4).float()
        share = share / share.sum()
        lines.append(f"expert load {name:15s}: " + " ".join(f"{s:.0%}" for s in share.tolist()))
    return lines


if __name__ == "__main__":
    from pathlib import Path
    from types import SimpleNamespace

    from tensor_utils_dev.models import smollm2_dir

    for line in run(SimpleNamespace(model_dir=smollm2_dir(), workdir=Path("."), device="cpu")):
        print(line)
