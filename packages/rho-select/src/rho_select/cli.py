"""``rho-select``: score a corpus with a reference model; inspect a scores directory.

    rho-select score --model REF_DIR --data corpus.jsonl --seq-len 2048 --out scores/
    rho-select info scores/ --json

``--data``: ``.txt`` files (one document each), ``.jsonl`` (one document per line, text in
``--text-field``), or a ``.safetensors`` file holding already packed ``input_ids [sequences,
seq_len]``. Errors print one line and exit 2; Ctrl-C / SIGTERM leave no partial shard (a rerun
resumes).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from .errors import RhoSelectError

PROG = "rho-select"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Rho-1 reference scoring.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score", help="score packed sequences with a reference model")
    s.add_argument("--model", required=True, help="reference model directory (Hugging Face)")
    s.add_argument("--data", required=True, nargs="+", help=".txt / .jsonl / .safetensors")
    s.add_argument("--out", required=True, help="scores directory (created; resumed if present)")
    s.add_argument("--seq-len", type=int, default=2048, help="packed sequence length")
    s.add_argument("--text-field", default="text", help="text field of .jsonl records")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--shard-size", type=int, default=1024, help="sequences per shard")
    s.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    s.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    s.add_argument("--max-sequences", type=int, default=None, help="score only the first N")
    s.add_argument("--json", action="store_true", help="print a JSON report on stdout")
    s.add_argument("--no-progress", action="store_true")
    i = sub.add_parser("info", help="show a scores directory's manifest")
    i.add_argument("scores")
    i.add_argument("--json", action="store_true")
    return p


def _read_texts(paths: list[Path], field: str):
    for path in paths:
        if path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        raise RhoSelectError(f"{path}:{n}: not valid JSON") from None
                    if not isinstance(record, dict) or not isinstance(record.get(field), str):
                        raise RhoSelectError(f"{path}:{n}: no string field {field!r}")
                    yield record[field]
        else:
            yield path.read_text(encoding="utf-8", errors="replace")


def _corpus(args, tokenizer):
    from .packing import PackedCorpus, tokenize_and_pack

    paths = [Path(d) for d in args.data]
    for path in paths:
        if not path.is_file():
            raise RhoSelectError(f"--data {path}: no such file")
    if any(p.suffix == ".safetensors" for p in paths):
        if len(paths) != 1:
            raise RhoSelectError("a packed .safetensors input must be the only --data file")
        from safetensors.torch import load_file

        tensors = load_file(str(paths[0]))
        ids = tensors.get("input_ids")
        if ids is None or ids.dim() != 2:
            raise RhoSelectError(f"{paths[0]}: expected a 2-d 'input_ids' tensor")
        if ids.shape[1] != args.seq_len:
            raise RhoSelectError(
                f"{paths[0]}: sequences have length {ids.shape[1]}, --seq-len is {args.seq_len}"
            )
        corpus = PackedCorpus(ids.long(), {"method": "pretokenized", "seq_len": args.seq_len})
    else:
        corpus = tokenize_and_pack(tokenizer, _read_texts(paths, args.text_field), args.seq_len)
    if args.max_sequences is not None:
        corpus = PackedCorpus(
            corpus.input_ids[: args.max_sequences],
            {**corpus.packing, "max_sequences": args.max_sequences},
        )
    return corpus


def _score(args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .scoring import score_corpus

    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        raise RhoSelectError(f"--model {model_dir}: not a model directory (no config.json)")
    if args.seq_len < 2:
        raise RhoSelectError(f"--seq-len must be at least 2, got {args.seq_len}")
    if args.no_progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    corpus = _corpus(args, tokenizer)
    vocab = len(tokenizer)
    if int(corpus.input_ids.max()) >= vocab or int(corpus.input_ids.min()) < 0:
        raise RhoSelectError(f"--data holds token ids outside the tokenizer's vocabulary ({vocab})")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = model.to(device)
    return score_corpus(
        model,
        corpus,
        args.out,
        tokenizer=tokenizer,
        dtype=args.dtype,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )


def _info(args) -> dict:
    from .scoring import _read_manifest

    m = _read_manifest(Path(args.scores))
    return {
        "scores": args.scores,
        "complete": bool(m.get("complete")),
        "sequences": m["sequences"],
        "seq_len": m["seq_len"],
        "tokens": m["sequences"] * m["seq_len"],
        "shards": len(m.get("shards", [])),
        "dtype": m["dtype"],
        "model": m["model"],
        "tokenizer": m.get("tokenizer"),
        "packing": m.get("packing"),
    }


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        report = _score(args) if args.command == "score" else _info(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (finished shards are kept; rerun to resume)", file=sys.stderr)
        return 130
    except (RhoSelectError, OSError, ValueError) as exc:  # bad input: one line, no traceback
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        print(f"{PROG}: error: {lines[0]}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
