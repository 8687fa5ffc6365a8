"""How fast each way of reading the selected rows of a transposed weight runs on the CPU, against
the dense product, in one process (interleaved rounds, medians; float32, batch 1, one thread;
three weight copies cycled so every read comes from memory): the C kernel (``gather_cols``'
``native`` backend), ``embedding_bag`` (the ``chunked`` backend), and the gathered product as
a ``torch.compile`` (inductor C++) kernel, written as G-row partial sums over contiguous rows
plus an eager sum (written as one reduction, ``(x[:, None] * w_t[idx]).sum(0)``, inductor
generates a loop over the output columns with one scalar load per selected row; printed with
``TORCH_LOGS=output_code``).

    python benchmarks/probe_native_cpu.py [--rounds 7] [--out results/native_cpu.csv]
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F

from tensor_utils_dev.bench import interleaved_medians

GROUP = 16


def grouped(x: torch.Tensor, w_t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(k/G, M) partial sums of G selected rows each; every term one contiguous row load."""
    xi, ii = x.view(-1, GROUP), idx.view(-1, GROUP)
    acc = xi[:, 0:1] * w_t[ii[:, 0]]
    for r in range(1, GROUP):
        acc = acc + xi[:, r : r + 1] * w_t[ii[:, r]]
    return acc


def main() -> None:
    from dejavu_sparse.fallback import set_dense_fallback
    from dejavu_sparse.ops import gather_cols

    from tensor_utils_dev.bench import environment_tags, results_dir, write_csv

    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--copies", type=int, default=3)
    p.add_argument("--out", default=str(results_dir(__file__) / "native_cpu.csv"))
    args = p.parse_args()
    torch.set_num_threads(1)
    set_dense_fallback("cpu", {1: 1.0})  # the gathered kernels themselves at every density
    compiled = torch.compile(grouped, dynamic=True)
    g = torch.Generator().manual_seed(0)
    rows = []
    for n, m in ((14336, 4096), (4096, 28672)):
        ws = [torch.randn(n, m, generator=g) * 0.02 for _ in range(args.copies)]
        wl = [w.t().contiguous() for w in ws]  # nn.Linear layout, for the dense product
        for density in (0.5, 1.0):
            k = int(n * density) // GROUP * GROUP
            idx = torch.randperm(n, generator=g)[:k].sort().values
            xs = torch.randn(1, k, generator=g)
            xd = torch.zeros(1, n)
            xd[0, idx] = xs
            fns = {
                "dense": lambda xd=xd, wl=wl: [F.linear(xd, w) for w in wl],
                "native": lambda xs=xs, idx=idx, ws=ws: [gather_cols(xs, w, idx) for w in ws],
                "embedding_bag": lambda xs=xs, idx=idx, ws=ws: [
                    gather_cols(xs, w, idx, backend="chunked") for w in ws
                ],
                "inductor": lambda xs=xs, idx=idx, ws=ws: [
                    compiled(xs[0], w, idx).sum(0) for w in ws
                ],
            }
            t = {name: v / len(ws) for name, v in interleaved_medians(fns, args.rounds).items()}
            row = {"bench": "native_probe", "shape": f"{n}x{m}", "density": density,
                   **{f"{k_}_ms": round(v, 3) for k_, v in t.items()},
                   **{f"{k_}_speedup": round(t["dense"] / v, 3) for k_, v in t.items()
                      if k_ != "dense"},
                   "load1": round(os.getloadavg()[0], 2)}  # fmt: skip
            rows.append(row)
            print(row, flush=True)
    set_dense_fallback("cpu", None)
    tags = {**environment_tags(packages=["dejavu-sparse"]), "dtype": "float32", "threads": "1"}
    write_csv(args.out, rows, tags=tags)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
