"""Optimizer step time, refresh (SVD) time and optimizer-state memory on one LLaMA layer's
GaLore target matrices (q, k, v, o, gate, up, down), fp32, T = 200.

Compares galore-torch 1.0, galore-optim (exact / randomized / warm solvers, Triton and
reference backends, 8-bit states) and torch.optim.AdamW (fused on CUDA). Step times are medians
over steps that do not refresh; refresh time is the extra time of a refresh step; "amortized"
adds refresh / T. Runs on CUDA when available, else on the CPU. The default (``--model tiny``:
64 x 172 matrices, rank 16) is a quick check that every optimizer runs, about a minute on a
CPU; the page's numbers are LLaMA-1B shapes (4 x 2048x2048, 3 x 2048x5461; a whole model is 24
such layers) on the GPU:

    python tools/run_gpu.py galore-optim --bench bench_step.py -- --model 1b --rank 512
    python tools/run_gpu.py galore-optim --bench bench_step.py -- --model 1b --rank 128
"""

from __future__ import annotations

import argparse
import statistics
import time
import traceback

import torch
from _common import (
    LLAMA,
    RESULTS,
    analytic_galore_bytes,
    galore_torch_classes,
    layer_shapes,
    state_bytes,
)

from tensor_utils_dev.bench import write_csv


def _time_steps(opt, params, grads, n, *, sync) -> list[float]:
    times = []
    for _ in range(n):
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        sync()
        t0 = time.perf_counter()
        opt.step()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def run_one(name, make_opt, shapes, grads_src, *, steps: int, gap: int, device: str) -> dict:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    gen = torch.Generator(device=device).manual_seed(0)
    params = [
        torch.nn.Parameter(torch.randn(s, device=device, generator=gen) * 0.02) for s in shapes
    ]
    grads = [g.clone() for g in grads_src]
    # A throwaway optimizer first: Triton JIT compilation and cuSOLVER/cuBLAS handle set-up
    # stay out of the measured refresh.
    _time_steps(make_opt(params), params, grads, 2, sync=sync)
    if device == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    opt = make_opt(params)
    first = _time_steps(opt, params, grads, 1, sync=sync)[0]  # refresh step (step 0)
    row = {"optimizer": name}
    if device == "cuda":
        row["state_bytes_allocated"] = torch.cuda.memory_allocated() - base
        row["peak_bytes_first_step"] = torch.cuda.max_memory_allocated() - base
    row["state_bytes"] = state_bytes(opt)
    warm = min(3, gap - 2)
    _time_steps(opt, params, grads, warm, sync=sync)
    n = min(steps, gap - 1 - warm)
    times = _time_steps(opt, params, grads, n, sync=sync)
    row["step_ms"] = statistics.median(times)
    row["step_p20_ms"] = sorted(times)[len(times) // 5]
    row["step_p80_ms"] = sorted(times)[(4 * len(times)) // 5]
    row["first_step_ms"] = first
    row["refresh_ms"] = max(first - row["step_ms"], 0.0)
    row["amortized_step_ms"] = row["step_ms"] + row["refresh_ms"] / gap
    del opt, params, grads
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny", choices=sorted(LLAMA))
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--gap", type=int, default=200)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default=str(RESULTS / "step.csv"))
    ap.add_argument("--skip", nargs="*", default=[])
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    d, ffn, _layers = LLAMA[args.model]
    shapes = layer_shapes(d, ffn)
    gen = torch.Generator(device=device).manual_seed(1)
    # Gradients with a decaying spectrum (low-rank signal + noise), as real gradients have.
    grads_src = []
    for m, n in shapes:
        k = 64
        u = torch.randn(m, k, device=device, generator=gen)
        v = torch.randn(k, n, device=device, generator=gen)
        s = torch.logspace(0, -2, k, device=device)
        grads_src.append((u * s) @ v / k + 1e-3 * torch.randn(m, n, device=device, generator=gen))

    from galore_optim import GaLoreAdamW, GaLoreAdamW8bit

    RefAdamW, _ = galore_torch_classes()
    hp = {"rank": args.rank, "update_proj_gap": args.gap, "scale": 0.25, "proj_type": "std"}

    def ours(**kw):
        backend = kw.pop("backend", None)
        return lambda ps: GaLoreAdamW([{"params": ps, **hp, **kw}], lr=1e-3, backend=backend)

    candidates = {
        "torch_adamw_fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=device == "cuda"),
        "galore_torch": lambda ps: RefAdamW(
            [{"params": ps, **hp}], lr=1e-3, no_deprecation_warning=True
        ),
        "galore_optim_exact_reference": ours(solver="exact", backend="reference"),
        "galore_optim_exact": ours(solver="exact"),
        "galore_optim_randomized": ours(solver="randomized"),
        "galore_optim_warm": ours(solver="warm"),
        "galore_optim_8bit_randomized": lambda ps: GaLoreAdamW8bit(
            [{"params": ps, **hp, "solver": "randomized"}], lr=1e-3, weight_decay=0.0
        ),
        # Same solver as galore-torch's 8-bit (exact SVD), for a like-for-like step time.
        "galore_optim_8bit_exact": lambda ps: GaLoreAdamW8bit(
            [{"params": ps, **hp, "solver": "exact"}], lr=1e-3, weight_decay=0.0
        ),
    }
    try:  # galore-torch's 8-bit class needs bitsandbytes, and its step synchronizes CUDA
        from galore_torch.adamw8bit import (  # pyright: ignore[reportMissingImports]  (needs bitsandbytes)
            AdamW8bit as RefAdamW8bit,
        )

        if device != "cuda":
            raise ImportError("its step calls torch.cuda.synchronize(); CUDA only")
        candidates["galore_torch_8bit"] = lambda ps: RefAdamW8bit(
            [{"params": ps, **hp}], lr=1e-3, weight_decay=0.0
        )
    except ImportError as e:
        print(f"galore_torch_8bit skipped: {e}", flush=True)
    rows = []
    for name, make in candidates.items():
        if name in args.skip:
            continue
        try:
            row = run_one(
                name, make, shapes, grads_src, steps=args.steps, gap=args.gap, device=device
            )
        except Exception as e:  # one broken peer must not lose the other rows
            print(f"{name} failed: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc()
            continue
        row.update(
            {
                "model": args.model,
                "rank": args.rank,
                "gap": args.gap,
                "matrices": len(shapes),
                "analytic_state_bytes": analytic_galore_bytes(shapes, args.rank)
                if "galore" in name and "8bit" not in name
                else analytic_galore_bytes(shapes, args.rank, moment_bytes=1 + 8 / 256)
                if "8bit" in name
                else 2 * sum(m * n for m, n in shapes) * 4,
            }
        )
        rows.append(row)
        print(
            f"{name:32s} step {row['step_ms']:8.3f} ms  refresh {row['refresh_ms']:9.1f} ms  "
            f"amortized {row['amortized_step_ms']:8.3f} ms  state {row['state_bytes'] / 2**20:8.1f} MiB",
            flush=True,
        )
    write_csv(args.out, rows)
    by_name = {r["optimizer"]: r for r in rows}
    for r in rows:
        ref = by_name.get("galore_torch_8bit" if "8bit" in r["optimizer"] else "galore_torch")
        if ref and r["optimizer"].startswith("galore_optim"):
            print(
                f"{r['optimizer']:32s} vs {ref['optimizer']}: amortized "
                f"{r['amortized_step_ms'] / ref['amortized_step_ms']:.3f}  "
                f"refresh speed-up {ref['refresh_ms'] / max(r['refresh_ms'], 1e-9):7.1f}x  "
                f"state {r['state_bytes'] / ref['state_bytes']:.3f}  "
                + (
                    f"held {r['state_bytes_allocated'] / ref['state_bytes_allocated']:.3f}  "
                    if "state_bytes_allocated" in r
                    else ""
                )
                + f"state/analytic {r['state_bytes'] / r['analytic_state_bytes']:.3f}"
            )


if __name__ == "__main__":
    main()
