"""Demo: fine-tune the real SmolLM2-135M-Instruct a few steps on the CPU with GaLoreAdamW and
compare its optimizer-state bytes with torch.optim.AdamW's (both measured from the optimizers'
own state after stepping).

    run(ctx) -> list[str]   # ctx.model_dir, ctx.workdir, ctx.device
"""

from __future__ import annotations

import inspect
import json
import time


def _text_corpus() -> str:
    """Real English/code text that ships with Python: the stdlib's own docstrings."""
    import argparse
    import collections
    import json as json_mod

    return "\n\n".join(inspect.getdoc(m) or "" for m in (argparse, collections, json_mod, inspect))


def state_bytes(optimizer) -> int:
    """Bytes of every tensor in the optimizer's state (moments, projectors, 8-bit scales)."""
    return sum(
        v.numel() * v.element_size()
        for s in optimizer.state.values()
        for v in s.values()
        if hasattr(v, "element_size")
    )


def run(ctx) -> list[str]:
    import torch
    from galore_optim import GaLoreAdamW, galore_param_groups
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    device = torch.device(getattr(ctx, "device", "cpu") or "cpu")
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_dir)
    model = AutoModelForCausalLM.from_pretrained(ctx.model_dir, dtype=torch.float32).to(device)
    model.train()
    ids = tokenizer(_text_corpus(), return_tensors="pt").input_ids[0]
    seq, batch, steps = 48, 2, 4
    chunks = ids[: (ids.numel() // seq) * seq].view(-1, seq)
    batches = [chunks[(i * batch) % len(chunks) :][:batch].to(device) for i in range(steps)]
    held_out = chunks[-batch:].to(device)

    def loss_on(x):
        return model(input_ids=x, labels=x).loss

    groups = galore_param_groups(
        model, ["self_attn", "mlp"], rank=64, update_proj_gap=200, scale=0.25, solver="randomized"
    )
    optimizer = GaLoreAdamW(groups, lr=1e-3)
    lines = []
    with torch.no_grad():
        before = loss_on(held_out).item()
    t0 = time.perf_counter()
    for step, x in enumerate(batches):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_on(x)
        loss.backward()
        optimizer.step()
        lines.append(f"step {step}: train loss {loss.item():.4f}")
    elapsed = time.perf_counter() - t0
    with torch.no_grad():
        after = loss_on(held_out).item()
    galore_bytes = state_bytes(optimizer)
    del optimizer

    # AdamW on the same model, one step: its state is what GaLore replaces.
    adamw = torch.optim.AdamW(model.parameters(), lr=1e-5)
    adamw.zero_grad()
    loss_on(batches[0]).backward()
    adamw.step()
    adamw_bytes = state_bytes(adamw)
    n_params = sum(p.numel() for p in model.parameters())
    lines += [
        f"held-out loss: {before:.4f} -> {after:.4f} after {steps} GaLoreAdamW steps ({elapsed:.1f} s)",
        f"optimizer state: GaLoreAdamW {galore_bytes / 2**20:.1f} MiB vs AdamW {adamw_bytes / 2**20:.1f} MiB "
        f"({100 * (1 - galore_bytes / adamw_bytes):.1f}% less; model {n_params / 1e6:.1f}M params, "
        f"rank 64 on attention + MLP weights; embeddings keep full AdamW state)",
    ]
    (ctx.workdir / "galore_demo.json").write_text(
        json.dumps(
            {
                "loss_before": before,
                "loss_after": after,
                "galore_state_bytes": galore_bytes,
                "adamw_state_bytes": adamw_bytes,
            }
        )
        + "\n"
    )
    return lines


if __name__ == "__main__":
    import tempfile
    from pathlib import Path
    from types import SimpleNamespace

    from tensor_utils_dev.models import smollm2_dir

    with tempfile.TemporaryDirectory() as tmp:
        for line in run(SimpleNamespace(model_dir=smollm2_dir(), workdir=Path(tmp), device="cpu")):
            print(line)
