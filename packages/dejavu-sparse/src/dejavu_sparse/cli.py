"""``dejavu-sparse calibrate`` and ``dejavu-sparse evaluate``.

    dejavu-sparse calibrate MODEL_DIR OUT_DIR [--text FILE] [--tokens N] [--rank R] [--json]
    dejavu-sparse evaluate MODEL_DIR --calibration DIR --mode teal --sparsity 0.4 [--json]
        [--block-size 16]

Bad input ends with one line on stderr and exit status 2; Ctrl-C leaves no partial output (the
calibration directory is written to a temporary sibling and renamed into place).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from .errors import DejaVuSparseError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dejavu-sparse", description=(__doc__ or "").split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("calibrate", help="collect activations, train predictors, fit thresholds")
    c.add_argument("model", help="a transformers model directory (Llama, Mistral, Qwen2)")
    c.add_argument("out", help="calibration directory to write")
    c.add_argument("--text", help="UTF-8 text file (default: Python's bundled documentation)")
    c.add_argument("--tokens", type=int, default=8192, help="calibration tokens (default 8192)")
    c.add_argument("--seq-len", type=int, default=256)
    c.add_argument("--rank", type=int, default=1000, help="predictor inner size (default 1000)")
    c.add_argument("--epochs", type=int, default=10)
    c.add_argument("--no-greedy", action="store_true", help="skip TEAL's greedy allocation")
    c.add_argument("--no-lookahead", action="store_true",
                   help="predictors read their own block's input, not one block ahead")  # fmt: skip
    c.add_argument("--json", action="store_true", help="print a JSON summary")
    e = sub.add_parser("evaluate", help="perplexity dense vs a sparse mode")
    e.add_argument("model")
    e.add_argument("--calibration", required=True)
    e.add_argument("--mode", default="dejavu", choices=("dejavu", "teal", "cats"))
    e.add_argument("--sparsity", type=float, default=0.4)
    e.add_argument("--block-size", type=int, default=1,
                   help="teal: keep input channels in whole blocks of this size (8/16/32/64)")  # fmt: skip
    e.add_argument("--text", help="UTF-8 text file (default: Python's bundled documentation)")
    e.add_argument("--tokens", type=int, default=4096)
    e.add_argument("--seq-len", type=int, default=256)
    e.add_argument("--json", action="store_true")
    for q in (c, e):
        q.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
        q.add_argument("--device", default="cpu")
        q.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _load(args):
    import torch
    import transformers

    if args.quiet:
        transformers.utils.logging.disable_progress_bar()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(args.model)
    if not (path / "config.json").is_file():
        raise DejaVuSparseError(f"{path}: not a transformers model directory (no config.json)")
    config = AutoConfig.from_pretrained(path)
    from .arch import SUPPORTED

    if config.model_type not in SUPPORTED:
        raise DejaVuSparseError(
            f"unsupported architecture {config.model_type!r}: dejavu-sparse patches "
            f"Llama-family models ({', '.join(SUPPORTED)})"
        )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype))
    return model.to(args.device).eval(), AutoTokenizer.from_pretrained(path)


def _ids(args, tokenizer, part: str):
    from .text import stdlib_text

    if args.text:
        try:
            text = Path(args.text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DejaVuSparseError(f"{args.text}: cannot read text ({exc})") from None
    else:
        text = stdlib_text(part)
    ids = tokenizer(text, return_tensors="pt")["input_ids"][0][: args.tokens]
    if ids.numel() < args.seq_len:
        raise DejaVuSparseError(
            f"text has {ids.numel()} tokens, fewer than --seq-len {args.seq_len}"
        )
    return ids


def _calibrate(args) -> dict:
    from . import calibrate

    if args.tokens < 1 or args.rank < 1 or args.epochs < 1:
        raise DejaVuSparseError("--tokens, --rank and --epochs must be positive")
    model, tok = _load(args)
    ids = _ids(args, tok, "calibration")
    t0 = time.perf_counter()
    calib = calibrate(model, ids, seq_len=args.seq_len, rank=args.rank, epochs=args.epochs,
                      greedy=not args.no_greedy, progress=not args.quiet,
                      lookahead=not args.no_lookahead,
                      source=args.text or "pydoc_data.topics (calibration topics)")  # fmt: skip
    calib.save(args.out)
    m = calib.manifest
    return {"out": str(args.out), "model": m["model"], "tokens": m["tokens"], "rank": m["rank"],
            "train_recall_mlp_mean": sum(m["train_recall_mlp"]) / len(m["train_recall_mlp"]),
            "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


def _evaluate(args) -> dict:
    from . import Calibration, sparse_state, sparsify
    from .evaluate import perplexity
    from .patch import _check_sparsity

    _check_sparsity("--sparsity", args.sparsity)
    calib = Calibration.load(args.calibration)  # a bad directory fails before the model loads
    model, tok = _load(args)
    calib.check_model(model)
    ids = _ids(args, tok, "evaluation")
    dense = perplexity(model, ids, seq_len=args.seq_len, progress=not args.quiet)
    sparsify(model, args.mode, args.sparsity, calib, prefill=True, block_size=args.block_size)
    sparse = perplexity(model, ids, seq_len=args.seq_len, progress=not args.quiet)
    rep = sparse_state(model).report()
    block = {"block_size": args.block_size} if args.block_size > 1 else {}
    return {"mode": args.mode, "sparsity": args.sparsity, **block, "tokens": int(ids.numel()),
            "ppl_dense": round(dense, 4), "ppl_sparse": round(sparse, 4),
            "ppl_ratio": round(sparse / dense, 4), "achieved": rep["mean"],
            "achieved_per_layer": [round(r["layer"], 4) for r in rep["layers"]]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        result = _calibrate(args) if args.command == "calibrate" else _evaluate(args)
    except DejaVuSparseError as exc:
        print(f"dejavu-sparse: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dejavu-sparse: interrupted; nothing written", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:
        print(f"dejavu-sparse: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
