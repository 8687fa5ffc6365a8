"""Timestep norm on the CPU: the PyTorch reference (shifted cumulative sums) against
``torch.nn.functional.layer_norm`` on the same tensor, forward and forward+backward.

    python bench_timestep_norm.py                                  # quick: [1, 2048, 1024]
    python bench_timestep_norm.py --lengths 2048 8192 --dim 2048   # larger

Interleaved rounds, medians. Rows: results/timestep_norm_cpu.csv.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from megalodon_model.ops.timestep_norm import timestep_norm

from tensor_utils_dev.bench import environment_tags, results_dir, write_csv


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--groups", type=int, default=32)
    ap.add_argument("--lengths", type=int, nargs="+", default=[2048])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for length in args.lengths:
        x = torch.randn(1, length, args.dim) + 3.0
        w, b = torch.ones(args.dim), torch.zeros(args.dim)
        count = torch.zeros(1, dtype=torch.int64)
        mean, var = torch.zeros(1, args.groups), torch.ones(1, args.groups)

        def tsn(xx, ww, bb, count=count, mean=mean, var=var):
            return timestep_norm(xx, count, mean, var, ww, bb, None, 1e-5, backend="reference")[0]

        def ln(xx, ww, bb):
            return F.layer_norm(xx, (args.dim,), ww, bb, 1e-5)

        for backward in (False, True):
            samples: dict[str, list[float]] = {"timestep_norm": [], "layer_norm": []}
            for r in range(args.rounds + 1):
                for name, fn in (("timestep_norm", tsn), ("layer_norm", ln)):
                    leaves = [t.clone().requires_grad_(backward) for t in (x, w, b)]
                    start = time.perf_counter()
                    if backward:
                        fn(*leaves).square().mean().backward()
                    else:
                        with torch.no_grad():
                            fn(*leaves)
                    if r:
                        samples[name].append((time.perf_counter() - start) * 1e3)
            for name, values in samples.items():
                row = {
                    "bench": "timestep_norm", "op": name, "pass": "fwd+bwd" if backward else "fwd",
                    "batch": 1, "length": length, "dim": args.dim, "groups": args.groups,
                    "dtype": "float32", "median_ms": round(statistics.median(values), 3),
                    "rounds": args.rounds, "threads": args.threads,
                }  # fmt: skip
                rows.append(row)
            ratio = statistics.median(samples["timestep_norm"]) / statistics.median(
                samples["layer_norm"]
            )
            print(f"L={length} {'fwd+bwd' if backward else 'fwd'}: timestep_norm / layer_norm "
                  f"= {ratio:.2f}x")  # fmt: skip
    out = results_dir(__file__) / "timestep_norm_cpu.csv"
    write_csv(out, rows, tags=environment_tags("cpu", ["megalodon-model"]))
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
