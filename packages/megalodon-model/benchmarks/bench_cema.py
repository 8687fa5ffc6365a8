"""CEMA on the CPU: sequential recurrence vs FFT convolution vs chunked scan (PyTorch), forward and
forward+backward, and each path's error against the float64 recurrence.

    python bench_cema.py                     # quick: D=1024, L 512 and 2048, sequential bwd at 512
    python bench_cema.py --lengths 512 2048 8192 16384 --rounds 2 --threads 1 --seq-bwd-max 2048
                                             # the page's run

Interleaved rounds (path A, B, C, A, B, C, ...; medians) so a busy shared machine loads every path
alike. The sequential path's forward+backward keeps every step's state for autograd, so it runs
up to ``--seq-bwd-max`` tokens only. Rows: results/cema_cpu.csv.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from megalodon_model.ops.cema import cases, cema

from tensor_utils_dev.bench import environment_tags, results_dir, write_csv

PATHS = ("reference", "fft", "chunked")
LABEL = {"reference": "sequential", "fft": "fft", "chunked": "chunked"}


def _inputs(length: int, dim: int, n_dim: int, dtype=torch.float32):
    gen = torch.Generator().manual_seed(length)
    x = torch.randn(1, length, dim, generator=gen, dtype=torch.float32).to(dtype)
    p, q, eta = cases.random_coefficients(dim, n_dim, 0)
    return x, p, q, eta


def _run(path, x, p, q, eta, backward):
    if not backward:
        with torch.no_grad():
            return cema(x, p, q, eta, backend=path)
    leaves = [t.detach().requires_grad_(True) for t in (x, p, q, eta)]
    y, h = cema(*leaves, backend=path)
    (y.square().mean() + h.square().mean()).backward()
    return y, h


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--ndim", type=int, default=16)
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--seq-bwd-max", type=int, default=512, help="longest L for the sequential fwd+bwd"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print rows as JSON lines")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for length in args.lengths:
        x, p, q, eta = _inputs(length, args.dim, args.ndim)
        with torch.no_grad():
            y64, _ = cema(x.double(), p.double(), q.double(), eta.double(), backend="reference")
        for backward in (False, True):
            paths = [
                path for path in PATHS
                if not (backward and path == "reference" and length > args.seq_bwd_max)
            ]  # fmt: skip
            samples: dict[str, list[float]] = {path: [] for path in paths}
            errors = {}
            for r in range(args.rounds + 1):  # round 0 warms up
                for path in paths:
                    start = time.perf_counter()
                    y, _ = _run(path, x, p, q, eta, backward)
                    ms = (time.perf_counter() - start) * 1e3
                    if r:
                        samples[path].append(ms)
                    if not backward and r == 0:
                        err = (y.detach().double() - y64).abs().max() / y64.abs().max()
                        errors[path] = float(err)
            for path in paths:
                row = {
                    "bench": "cema", "path": LABEL[path], "pass": "fwd+bwd" if backward else "fwd",
                    "dim": args.dim, "ndim": args.ndim, "length": length, "batch": 1,
                    "dtype": "float32", "median_ms": round(statistics.median(samples[path]), 3),
                    "rounds": args.rounds, "threads": args.threads,
                    "rel_err_vs_float64": errors.get(path, ""),
                }  # fmt: skip
                rows.append(row)
                print(row if args.json else
                      f"L={length:6d} {row['pass']:7s} {row['path']:10s} "
                      f"{row['median_ms']:10.1f} ms  err {row['rel_err_vs_float64']}")  # fmt: skip
    out = results_dir(__file__) / "cema_cpu.csv"
    write_csv(out, rows, tags=environment_tags("cpu", ["megalodon-model"]))
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
