"""Run the packages' CPU benchmarks: every `packages/*/benchmarks/bench_*.py`, with no arguments.

    python tools/bench.py                         # every package
    python tools/bench.py expo-merge kvprune      # some packages
    python tools/bench.py --out /tmp/bench        # CSVs there (default: build/bench/<package>/)

The naming rule (docs/benchmarks/README.md):

- `bench_<what>.py` runs on the CPU with small defaults and no arguments, in a few minutes; its
  options reproduce the page's larger runs. This runner executes it.
- `bench_<what>_gpu.py` needs CUDA. Skipped here with a message; `tools/run_gpu.py` runs it.
- A `bench_<what>.py` that needs something a fresh clone's bench environment lacks (a peer
  library in its own environment, a large download) says so in a module-level string,
  `REQUIRES = "<what, and how to provide it>"`; it is skipped here with that line.
- Other scripts (`plot*.py`, `tune_*.py`, `profile_*.py`, ...) are run by hand.

Each script gets `BENCH_RESULTS=<out>/<package>` (see `tensor_utils_dev.bench.results_dir`), so
a session run never appends to the CSVs a page cites. Stdlib only.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools.workspace import ROOT, members

GPU_SUFFIX = "_gpu"


def requires(script: Path) -> str | None:
    """The script's module-level ``REQUIRES`` string, read without importing it."""
    for node in ast.parse(script.read_text(), filename=str(script)).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "REQUIRES" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return None


def skip_reason(script: Path, package: str) -> str | None:
    """Why this runner does not execute ``script``, or None when it does."""
    if script.stem.endswith(GPU_SUFFIX):
        return f"needs CUDA: python tools/run_gpu.py {package} --bench {script.name}"
    needed = requires(script)
    return f"needs {needed}" if needed else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "\n").splitlines()[0])
    parser.add_argument("packages", nargs="*", help="workspace members (default: all)")
    parser.add_argument("--out", default=str(ROOT / "build" / "bench"), help="results folder")
    args = parser.parse_args(argv)
    known = {m.name for m in members()}
    unknown = sorted(set(args.packages) - known)
    if unknown:
        print(f"bench: unknown member(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    chosen = [
        m
        for m in members()
        if m.benchmarks.is_dir() and (not args.packages or m.name in args.packages)
    ]
    failed, skipped = [], []
    for m in chosen:
        out = Path(args.out) / m.name
        env = {**os.environ, "BENCH_RESULTS": str(out)}
        for script in sorted(m.benchmarks.glob("bench_*.py")):
            reason = skip_reason(script, m.name)
            if reason:
                print(f"== {m.name}: {script.name} skipped ({reason})", flush=True)
                skipped.append(script.name)
                continue
            print(f"== {m.name}: {script.name} -> {out}", flush=True)
            start = time.perf_counter()
            rc = subprocess.call([sys.executable, str(script)], cwd=ROOT, env=env)
            print(f"== {m.name}: {script.name} exit {rc} in {time.perf_counter() - start:.0f} s")
            if rc != 0:
                failed.append(f"{m.name}/{script.name}")
    print(f"bench: {len(skipped)} skipped, {len(failed)} failed", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
