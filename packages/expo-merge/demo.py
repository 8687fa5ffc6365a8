"""Tour part for expo-merge: make an "aligned" SmolLM2 with a few DPO steps, extrapolate it past
the SFT model with the CLI, and show the merged model moves further along the preference
direction and still generates.

    run(ctx) -> list[str]      # ctx.model_dir, ctx.workdir, ctx.device
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

PAIRS = [  # (prompt, chosen, rejected): prefer helpful, complete answers
    ("What is the capital of France?", "The capital of France is Paris.", "I don't know."),
    ("How many legs does a spider have?", "A spider has eight legs.", "Spiders are animals."),
    ("What is 12 times 12?", "12 times 12 is 144.", "That is a hard question."),
    ("Name a primary color.", "Red is a primary color.", "Colors are nice."),
]
STEPS, LR, BETA, ALPHA, TRAIN_LAYERS = 5, 1e-5, 0.1, 0.5, 6


def _batch(tokenizer, device):
    """All chosen/rejected sequences in one right-padded batch (rows 2i, 2i+1 = pair i)."""
    import torch

    rows, starts = [], []
    for prompt, chosen, rejected in PAIRS:
        chat = [{"role": "user", "content": prompt}]
        head = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt")
        head = head["input_ids"][0].tolist()
        for answer in (chosen, rejected):
            tail = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            rows.append(head + tail)
            starts.append(len(head))
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id or 0)
    attn = torch.zeros_like(ids)
    answer = torch.zeros(len(rows), width - 1)
    for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        attn[i, : len(row)] = 1
        answer[i, start - 1 : len(row) - 1] = 1  # positions predicting answer tokens
    return ids.to(device), attn.to(device), answer.to(device)


def _logps(model, batch):
    """Summed log-probability of each row's answer tokens."""
    import torch

    ids, attn, answer = batch
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
    lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (lp * answer).sum(-1)


def _margin(model, batch):
    """Mean log p(chosen) - log p(rejected) over the pairs."""
    import torch

    with torch.no_grad():
        lp = _logps(model, batch)
    return float((lp[0::2] - lp[1::2]).mean())


def run(ctx) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    device = ctx.device
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_dir)
    policy = AutoModelForCausalLM.from_pretrained(ctx.model_dir, dtype=torch.float32).to(device)
    batch = _batch(tokenizer, device)
    policy.eval()
    with torch.no_grad():
        ref = _logps(policy, batch)
    sft_margin = _margin(policy, batch)

    # "Aligned": a few DPO steps against the frozen SFT log-probs on the hand-written pairs,
    # training the top layers only (keeps the tour fast on two CPU cores).
    t0 = time.perf_counter()
    top = {
        f"model.layers.{i}."
        for i in range(
            policy.config.num_hidden_layers - TRAIN_LAYERS, policy.config.num_hidden_layers
        )
    }
    params = []
    for name, p in policy.named_parameters():
        p.requires_grad_(any(name.startswith(t) for t in top) or name == "model.norm.weight")
        if p.requires_grad:
            params.append(p)
    opt = torch.optim.Adam(params, lr=LR)
    for _ in range(STEPS):
        opt.zero_grad()
        delta = _logps(policy, batch) - ref
        loss = -torch.nn.functional.logsigmoid(BETA * (delta[0::2] - delta[1::2])).mean()
        loss.backward()
        opt.step()
    policy.eval()
    aligned_dir = ctx.workdir / "smollm2-dpo"
    policy.save_pretrained(aligned_dir)
    tokenizer.save_pretrained(aligned_dir)
    aligned_margin = _margin(policy, batch)
    train_s = time.perf_counter() - t0
    del policy, opt

    # ExPO with the CLI, exactly as a user would run it.
    merged_dir = ctx.workdir / f"smollm2-dpo-expo-{ALPHA:g}"
    cmd = [
        sys.executable,
        "-m",
        "expo_merge.cli",
        str(ctx.model_dir),
        str(aligned_dir),
        "--alpha",
        str(ALPHA),
        "-o",
        str(merged_dir),
        "--json",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"expo-merge failed: {proc.stderr.strip()}")
    report = json.loads(proc.stdout)
    stats = report["per_alpha"][0]

    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).to(device).eval()
    merged_margin = _margin(merged, batch)
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt")[
        "input_ids"
    ].to(device)
    out = merged.generate(ids, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
    copied = sorted(report["side_files"])
    return [
        f"aligned = SmolLM2 + {STEPS} DPO steps (top {TRAIN_LAYERS} layers) on {len(PAIRS)} hand-written "
        f"preference pairs ({train_s:.0f} s)",
        f"expo-merge SFT ALIGNED --alpha {ALPHA:g}: {report['tensors']} tensors, "
        f"{report['bytes_read'] / 1e6:.0f} MB read, {report['bytes_written'] / 1e6:.0f} MB written in "
        f"{report['seconds']:.1f} s; {stats['fraction_changed']:.1%} of elements changed, realized/intended "
        f"step {stats['realized_over_intended']:.3f}",
        f"copied from ALIGNED (not SFT): {', '.join(copied)}",
        f"mean log-prob margin chosen - rejected: SFT {sft_margin:+.3f}, aligned {aligned_margin:+.3f}, "
        f"ExPO alpha={ALPHA:g} {merged_margin:+.3f} (extrapolation continues the DPO direction)",
        f"merged model, greedy answer to 'What is the capital of France?': {answer!r}",
    ]


if __name__ == "__main__":
    from pathlib import Path
    from tempfile import TemporaryDirectory
    from types import SimpleNamespace

    from tensor_utils_dev.models import smollm2_dir

    with TemporaryDirectory() as tmp:
        for line in run(SimpleNamespace(model_dir=smollm2_dir(), workdir=Path(tmp), device="cpu")):
            print(line)
