"""Fused ExPO kernel vs device copy, torch.lerp and the unfused PyTorch expression (CUDA).

Bandwidth = bytes moved / median time: 3 tensors' bytes (read sft, read aligned, write out) for
the ExPO ops, 2 for the copy. Target: the fused kernel reaches >= 90% of copy bandwidth.

Needs CUDA (run through ``tools/run_gpu.py``):

    python tools/run_gpu.py expo-merge --bench bench_kernel_gpu.py [-- --sizes 1048576,16777216]
"""

from __future__ import annotations

import argparse

import torch
from expo_merge.ops.extrapolate import extrapolate

from tensor_utils_dev.bench import results_dir, time_fn, write_csv

ALPHA = 0.3


def unfused(sft, aligned, alpha):
    a = aligned.float()
    return (a + alpha * (a - sft.float())).to(aligned.dtype)


def measure(n: int, dtype: torch.dtype) -> list[dict]:
    g = torch.Generator(device="cuda").manual_seed(0)
    aligned = torch.randn(n, device="cuda", generator=g).to(dtype)
    sft = (aligned.float() + 1e-3 * torch.randn(n, device="cuda", generator=g)).to(dtype)
    out = torch.empty_like(aligned)
    item = aligned.element_size()
    ops = {
        "copy": (lambda: out.copy_(aligned), 2),
        "expo_triton": (lambda: extrapolate(sft, aligned, ALPHA, out=out, backend="triton"), 3),
        "torch_lerp": (lambda: torch.lerp(sft, aligned, 1 + ALPHA, out=out), 3),
        "torch_unfused": (lambda: unfused(sft, aligned, ALPHA), 3),
        "expo_reference": (
            lambda: extrapolate(sft, aligned, ALPHA, out=out, backend="reference"),
            3,
        ),
    }
    timings = {
        name: time_fn(fn, warmup=50, rep=300, device="cuda") for name, (fn, _) in ops.items()
    }
    copy_gbps = 2 * n * item / timings["copy"].median_ms / 1e6
    rows = []
    for name, (_, tensors) in ops.items():
        t = timings[name]
        gbps = tensors * n * item / t.median_ms / 1e6
        rows.append(
            {
                "bench": "kernel",
                "op": name,
                "dtype": str(dtype).removeprefix("torch."),
                "elements": n,
                "median_ms": round(t.median_ms, 5),
                "p20_ms": round(t.p20_ms, 5),
                "p80_ms": round(t.p80_ms, 5),
                "gb_per_s": round(gbps, 1),
                "fraction_of_copy_bw": round(gbps / copy_gbps, 4),
            }
        )
        print(
            f"{rows[-1]['dtype']:9s} n={n:>10d} {name:15s} {t.median_ms:9.4f} ms {gbps:8.1f} GB/s "
            f"{gbps / copy_gbps:6.1%} of copy"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=results_dir(__file__) / "kernel.csv")
    parser.add_argument("--sizes", default="1048576,16777216,134217728,268435456")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_kernel_gpu: needs a CUDA device")
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        for n in (int(x) for x in args.sizes.split(",")):
            rows += measure(n, dtype)
            torch.cuda.empty_cache()
    write_csv(args.out, rows)
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
