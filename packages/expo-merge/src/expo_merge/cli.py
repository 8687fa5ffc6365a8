"""``expo-merge SFT ALIGNED --alpha A [-o OUT]``: ExPO-extrapolate a checkpoint pair from the shell.

Every failure is one line on stderr (``expo-merge: error: ...``) and exit status 1 (2 for bad
usage); no output is left behind.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__, prefetch

# torch (via .merge and tensor_utils) is imported in main(), after the input prefetch started.

PROG = "expo-merge"


def _alphas(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a number or comma-separated numbers: {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "ExPO model extrapolation: OUT = ALIGNED + alpha * (ALIGNED - SFT), streamed one tensor "
            "at a time. SFT/ALIGNED: .safetensors, .pt/.bin state dicts, or Hugging Face model "
            "directories (sharded or not). OUT has ALIGNED's kind, names, shard layout, metadata, "
            "config and tokenizer."
        ),
        epilog="example: expo-merge sft/ dpo/ --alpha 0.3 -o dpo-expo-0.3/",
    )
    p.add_argument("sft", metavar="SFT", help="the SFT (starting) checkpoint")
    p.add_argument(
        "aligned", metavar="ALIGNED", help="the aligned (DPO/RLHF) checkpoint trained from SFT"
    )
    p.add_argument(
        "--alpha",
        "-a",
        action="append",
        type=_alphas,
        required=True,
        metavar="A",
        help="extrapolation strength (any real number; 0 = ALIGNED, -1 = SFT, 0.1-0.5 typical). "
        "Repeat or comma-separate for several outputs from one read pass (OUT/alpha-A/)",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="output path (default: next to ALIGNED, "
        "named <aligned>-expo-<alpha>, or <aligned>-expo/ for several alphas)",
    )
    p.add_argument(
        "--dtype",
        choices=["keep", "bf16", "fp16", "fp32"],
        default="keep",
        help="output dtype of float tensors (math is always fp32 or better; default keep)",
    )
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="extrapolate only tensors whose name matches (repeatable)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="copy tensors whose name matches from ALIGNED instead (repeatable)",
    )
    p.add_argument(
        "--shard-size",
        metavar="SIZE",
        help="re-shard directory outputs (e.g. 5GB, 500MB); default: ALIGNED's shard layout",
    )
    p.add_argument(
        "--device", default="cpu", help="where the arithmetic runs: cpu (default) or cuda"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check both inputs' headers and report what would happen; read no tensor data",
    )
    p.add_argument(
        "--json", action="store_true", help="print a machine-readable JSON report on stdout"
    )
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="let .pt/.bin files unpickle arbitrary objects (only for files you trust)",
    )
    p.add_argument(
        "--exact-stats",
        action="store_true",
        help="count changed elements over every element (default on the CPU: the first 64K elements of every 16M-element slice)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU worker threads (default: one per core, at most 4)",
    )
    p.add_argument(
        "--prefetch-mb",
        type=int,
        default=prefetch.PER_INPUT >> 20,
        metavar="MB",
        help="ask the kernel to start reading this much of each input while torch loads "
        "(page cache only, at most 1/8 of available memory; 0: off; default %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    alphas = [a for group in args.alpha for a in group]
    if not args.dry_run and args.prefetch_mb > 0:
        prefetch.start([args.sft, args.aligned], per_input=args.prefetch_mb << 20)
    from tensor_utils.checkpoint import CheckpointError

    from .merge import extrapolate_checkpoints

    try:
        report = extrapolate_checkpoints(
            args.sft,
            args.aligned,
            alphas,
            args.output,
            dtype=args.dtype,
            include=args.include,
            exclude=args.exclude,
            shard_size=args.shard_size,
            device=args.device,
            force=args.force,
            dry_run=args.dry_run,
            allow_unsafe_pickle=args.allow_unsafe_pickle,
            progress=False if args.no_progress else None,
            exact_stats=args.exact_stats,
            workers=args.threads,
        )
    except KeyboardInterrupt:
        return _fail("interrupted; no output was written", args.json, code=130)
    except (CheckpointError, ValueError, OSError, RuntimeError) as err:
        return _fail(_one_line(err), args.json)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.lines():
            print(line)
    return 0


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    if isinstance(err, OSError) and err.filename and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    lines = text.splitlines()
    return lines[0] if lines else type(err).__name__


def _fail(message: str, as_json: bool, code: int = 1) -> int:
    if as_json:
        print(json.dumps({"error": message}))
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
