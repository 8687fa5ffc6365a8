"""``expo-merge SFT ALIGNED --alpha A [-o OUT]``: ExPO-extrapolate a checkpoint pair from the shell.

Every failure is one line on stderr (``expo-merge: error: ...``) and exit status 1 (2 for bad
usage); no output is left behind. Ctrl-C (SIGINT) and ``kill`` (SIGTERM) at any point, start-up
included, print one line, remove every temporary file and exit 130 / 143. A closed stdout (``|
head``) ends the run quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tensor_utils.checkpoint.readahead import DEFAULT_PER_INPUT, start_readahead

from . import __version__

# torch (via .merge and tensor_utils) is imported in main(), after the input readahead started.

PROG = "expo-merge"


def _alphas(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a number or comma-separated numbers: {text!r}"
        ) from None


def _count(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be at least {minimum}, got {value}")
        return value

    return parse


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so the run's cleanup (``finally``/``except``) runs."""


@contextmanager
def _signals_to_exceptions() -> Iterator[None]:
    """SIGINT -> KeyboardInterrupt, SIGTERM -> Terminated; a repeated signal while cleaning up is
    ignored so the cleanup finishes."""

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


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
        help="extrapolate only tensors whose name matches (repeatable; a pattern that matches "
        "no float tensor is an error)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="copy tensors whose name matches from ALIGNED instead (repeatable; a pattern that "
        "matches no tensor is an error)",
    )
    p.add_argument(
        "--output-format",
        choices=["safetensors", "pt", "directory"],
        default=None,
        help="write this format instead of ALIGNED's: a .safetensors file, a .pt state dict or "
        "a Hugging Face safetensors directory",
    )
    p.add_argument(
        "--allow-overflow",
        action="store_true",
        help="write inf where a value overflows the output dtype (fp16/bf16) and count them in "
        "the report, instead of refusing",
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
        type=_count(1, "--threads"),
        default=None,
        metavar="N",
        help="CPU worker threads (default: one per core, at most 4)",
    )
    p.add_argument(
        "--prefetch-mb",
        type=_count(0, "--prefetch-mb"),
        default=DEFAULT_PER_INPUT >> 20,
        metavar="MB",
        help="ask the kernel to start reading this much of each input while torch loads "
        "(page cache only, at most 1/8 of available memory; 0: off; default %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    with _signals_to_exceptions():
        try:
            return _main(argv)
        except KeyboardInterrupt:
            return _fail("interrupted; no output was written", False, code=130)
        except Terminated:
            return _fail("terminated (SIGTERM); no output was written", False, code=143)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    alphas = [a for group in args.alpha for a in group]
    if not args.dry_run and args.prefetch_mb > 0:
        start_readahead([args.sft, args.aligned], per_input=args.prefetch_mb << 20)
    try:
        from tensor_utils.checkpoint import CheckpointError, UnsafeCheckpointError

        from .merge import extrapolate_checkpoints

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
            output_format=args.output_format,
            allow_overflow=args.allow_overflow,
        )
    except KeyboardInterrupt:
        return _fail("interrupted; no output was written", args.json, code=130)
    except Terminated:
        return _fail("terminated (SIGTERM); no output was written", args.json, code=143)
    except (CheckpointError, ValueError, OSError, RuntimeError) as err:
        message = _one_line(err)
        if isinstance(err, UnsafeCheckpointError):  # name the flag, not the Python keyword
            message = message.replace("allow_unsafe_pickle=True", "--allow-unsafe-pickle")
        return _fail(message, args.json)
    _print_lines([json.dumps(report.to_dict(), indent=2)] if args.json else report.lines())
    return 0


def _print_lines(lines: list[str]) -> None:
    """Print the report; a reader that went away (``| head``) is not an error: the run is done."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    if isinstance(err, OSError) and err.filename and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    lines = text.splitlines()
    return lines[0] if lines else type(err).__name__


def _fail(message: str, as_json: bool, code: int = 1) -> int:
    if as_json:
        _print_lines([json.dumps({"error": message})])
    with contextlib.suppress(OSError):  # stderr closed too: the exit status still tells
        print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
