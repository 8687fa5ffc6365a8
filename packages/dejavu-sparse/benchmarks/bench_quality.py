"""Quality on the real SmolLM2-135M-Instruct (CPU): perplexity against sparsity for each mode,
and the Deja Vu predictors' recall of the oracle top-K per layer.

Calibration on the Python documentation topics of ``dejavu_sparse.text`` (calibration part);
evaluation on the disjoint evaluation part. Every token is predicted with its mode's per-token
selection (``prefill`` sparsity, the function a decode step computes).

    python benchmarks/bench_quality.py [--quick] [--out results/quality_cpu.csv]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
# name -> sparsify keyword arguments (dejavu_oracle: the true top-K, the predictors' ceiling)
CONFIGS = [("dejavu", {}), ("dejavu_mlp", {"attn_sparsity": 0.0}), ("dejavu_oracle", {}),
           ("dejavu_oracle_mlp", {"attn_sparsity": 0.0}), ("teal", {}),
           ("teal_uniform", {"greedy": False}), ("cats", {})]  # fmt: skip
# TEAL's block option: input channels kept in whole blocks of b (teal_b16: greedy allocation)
CONFIGS += [(f"teal_b{b}", {"block_size": b}) for b in (8, 16, 32, 64)]
CONFIGS += [(f"teal_uniform_b{b}", {"greedy": False, "block_size": b}) for b in (8, 16, 32, 64)]


def recall_rows(model, calib, ids, seq_len: int, sparsities) -> list[dict]:
    """Per layer: the fraction of the oracle top-K neurons (|silu(g) u| ||W_down col||) and heads
    (output norm) that the predictor's top-K finds, on held-out text, at each sparsity."""
    from dejavu_sparse.calibration import collect, recall_at

    rec = collect(
        model,
        ids,
        seq_len=seq_len,
        greedy_tokens=0,
        progress=False,
        lookahead=bool(calib.manifest.get("lookahead", True)),
    )
    rows = []
    for i in range(len(rec.layers)):
        xm, ym = torch.cat(rec.pred_mlp_in[i]), torch.cat(rec.mlp_label[i])
        xa, ya = torch.cat(rec.pred_attn_in[i]), torch.cat(rec.head_label[i])
        for s in sparsities:
            km = max(1, round((1 - s) * ym.shape[1]))
            kh = max(1, round((1 - s) * ya.shape[1]))
            rows.append({"bench": "recall", "layer": i, "sparsity": s,
                         "mlp_recall": round(recall_at(calib.predictor("mlp", i), xm, ym, km), 4),
                         "head_recall": round(recall_at(calib.predictor("heads", i), xa, ya, kh), 4),
                         "mlp_random": round(km / ym.shape[1], 4),
                         "head_random": round(kh / ya.shape[1], 4)})  # fmt: skip
    return rows


def main() -> None:
    from dejavu_sparse import Calibration, calibrate, sparse_state, sparsify, unsparsify
    from dejavu_sparse.evaluate import perplexity
    from dejavu_sparse.text import stdlib_text

    from tensor_utils_dev.bench import environment_tags, results_dir, write_csv
    from tensor_utils_dev.models import cache_root, load_smollm2

    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(results_dir(__file__) / "quality_cpu.csv"))
    p.add_argument("--calibration", default=str(cache_root() / "dejavu-sparse" / "smollm2"),
                   help="reused when present (delete to recalibrate)")  # fmt: skip
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--configs", default="dejavu,teal_uniform",
                   help=f"comma-separated, from {','.join(c[0] for c in CONFIGS)}")  # fmt: skip
    p.add_argument("--sparsities", default="0.5", help="comma-separated (page: 0.2,...,0.7)")
    p.add_argument("--no-dense", action="store_true", help="append to an existing CSV")
    p.add_argument("--no-recall", action="store_true")
    p.add_argument("--rank", type=int, default=128, help="predictor rank (a 576-wide model)")
    p.add_argument("--calib-tokens", type=int, default=2048, help="page: 4096 and 16384")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--no-lookahead", action="store_true", help="predictors read their own block")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_smollm2()
    calib_tokens, eval_tokens, seq = (
        (2048, 512, 256) if args.quick else (args.calib_tokens, 1024, 256)
    )
    sparsities = [0.0, *(float(v) for v in args.sparsities.split(","))]
    cal_ids = tok(stdlib_text("calibration"), return_tensors="pt")["input_ids"][0][:calib_tokens]
    ev_ids = tok(stdlib_text("evaluation"), return_tensors="pt")["input_ids"][0][:eval_tokens]
    t0 = time.perf_counter()
    try:
        calib = Calibration.load(args.calibration, model)
    except Exception:
        calib = calibrate(model, cal_ids, seq_len=seq, rank=args.rank, epochs=args.epochs,
                          lookahead=not args.no_lookahead,
                          source="pydoc_data.topics (calibration topics)")  # fmt: skip
        calib.save(args.calibration)
    print(f"calibration ready in {time.perf_counter() - t0:.0f} s", flush=True)
    tags = {**environment_tags(packages=["dejavu-sparse"]), "model": "SmolLM2-135M-Instruct",
            "calib_tokens": str(calib.manifest["tokens"]), "eval_tokens": str(ev_ids.numel()),
            "predictor_rank": str(calib.manifest["rank"]),
            "lookahead": str(calib.manifest.get("lookahead", True)),
            "dtype": "float32"}  # fmt: skip
    rows = []
    dense = perplexity(model, ev_ids, seq_len=seq)
    if not args.no_dense:
        rows.append({"bench": "ppl", "mode": "dense", "sparsity": 0.0, "ppl": round(dense, 4),
                 "ppl_ratio": 1.0, "achieved_layer": 0.0, "achieved_mlp": 0.0, "achieved_attn": 0.0})  # fmt: skip
    print(f"dense ppl {dense:.3f}", flush=True)
    configs = [c for c in CONFIGS if c[0] in args.configs.split(",")]
    for name, extra in configs:
        mode = name.split("_")[0]
        for s in sparsities[1:]:
            sparsify(model, mode, s, calib, prefill=True, **extra)
            for st in sparse_state(model).states:
                st.oracle = "oracle" in name
            ppl = perplexity(model, ev_ids, seq_len=seq)
            rep = sparse_state(model).report()
            per_layer = ";".join(f"{r['layer']:.3f}" for r in rep["layers"])
            rows.append({"bench": "ppl", "mode": name, "sparsity": s, "ppl": round(ppl, 4),
                         "ppl_ratio": round(ppl / dense, 4),
                         "achieved_layer": round(rep["mean"]["layer"], 4),
                         "achieved_mlp": round(rep["mean"]["mlp"], 4),
                         "achieved_attn": round(rep["mean"]["attn"], 4),
                         "achieved_per_layer": per_layer})  # fmt: skip
            print(f"{name} {s:.1f}: ppl {ppl:.3f} (x{ppl / dense:.3f}), achieved {rep['mean']}",
                  flush=True)  # fmt: skip
            unsparsify(model)
    if not args.no_recall:
        rows += recall_rows(model, calib, ev_ids, seq, [0.3, 0.5, 0.7])
    write_csv(args.out, rows, tags=tags)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
