"""Run a package's GPU tests and GPU benchmarks on a CUDA machine, from a checkout, no installs.

Our code comes from the src folders on PYTHONPATH (prepended to any PYTHONPATH already set, which
is how a peer library that is not installed, e.g. a source checkout, can be added), so this works
with whatever interpreter has torch/triton/transformers/pytest/hypothesis and no package registry.

    python tools/run_gpu.py jetmoe-model                       # GPU tests, then every bench_*_gpu.py
    python tools/run_gpu.py jetmoe-model --tests               # only the GPU tests
    python tools/run_gpu.py galore-optim --bench               # only the bench_*_gpu.py scripts
    python tools/run_gpu.py galore-optim --bench bench_step.py -- --model 1b --rank 512
    python tools/run_gpu.py expo-merge kvprune --out /tmp/gpu  # several packages, results there

Everything goes under `--out` (default `$OUT`, else `build/gpu`), one folder per package: each
benchmark's CSVs (`BENCH_RESULTS`, see `tensor_utils_dev.bench.results_dir`), a log per step
(`<script>.log`, `gpu_tests.log`) and `environment.txt` (GPU, driver, library versions).
`--timeout S` stops any one step after S seconds; what it wrote so far stays. Arguments after
`--` go to the named benchmark scripts (or to pytest with `--tests` alone). Stdlib only.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools.workspace import ROOT, members, pythonpath

ENV_PROBE = """
import platform, importlib.metadata as md
import torch
print("python", platform.python_version())
for dist in ("torch", "triton", "transformers", "peft", "accelerate"):
    try:
        print(dist, md.version(dist))
    except md.PackageNotFoundError:
        print(dist, "not installed")
print("cuda", torch.version.cuda, "available", torch.cuda.is_available())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"device {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs")
"""


def run_logged(cmd: list[str], log: Path, env: dict[str, str], timeout: float | None) -> int:
    """Run ``cmd`` from the repository root, its output both printed and written to ``log``.
    On timeout or Ctrl-C the whole process group is stopped; the return code is then 124 / 130."""
    print("+", " ".join(cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout if timeout else None
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                out.write(line)
                if deadline and time.monotonic() > deadline:
                    raise TimeoutError
            return proc.wait()
        except (TimeoutError, KeyboardInterrupt) as stop:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            why = "timed out" if isinstance(stop, TimeoutError) else "interrupted"
            print(f"run_gpu: {' '.join(cmd[1:3])} {why}; its log is {log}", flush=True)
            out.write(f"run_gpu: {why}\n")
            if isinstance(stop, KeyboardInterrupt):
                raise
            return 124


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = argparse.ArgumentParser(description=(__doc__ or "\n").splitlines()[0])
    parser.add_argument("packages", nargs="+", help="workspace members, e.g. jetmoe-model")
    parser.add_argument("--tests", action="store_true", help="run the gpu/triton-marked tests")
    parser.add_argument(
        "--bench",
        nargs="*",
        metavar="SCRIPT",
        help="run these benchmark scripts (no name: every bench_*_gpu.py)",
    )
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "build" / "gpu"))
    parser.add_argument("--timeout", type=float, default=None, help="seconds per step")
    args = parser.parse_args(argv)
    by_name = {m.name: m for m in members()}
    unknown = [p for p in args.packages if p not in by_name]
    if unknown:
        print(f"run_gpu: unknown member(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    run_tests = args.tests or args.bench is None
    run_bench = args.bench is not None or not args.tests
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (pythonpath(), os.environ.get("PYTHONPATH")) if p),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("TRITON_INTERPRET", None)  # real kernels on the GPU
    out_root = Path(args.out).resolve()
    failed: list[str] = []
    for name in args.packages:
        m, out = by_name[name], out_root / name
        out.mkdir(parents=True, exist_ok=True)
        run_logged([sys.executable, "-c", ENV_PROBE], out / "environment.txt", env, 120)
        if run_tests:
            cmd = [sys.executable, "tools/gpu.py", name]
            if extra and args.bench is None:
                cmd += ["--", *extra]
            rc = run_logged(cmd, out / "gpu_tests.log", env, args.timeout)
            if rc != 0:
                failed.append(f"{name} tests (exit {rc})")
        if run_bench:
            names = args.bench or [p.name for p in sorted(m.benchmarks.glob("bench_*_gpu.py"))]
            for script_name in names:
                script = m.benchmarks / script_name
                if not script.is_file():
                    print(f"run_gpu: no benchmark {script}", file=sys.stderr)
                    failed.append(f"{name}/{script_name} (missing)")
                    continue
                bench_env = {**env, "BENCH_RESULTS": str(out)}
                cmd = [
                    sys.executable,
                    str(script.relative_to(ROOT)),
                    *(extra if args.bench else []),
                ]
                rc = run_logged(cmd, out / f"{script.stem}.log", bench_env, args.timeout)
                if rc != 0:
                    failed.append(f"{name}/{script_name} (exit {rc})")
    print(f"run_gpu: results under {out_root}", flush=True)
    if failed:
        print(f"run_gpu: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
