"""The selective loss on the GPU: forward + backward time and peak extra memory in bf16 against
the naive loss and Liger-Kernel, with a gradient check against an fp32 reference.

Methods, side by side in one process (two passes, the second in reverse order):

- ``naive``: full logits ``h @ W.T`` (bf16), upcast to fp32 as ``transformers`` does,
  ``cross_entropy(reduction="none")``, the selection mask, ``sum / count``, autograd;
- ``liger``: Liger-Kernel's ``LigerFusedLinearCrossEntropyLoss(reduction="none")`` per-token
  losses, the same mask and normalization (per-token gradients are right from liger-kernel
  0.8.2 on; skipped with a message when ``liger_kernel`` does not import);
- ``ours_torch``: ``rho_select.selective_loss(backend="reference")`` (chunked PyTorch);
- ``ours_triton``: ``rho_select.selective_loss(backend="triton")``;
- ``ours_triton_bf16acc``: the same, summing the weight gradient in bf16 (``accumulate_fp32=False``),
  the way Liger does by default.

Every method selects the top ``--ratio`` by excess loss with ``rho_select.select_tokens``. The
reference losses are the fp32 token losses minus distinct integers, so the ranking has margins
far above bf16 rounding and every method selects the same tokens. Time: ``triton.testing.do_bench``
median (ms). Memory: ``torch.cuda.max_memory_allocated`` during one call minus the allocation
before it (gradients included). Gradients: max |g - g_fp32| / max |g_fp32| for the hidden
states and the weight, against ``selective_loss`` on fp32 copies (the chunked reference).

    python packages/rho-select/benchmarks/bench_loss_gpu.py --out results/loss_gpu_h100.csv
    python packages/rho-select/benchmarks/bench_loss_gpu.py --tokens 8192 --vocab 32000 --quick
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from rho_select import select_tokens, selective_loss

from tensor_utils_dev.bench import environment_tags, results_dir, write_csv

METHODS = ("naive", "liger", "ours_torch", "ours_triton", "ours_triton_bf16acc")


def liger_loss_fn():
    try:
        # the peer, installed on the GPU machine only (not a dependency)
        import liger_kernel  # pyright: ignore[reportMissingImports]
        from liger_kernel.transformers import (  # pyright: ignore[reportMissingImports]
            LigerFusedLinearCrossEntropyLoss,
        )
    except ImportError as exc:
        print(f"liger: skipped (liger_kernel does not import: {exc})", flush=True)
        return None, ""
    version = getattr(liger_kernel, "__version__", "")
    if not version:
        import importlib.metadata

        version = importlib.metadata.version("liger-kernel")
    return LigerFusedLinearCrossEntropyLoss(reduction="none"), version


def masked_mean(tokens, labels, ref, ratio):
    mask = select_tokens(tokens.detach().float() - ref, labels != -100, ratio).mask
    return (tokens.float() * mask).sum() / mask.sum(), mask


def make_step(method, h, w, labels, ref, ratio, liger):
    if method == "naive":

        def step():
            logits = (h @ w.t()).float()
            tokens = F.cross_entropy(logits, labels, reduction="none")
            loss, mask = masked_mean(tokens, labels, ref, ratio)
            loss.backward()
            return mask

    elif method == "liger":

        def step():
            tokens = liger(w, h, labels)
            tokens = tokens[0] if isinstance(tokens, tuple) else tokens
            loss, mask = masked_mean(tokens, labels, ref, ratio)
            loss.backward()
            return mask

    else:
        backend = "reference" if method == "ours_torch" else "triton"
        fp32_acc = method != "ours_triton_bf16acc"

        def step():
            out = selective_loss(
                h, w, labels, ref, ratio, backend=backend, accumulate_fp32=fp32_acc
            )
            out.loss.backward()
            return out.selected_mask

    return step


def grad_of(t: torch.Tensor) -> torch.Tensor:
    """``t.grad``, which the backward just filled."""
    if t.grad is None:
        raise RuntimeError("no gradient reached the input")
    return t.grad


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b).abs().max() / b.abs().max().clamp(min=1e-30))


def run_config(tokens, hidden, vocab, ratio, dtype, quick, liger, seed=0):
    from triton.testing import do_bench

    dev = "cuda"
    gen = torch.Generator(device=dev).manual_seed(seed)
    h32 = torch.randn(tokens, hidden, device=dev, generator=gen)
    w32 = torch.randn(vocab, hidden, device=dev, generator=gen) / math.sqrt(hidden)
    labels = torch.randint(0, vocab, (tokens,), device=dev, generator=gen)
    # fp32 reference: token losses, then reference losses with well-separated excess ranks
    with torch.no_grad():
        base = selective_loss(
            h32, w32, labels, torch.zeros(tokens, device=dev), 1.0, backend="reference"
        ).token_losses
    perm = torch.randperm(tokens, device=dev, generator=gen).float()
    ref = base - perm
    h32.requires_grad_()
    w32.requires_grad_()
    out32 = selective_loss(h32, w32, labels, ref, ratio, backend="reference")
    out32.loss.backward()
    g32 = (grad_of(h32).detach(), grad_of(w32).detach())
    mask32 = out32.selected_mask
    del out32, h32, w32, base
    gc.collect()
    torch.cuda.empty_cache()
    gen = torch.Generator(device=dev).manual_seed(seed)
    h = torch.randn(tokens, hidden, device=dev, generator=gen).to(dtype).requires_grad_()
    w = (torch.randn(vocab, hidden, device=dev, generator=gen) / math.sqrt(hidden)).to(dtype)
    w.requires_grad_()

    rows, errors = [], {}
    methods = [m for m in METHODS if m != "liger" or liger is not None]
    steps = {m: make_step(m, h, w, labels, ref, ratio, liger) for m in methods}
    for m in methods:  # correctness first (also the warm-up)
        h.grad = w.grad = None
        try:
            mask = steps[m]()
            torch.cuda.synchronize()
            errors[m] = {
                "grad_hidden_rel_err": rel_err(grad_of(h), g32[0]),
                "grad_weight_rel_err": rel_err(grad_of(w), g32[1]),
                "same_selection": bool(torch.equal(mask, mask32)),
            }
        except torch.cuda.OutOfMemoryError:
            errors[m] = {"oom": True}
        h.grad = w.grad = None
        gc.collect()
        torch.cuda.empty_cache()
    naive_err = errors.get("naive", {})
    passes = 1 if quick else 2
    for p in range(passes):
        order = methods if p % 2 == 0 else list(reversed(methods))
        for m in order:
            if errors[m].get("oom"):
                continue
            h.grad = w.grad = None
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            try:
                steps[m]()
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated() - before
                h.grad = w.grad = None
                ms = do_bench(
                    steps[m],
                    warmup=25 if quick else 100,
                    rep=100 if quick else 400,
                    grad_to_none=[h, w],
                    quantiles=[0.5, 0.2, 0.8],
                )
            except torch.cuda.OutOfMemoryError:
                errors[m]["oom"] = True
                continue
            if not isinstance(ms, list):  # one value per quantile whenever quantiles are given
                raise TypeError(f"triton.testing.do_bench returned {ms!r}, expected 3 values")
            row = {
                "benchmark": "loss_fwd_bwd_gpu",
                "method": m,
                "pass": p,
                "tokens": tokens,
                "hidden": hidden,
                "vocab": vocab,
                "ratio": ratio,
                "dtype": str(dtype).split(".")[-1],
                "time_ms": round(ms[0], 3),
                "time_ms_p20": round(ms[1], 3),
                "time_ms_p80": round(ms[2], 3),
                "peak_extra_gib": round(peak / 2**30, 3),
                **errors[m],
            }
            if naive_err and "grad_hidden_rel_err" in errors[m]:
                # "within bf16 tolerance": no worse than twice the naive bf16 loss's own error
                row["grads_within_bf16_tolerance"] = all(
                    errors[m][k] <= 2 * naive_err[k] + 1e-3
                    for k in ("grad_hidden_rel_err", "grad_weight_rel_err")
                )
            rows.append(row)
            print(
                f"  {m:>20} pass {p}: {ms[0]:8.2f} ms  peak +{peak / 2**30:6.2f} GiB  {errors[m]}",
                flush=True,
            )
    for m in methods:
        if errors[m].get("oom"):
            rows.append(
                {
                    "benchmark": "loss_fwd_bwd_gpu",
                    "method": m,
                    "tokens": tokens,
                    "hidden": hidden,
                    "vocab": vocab,
                    "ratio": ratio,
                    "oom": True,
                }
            )
            print(f"  {m:>20}: out of memory", flush=True)
    del h, w, steps
    gc.collect()
    torch.cuda.empty_cache()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "\n").splitlines()[0])
    p.add_argument("--tokens", type=int, nargs="+", default=[8192, 16384, 32768])
    p.add_argument("--vocab", type=int, nargs="+", default=[32000, 128256])
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--ratio", type=float, default=0.6)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument("--quick", action="store_true", help="one pass, short timing")
    p.add_argument("--out", default=None, help="CSV path (default: results/loss_gpu.csv)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("bench_loss_gpu: needs a CUDA device", file=sys.stderr)
        return 2
    liger, liger_version = liger_loss_fn()
    tags = {**environment_tags("cuda", ["rho-select"]), "liger_kernel": liger_version}
    out = Path(args.out) if args.out else results_dir(__file__) / "loss_gpu.csv"
    dtype = getattr(torch, args.dtype)
    for vocab in args.vocab:
        for tokens in args.tokens:
            print(f"tokens {tokens}, vocab {vocab}, hidden {args.hidden}, {args.dtype}", flush=True)
            rows = run_config(tokens, args.hidden, vocab, args.ratio, dtype, args.quick, liger)
            write_csv(out, rows, tags=tags)
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
