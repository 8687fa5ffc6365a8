"""Tour part for rho-select: score a real English passage (with a line of junk in it) with the
real SmolLM2 as the reference model through the CLI, print the passage with the tokens a fresh
student would train on highlighted, then run a few selective steps on a tiny student.

    run(ctx) -> list[str]      # ctx.model_dir, ctx.workdir, ctx.device
"""

from __future__ import annotations

import json
import subprocess
import sys

RATIO, STEPS, SEQ_LEN = 0.6, 6, 96
PASSAGE = (
    "The Python standard library is very extensive, offering a wide range of facilities. "
    "The library contains built-in modules that provide access to system functionality such "
    "as file I/O that would otherwise be inaccessible to Python programmers, as well as "
    "modules written in Python that provide standardized solutions for many problems that "
    "occur in everyday programming. qZ7#kx!!v9 Lp0;;wQ&&3 zz_8uT Some of these modules are "
    "explicitly designed to encourage and enhance the portability of Python programs by "
    "abstracting away platform-specifics into platform-neutral APIs."
)
JUNK = "qZ7#kx!!v9 Lp0;;wQ&&3 zz_8uT"
SELECTED, RESET = "\x1b[1;42;30m", "\x1b[0m"


def run(ctx) -> list[str]:
    import torch
    from rho_select import ReferenceScores, selective_loss
    from rho_select.hf import final_hidden_states, lm_head_weight
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    data = ctx.workdir / "passage.txt"
    data.write_text(PASSAGE)
    out = ctx.workdir / "scores"
    cmd = [
        sys.executable, "-m", "rho_select.cli", "score", "--model", str(ctx.model_dir),
        "--data", str(data), "--seq-len", str(SEQ_LEN), "--out", str(out),
        "--device", str(ctx.device), "--json", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"rho-select score failed: {proc.stderr.strip()}")
    report = json.loads(proc.stdout)
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_dir)
    scores = ReferenceScores.open(out)
    scores.check(tokenizer=tokenizer, seq_len=SEQ_LEN)
    ids, ref = scores.load()

    # a tiny student with SmolLM2's vocabulary, fresh: its loss is ~log(vocab) everywhere, so
    # the first selection prefers what the reference finds predictable
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    student = LlamaForCausalLM(config).to(ctx.device)
    ids, ref = ids.to(ctx.device), ref.to(ctx.device)
    with torch.no_grad():
        hidden = final_hidden_states(student, ids)
        first = selective_loss(hidden, lm_head_weight(student), ids, ref, RATIO, shift=True)
    mask = first.selected_mask[0].tolist()
    pieces = [tokenizer.decode([ids[0, 0]])]
    for token, chosen in zip(ids[0, 1:].tolist(), mask, strict=True):
        text = tokenizer.decode([token])
        pieces.append(f"{SELECTED}{text}{RESET}" if chosen else text)
    # which packed tokens fall inside the junk string (the passage is the sequence's start)
    enc = tokenizer(PASSAGE, add_special_tokens=False, return_offsets_mapping=True)
    assert enc["input_ids"][:SEQ_LEN] == ids[0].tolist()
    lo = PASSAGE.index(JUNK)
    junk_tokens = [
        i
        for i, (a, b) in enumerate(enc["offset_mapping"][:SEQ_LEN])
        if a < lo + len(JUNK) and b > lo
    ]
    junk_selected = sum(mask[i - 1] for i in junk_tokens if i > 0)

    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3)
    history = []
    for _ in range(STEPS):
        out_step = selective_loss(
            final_hidden_states(student, ids), lm_head_weight(student), ids, ref, RATIO, shift=True
        )
        out_step.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append(out_step)
    first_step, last = history[0], history[-1]
    ref_mean = float(ref[0, 1:].mean())
    return [
        f"rho-select score: SmolLM2 as the reference over {report['tokens']} tokens "
        f"({report['sequences']} x {report['seq_len']}) in {report['seconds']:.1f} s; "
        f"mean reference loss {ref_mean:.2f} nats/token",
        f"tokens a fresh student trains on at k={RATIO:.0%} (highlighted): "
        + "".join(pieces).replace("\n", " "),
        f"the junk string's {len(junk_tokens)} tokens: {junk_selected} selected "
        f"(the reference finds them unpredictable, so their excess loss ranks low)",
        f"{STEPS} selective steps on a {sum(p.numel() for p in student.parameters()) / 1e6:.1f}M-"
        f"parameter student: loss {float(first_step.loss.detach()):.2f} -> {float(last.loss.detach()):.2f}, "
        f"selected {float(last.selected_fraction):.0%}, selected/unselected token loss "
        f"{float(last.selected_loss):.2f}/{float(last.unselected_loss):.2f}",
    ]


if __name__ == "__main__":
    from pathlib import Path
    from tempfile import TemporaryDirectory
    from types import SimpleNamespace

    from tensor_utils_dev.models import smollm2_dir

    with TemporaryDirectory() as tmp:
        for line in run(SimpleNamespace(model_dir=smollm2_dir(), workdir=Path(tmp), device="cpu")):
            print(line)
