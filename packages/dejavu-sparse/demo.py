"""Tour part: the real SmolLM2's perplexity on real English text, dense versus each mode at 40%
sparsity, with the achieved sparsity per layer (calibrated here on a disjoint part of the text)."""

from __future__ import annotations

import time


def run(ctx) -> list[str]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is faster on a busy 2-core machine
    try:
        return _run(ctx, torch)
    finally:
        torch.set_num_threads(threads)


def _run(ctx, torch) -> list[str]:
    from dejavu_sparse import calibrate, sparse_state, sparsify, unsparsify
    from dejavu_sparse.evaluate import perplexity
    from dejavu_sparse.text import stdlib_text
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(ctx.model_dir, dtype=torch.float32)
    model = model.to(ctx.device).eval()
    tok = AutoTokenizer.from_pretrained(ctx.model_dir)
    cal = tok(stdlib_text("calibration"), return_tensors="pt")["input_ids"][0][:2048]
    ev = tok(stdlib_text("evaluation"), return_tensors="pt")["input_ids"][0][:1024]
    t0 = time.perf_counter()
    calib = calibrate(model, cal, seq_len=256, rank=256, epochs=5, progress=False)
    calib.save(ctx.workdir / "dejavu-sparse-calibration")
    lines = [f"calibrated on {calib.manifest['tokens']} tokens of Python's bundled docs in "
             f"{time.perf_counter() - t0:.0f} s (predictor rank 256, TEAL greedy allocation)"]  # fmt: skip
    dense = perplexity(model, ev, seq_len=256)
    lines.append(f"dense perplexity on {ev.numel()} held-out tokens: {dense:.2f}")
    for mode in ("dejavu", "teal", "cats"):
        sparsify(model, mode, 0.4, calib, prefill=True)
        ppl = perplexity(model, ev, seq_len=256)
        rep = sparse_state(model).report()
        per_layer = " ".join(f"{r['layer']:.2f}" for r in rep["layers"])
        lines.append(f"{mode} at 40%: perplexity {ppl:.2f} (x{ppl / dense:.3f}); weight reads "
                     f"skipped {rep['mean']['layer']:.1%} (MLP {rep['mean']['mlp']:.1%}, "
                     f"attention {rep['mean']['attn']:.1%}); per layer: {per_layer}")  # fmt: skip
        unsparsify(model)
    sparsify(model, "teal", 0.4, calib)
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"].to(ctx.device)
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    lines.append(f"teal 40% greedy generate: {tok.decode(out[0, ids.shape[1] :]).strip()!r}")
    unsparsify(model)
    return lines


if __name__ == "__main__":
    from pathlib import Path
    from types import SimpleNamespace

    from tensor_utils_dev.models import smollm2_dir

    for line in run(SimpleNamespace(model_dir=smollm2_dir(), workdir=Path("."), device="cpu")):
        print(line)
