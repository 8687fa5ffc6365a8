"""Memory and time of the selective loss against the naive loss, forward + backward, on the CPU.

Naive: full logits ``hidden @ W.T``, ``cross_entropy(reduction="none")``, the same selection
mask, ``sum / count``, autograd. Ours: ``rho_select.selective_loss`` (the chunked PyTorch
reference path: the CPU has no Triton). Both run side by side in one process in interleaved
rounds (A, B, B, A, ...); the medians are reported. Peak memory is the increase of the process's
anonymous resident memory during the call (``tensor_utils_dev.bench.PeakMemory``), gradients
included for both.

    python packages/rho-select/benchmarks/bench_loss.py               # V=49152, H=576, 8k tokens
    python packages/rho-select/benchmarks/bench_loss.py --breakdown   # where ours spends its time
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch
import torch.nn.functional as F
from rho_select import select_tokens, selective_loss
from rho_select.ops.selective_loss import naive as ops

from tensor_utils_dev.bench import PeakMemory, environment_tags, results_dir, write_csv


def grad_of(t: torch.Tensor) -> torch.Tensor:
    """``t.grad``, which the backward just filled."""
    if t.grad is None:
        raise RuntimeError("no gradient reached the input")
    return t.grad


def make_inputs(tokens: int, hidden: int, vocab: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(tokens, hidden, generator=gen).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=gen) / hidden**0.5).requires_grad_()
    labels = torch.randint(0, vocab, (tokens,), generator=gen)
    ref = torch.rand(tokens, generator=gen) * 8
    return h, w, labels, ref


def naive_loss(h, w, labels, ref, ratio):
    logits = h @ w.t()
    tokens = F.cross_entropy(logits, labels, reduction="none")
    mask = select_tokens(tokens.detach() - ref, labels != -100, ratio).mask
    loss = (tokens * mask).sum() / mask.sum()
    loss.backward()
    return loss


def ours_loss(h, w, labels, ref, ratio, chunk_size):
    out = selective_loss(h, w, labels, ref, ratio, chunk_size=chunk_size)
    out.loss.backward()
    return out.loss


def measure(fn, h, w):
    h.grad = w.grad = None
    gc.collect()
    with PeakMemory(cuda=False, interval_s=0.002) as mem:
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
    return seconds, mem.anon_increase_bytes


def breakdown(h, w, labels, ref, ratio, chunk_size, rounds):
    """Seconds of each part of ours: forward op (all rows), selection, backward op (selected)."""
    parts = {"forward_op": [], "selection": [], "backward_op": [], "naive_matmul_x3": []}
    with torch.no_grad():
        for _ in range(rounds):
            t0 = time.perf_counter()
            loss, lse = ops.selective_loss_forward(h, w, labels, chunk_size, -100)
            t1 = time.perf_counter()
            mask = select_tokens(loss - ref, labels != -100, ratio).mask
            scale = mask.float() / mask.sum()
            t2 = time.perf_counter()
            ops.selective_loss_backward(h, w, labels, lse, scale, chunk_size, True)
            t3 = time.perf_counter()
            logits = h @ w.t()
            _ = logits @ w
            _ = logits.t() @ h
            del logits
            t4 = time.perf_counter()
            for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                parts[key].append(value)
    return {k: statistics.median(v) for k, v in parts.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "\n").splitlines()[0])
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--hidden", type=int, default=576)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--ratio", type=float, default=0.6)
    p.add_argument("--chunk-size", type=int, default=0, help="rows per chunk (0: automatic)")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds (the page: 3)")
    p.add_argument("--breakdown", action="store_true")
    p.add_argument("--out", default=None, help="CSV path (default: results/loss_cpu.csv)")
    args = p.parse_args()
    h, w, labels, ref = make_inputs(args.tokens, args.hidden, args.vocab)
    methods = {
        "naive": lambda: naive_loss(h, w, labels, ref, args.ratio),
        "rho_select": lambda: ours_loss(h, w, labels, ref, args.ratio, args.chunk_size),
    }
    # gradients agree (also a warm-up of both paths)
    grads = {}
    for name, fn in methods.items():
        h.grad = w.grad = None
        fn()
        grads[name] = (grad_of(h).clone(), grad_of(w).clone())
    err = max(
        float((a - b).abs().max() / b.abs().max())
        for a, b in zip(grads["naive"], grads["rho_select"], strict=True)
    )
    del grads
    samples = {name: [] for name in methods}
    for r in range(args.rounds):
        order = list(methods) if r % 2 == 0 else list(reversed(methods))
        for name in order:
            seconds, peak = measure(methods[name], h, w)
            samples[name].append((seconds, peak))
            print(f"round {r} {name}: {seconds:.2f} s, peak +{peak / 2**20:.0f} MiB", flush=True)
    rows = []
    tags = {
        **environment_tags("cpu", ["rho-select"]),
        "load_avg_1m": f"{__import__('os').getloadavg()[0]:.1f}",
    }
    med = {}
    for name, values in samples.items():
        t = statistics.median(v[0] for v in values)
        m = statistics.median(v[1] for v in values)
        med[name] = (t, m)
        base = {
            "benchmark": "loss_fwd_bwd",
            "method": name,
            "tokens": args.tokens,
            "hidden": args.hidden,
            "vocab": args.vocab,
            "ratio": args.ratio,
            "dtype": "float32",
            "chunk_size": args.chunk_size,
            "rounds": args.rounds,
            "threads": torch.get_num_threads(),
        }
        rows.append(
            {
                **base,
                "metric": "time_s",
                "value": round(t, 4),
                "all": ";".join(f"{v[0]:.3f}" for v in values),
            }
        )
        rows.append(
            {
                **base,
                "metric": "peak_extra_mib",
                "value": round(m / 2**20, 1),
                "all": ";".join(f"{v[1] / 2**20:.0f}" for v in values),
            }
        )
    rows.append(
        {
            "benchmark": "loss_fwd_bwd",
            "method": "rho_select",
            "metric": "grad_max_rel_err_vs_naive",
            "value": f"{err:.2e}",
            "tokens": args.tokens,
            "vocab": args.vocab,
            "hidden": args.hidden,
        }
    )
    if args.breakdown:
        for part, seconds in breakdown(
            h, w, labels, ref, args.ratio, args.chunk_size, args.rounds
        ).items():
            rows.append(
                {
                    "benchmark": "loss_breakdown",
                    "method": part,
                    "metric": "time_s",
                    "value": round(seconds, 4),
                    "tokens": args.tokens,
                    "vocab": args.vocab,
                    "hidden": args.hidden,
                    "chunk_size": args.chunk_size,
                }
            )
            print(f"breakdown {part}: {seconds:.2f} s")
    out = write_csv(args.out or results_dir(__file__) / "loss_cpu.csv", rows, tags=tags)
    (tn, mn), (to, mo) = med["naive"], med["rho_select"]
    print(
        f"time ratio ours/naive {to / tn:.3f}, memory ratio {mo / max(mn, 1):.3f}, grad rel err {err:.1e} -> {out}"
    )


if __name__ == "__main__":
    main()
