"""End to end on the CPU: tokens/s of greedy ``generate``, dense against a sparse mode,
interleaved runs in one process (medians), and the perplexity of both on held-out text.

SmolLM2-135M-Instruct by default, with the best mode at the sparsity where its perplexity stays
within 5% of dense (read from ``results/quality_cpu.csv``); ``--model qwen-0.5b`` /
``qwen-1.5b`` (Qwen2.5-Coder-Instruct, benchmark-only loaders of tensor-utils-dev) with
``--mode``/``--sparsity``, where a batch-1 decode step streams more weight per operation.

    python benchmarks/bench_e2e.py [--model qwen-0.5b --mode teal --sparsity 0.3 --uniform]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path
from typing import Any, cast

import torch
from bench_decode_cpu import backend

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


def load(name: str):
    from tensor_utils_dev.models import load_qwen_coder, load_smollm2

    if name == "smollm2":
        return load_smollm2()
    return load_qwen_coder(name.split("-", 1)[1])


def calibration_for(model, tok, path: Path, tokens: int):
    """The cached calibration of ``name``, else a TEAL/CATS-only one (thresholds; tiny
    predictors that these runs do not use) on the calibration text, saved for reuse."""
    from dejavu_sparse import Calibration, calibrate
    from dejavu_sparse.text import stdlib_text

    try:
        return Calibration.load(path, model)
    except Exception:
        ids = tok(stdlib_text("calibration"), return_tensors="pt")["input_ids"][0][:tokens]
        calib = calibrate(model, ids, seq_len=256, rank=8, epochs=1, greedy=False,
                          source="pydoc_data.topics (calibration topics)")  # fmt: skip
        calib.save(path)
        return calib


def main() -> None:
    from dejavu_sparse import sparse_state, sparsify, unsparsify
    from dejavu_sparse.evaluate import perplexity
    from dejavu_sparse.text import stdlib_text

    from tensor_utils_dev.bench import environment_tags, results_dir, write_csv
    from tensor_utils_dev.models import cache_root

    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2", choices=("smollm2", "qwen-0.5b", "qwen-1.5b"))
    p.add_argument("--mode", help="default (SmolLM2): the best mode within 5%% perplexity")
    p.add_argument("--sparsity", type=float)
    p.add_argument("--uniform", action="store_true", help="TEAL without the greedy allocation")
    p.add_argument("--block-size", type=int, default=1,
                   help="TEAL's block option: input channels in whole blocks of this size")  # fmt: skip
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--batches", type=int, nargs="+", default=[1])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-tokens", type=int, default=512, help="perplexity tokens (0: skip)")
    p.add_argument("--calibration", help="default: the cache's dejavu-sparse/<model>")
    p.add_argument("--calib-tokens", type=int, default=1024,
                   help="tokens for a new calibration (thresholds only)")  # fmt: skip
    p.add_argument("--out", help="default: results/e2e_cpu_<model>.csv")
    p.add_argument("--compare-backend", default="",
                   help="also time the sparse model on these backends ('plain': PyTorch, no C)")  # fmt: skip
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.mode is None:
        name, sparsity, _ = best_config(HERE / "results" / "quality_cpu.csv")
        mode, greedy = name.split("_")[0], "uniform" not in name
        args.block_size = int(name.rpartition("_b")[2]) if "_b" in name else 1
    else:
        mode, sparsity, greedy = args.mode, float(args.sparsity or 0.3), not args.uniform
        name = mode if greedy or mode != "teal" else "teal_uniform"
        name += f"_b{args.block_size}" if args.block_size > 1 else ""
    model, tok = load(args.model)
    model = cast(Any, model)  # a transformers causal LM (its stubs do not type generate)
    path = args.calibration or str(cache_root() / "dejavu-sparse" / args.model)
    calib = calibration_for(model, tok, Path(path), args.calib_tokens)
    ratio = dense_ppl = sparse_ppl = float("nan")
    if args.eval_tokens:
        ev = tok(stdlib_text("evaluation"), return_tensors="pt")["input_ids"][0][: args.eval_tokens]
        dense_ppl = perplexity(model, ev, seq_len=256)
        sparsify(model, mode, sparsity, calib, greedy=greedy, prefill=True,
                 block_size=args.block_size)  # fmt: skip
        sparse_ppl = perplexity(model, ev, seq_len=256)
        ratio = sparse_ppl / dense_ppl
        unsparsify(model)
        print(f"perplexity dense {dense_ppl:.3f}, {name} {sparsity}: {sparse_ppl:.3f} "
              f"(x{ratio:.4f})", flush=True)  # fmt: skip
    sparsify(model, mode, sparsity, calib, greedy=greedy, track=False, block_size=args.block_size)
    state = sparse_state(model)
    msgs = [{"role": "user", "content": "Explain what a Python decorator is, with an example."}]
    prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt")
    ids = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    rows = []
    for batch in args.batches:
        inputs = ids.repeat(batch, 1)

        def gen(on, forced="", inputs=inputs):
            for s in state.states:
                s.enabled = on
            t0 = time.perf_counter()
            with backend(forced):
                out = model.generate(inputs, max_new_tokens=args.new_tokens,
                                     min_new_tokens=args.new_tokens, do_sample=False)  # fmt: skip
            return time.perf_counter() - t0, out

        variants = {"dense": (False, ""), "sparse": (True, "")}
        if args.compare_backend:
            variants["sparse_other"] = (True, args.compare_backend)
        for on, forced in variants.values():  # warm-up
            gen(on, forced)
        times: dict[str, list[float]] = {v: [] for v in variants}
        outs = {}
        for _ in range(args.rounds):
            for v, (on, forced) in variants.items():
                t, outs[v] = gen(on, forced)
                times[v].append(t)
        n = batch * args.new_tokens
        dense_tps = n / statistics.median(times["dense"])
        sparse_tps = n / statistics.median(times["sparse"])
        same = int((outs["sparse"][0, ids.shape[1] :] == outs["dense"][0, ids.shape[1] :]).sum())
        other = {}
        if args.compare_backend:
            other_tps = n / statistics.median(times["sparse_other"])
            other = {"other_backend": args.compare_backend, "other_tok_s": round(other_tps, 2),
                     "other_speedup": round(other_tps / dense_tps, 3)}  # fmt: skip
        rows.append({"model": args.model, "batch": batch, "mode": name, "sparsity": sparsity,
                     "ppl_dense": round(dense_ppl, 4), "ppl_sparse": round(sparse_ppl, 4),
                     "ppl_ratio": round(ratio, 4),
                     "dense_tok_s": round(dense_tps, 2), "sparse_tok_s": round(sparse_tps, 2),
                     "speedup": round(sparse_tps / dense_tps, 3), "new_tokens": args.new_tokens,
                     "same_tokens_row0": same, **other,
                     "load1": round(os.getloadavg()[0], 2)})  # fmt: skip
        print(rows[-1], flush=True)
    tags = {**environment_tags(packages=["dejavu-sparse"]), "dtype": "float32",
            "threads": str(args.threads)}  # fmt: skip
    out = args.out or str(results_dir(__file__) / f"e2e_cpu_{args.model}.csv")
    write_csv(out, rows, tags=tags)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
