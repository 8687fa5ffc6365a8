"""End to end on the CPU: tokens/s of greedy ``generate`` on the real SmolLM2-135M-Instruct,
dense against the best mode at the sparsity where its perplexity stays within 5% of dense
(read from ``results/quality_cpu.csv``), interleaved runs in one process (medians).

    python benchmarks/bench_e2e.py [--rounds 5] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def best_config(path: Path, limit: float = 1.05) -> tuple[str, float, float]:
    """(mode, sparsity, ppl_ratio) skipping the most weight reads with perplexity within limit."""
    best = ("", 0.0, 1.0, -1.0)
    with open(path) as f:
        for row in csv.DictReader(f):
            deployable = row["mode"] != "dense" and "oracle" not in row["mode"]
            if row["bench"] != "ppl" or not deployable or not row["ppl_ratio"]:
                continue
            ratio, skipped = float(row["ppl_ratio"]), float(row["achieved_layer"])
            if ratio <= limit and skipped > best[3]:
                best = (row["mode"], float(row["sparsity"]), ratio, skipped)
    return best[0], best[1], best[2]


def main() -> None:
    from dejavu_sparse import Calibration, sparse_state, sparsify

    from tensor_utils_dev.bench import environment_tags, write_csv
    from tensor_utils_dev.models import cache_root, load_smollm2

    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calibration", default=str(cache_root() / "dejavu-sparse" / "smollm2"))
    p.add_argument("--out", default=str(HERE / "results" / "e2e_cpu.csv"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    name, sparsity, ratio = best_config(HERE / "results" / "quality_cpu.csv")
    mode = name.split("_")[0]
    greedy = name != "teal_uniform"
    model, tok = load_smollm2()
    calib = Calibration.load(args.calibration, model)
    attn = 0.0 if name.endswith("_mlp") else None
    sparsify(model, mode, sparsity, calib, greedy=greedy, attn_sparsity=attn)
    state = sparse_state(model)
    msgs = [{"role": "user", "content": "Explain what a Python decorator is, with an example."}]
    prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt")
    ids = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    rows = []
    for batch in (1, 4):
        inputs = ids.repeat(batch, 1)

        def gen(on, inputs=inputs):
            for s in state.states:
                s.enabled = on
            t0 = time.perf_counter()
            out = model.generate(inputs, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                 do_sample=False)  # fmt: skip
            return time.perf_counter() - t0, out

        gen(False), gen(True)  # warm-up
        times = {True: [], False: []}
        outs = {}
        for _ in range(args.rounds):
            for on in (False, True):
                t, outs[on] = gen(on)
                times[on].append(t)
        n = batch * args.new_tokens
        dense_tps = n / statistics.median(times[False])
        sparse_tps = n / statistics.median(times[True])
        same = int((outs[True][0, ids.shape[1] :] == outs[False][0, ids.shape[1] :]).sum())
        rows.append({"batch": batch, "mode": name, "sparsity": sparsity, "ppl_ratio": ratio,
                     "dense_tok_s": round(dense_tps, 2), "sparse_tok_s": round(sparse_tps, 2),
                     "speedup": round(sparse_tps / dense_tps, 3), "new_tokens": args.new_tokens,
                     "same_tokens_row0": same})  # fmt: skip
        print(rows[-1], flush=True)
    tags = {**environment_tags(packages=["dejavu-sparse"]), "model": "SmolLM2-135M-Instruct",
            "dtype": "float32", "threads": str(args.threads)}  # fmt: skip
    write_csv(args.out, rows, tags=tags)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
