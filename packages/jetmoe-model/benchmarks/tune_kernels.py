"""Sweep Triton tile configs and the TMA switch for the expert kernels on the 8B MoE-MLP layer
(bf16, uniform routing) and print the layer's forward (no_grad) / forward+backward time for
each, next to grouped_mm and the dense roofline of the same run; CSV:
benchmarks/results/kernel_sweep.csv. Used to pick the defaults in ops/experts/triton.py.

    python packages/jetmoe-model/benchmarks/tune_kernels.py [--tokens 1024,8192,32768]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench_moe_layer import D, F, K, make_input, make_layers  # noqa: E402
from jetmoe_model.ops.experts import triton as kernels  # noqa: E402

from tensor_utils.bench import time_fn, write_csv  # noqa: E402


def cfg(bm, bn, bk, warps, stages, group_m=None):
    out = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages)
    if group_m is not None:
        out["GROUP_M"] = group_m
    return out


# GLU: BLOCK_N per half (two accumulators), so 128 here is a 128x256 output-column footprint
GLU = [
    cfg(128, 128, 64, 8, 3, 8),
    cfg(128, 128, 64, 8, 4, 8),
    cfg(128, 64, 64, 4, 4, 8),
    cfg(64, 64, 64, 4, 4, 8),
    cfg(64, 128, 64, 4, 3, 8),
]
GEMM = [
    cfg(128, 256, 64, 8, 3, 8),
    cfg(128, 128, 64, 8, 3, 8),
    cfg(128, 128, 64, 4, 4, 8),
    cfg(64, 128, 64, 4, 4, 8),
]
XTY = [
    cfg(64, 128, 128, 8, 3),
    cfg(32, 128, 128, 4, 4),
    cfg(64, 256, 128, 8, 3),
    cfg(128, 128, 128, 8, 3),
    cfg(64, 128, 256, 8, 3),
]


# backward-only kinds (``--sweep bwd``): the dh GEMM (glu_bwd epilogue), the dX GEMM (W^T)
GLU_BWD = [
    cfg(128, 128, 64, 8, 3, 8),
    cfg(128, 64, 64, 4, 4, 8),
    cfg(64, 128, 64, 4, 4, 8),
    cfg(128, 128, 64, 8, 4, 8),
]
GEMM_T = [
    cfg(128, 256, 64, 8, 3, 8),
    cfg(128, 128, 64, 8, 3, 8),
    cfg(128, 128, 64, 4, 4, 8),
    cfg(128, 256, 64, 8, 4, 8),
]
XTY2 = [
    cfg(64, 128, 128, 8, 3),
    cfg(128, 128, 64, 8, 3),
    cfg(64, 128, 64, 4, 4),
    cfg(64, 256, 64, 8, 3),
    cfg(64, 128, 128, 4, 3),
]
SWEEPS = {
    "fwd": (("glu", GLU, "fwd"), ("gemm", GEMM, "fwd"), ("xty", XTY, "fwd+bwd")),
    "bwd": (
        ("glu_bwd", GLU_BWD, "fwd+bwd"),
        ("gemm_t", GEMM_T, "fwd+bwd"),
        ("xty", XTY2, "fwd+bwd"),
    ),
}


def breakdown(ours, tokens: int) -> list[dict]:
    """Each kernel / stage of the Triton layer timed alone (same routing as the layer)."""
    from jetmoe_model.modeling import combine
    from jetmoe_model.ops.expert_mlp import triton as mlp

    x = make_input(tokens, False).view(-1, D)
    w_in, w_out = ours.input_linear.weight.detach(), ours.output_linear.weight.detach()
    with torch.no_grad():
        route = ours.router(x)
    sp, off = route.routing.sorted_pair, route.routing.expert_offsets
    p = sp.numel()
    gg = kernels.gather_gemm_scatter
    act, h = gg(x, w_in, off, sp, K, None, p, epilogue="glu", save_h=True)
    y, _ = gg(act, w_out, off, None, 1, sp, p)
    dy = torch.randn_like(y)
    bwd = dict(transpose_weight=True, allow_gemv=False)
    # the backward as ops/expert_mlp/triton.py runs it: dy and x gathered into sorted order once,
    # then every backward GEMM reads contiguous rows (TMA); labels say "sorted" (rows recorded
    # before this change, without it, timed the gathered-operand variants)
    dy_s, x_s = dy.index_select(0, sp), x.index_select(0, sp // K)
    dh, _ = gg(dy_s, w_out, off, None, 1, None, p, epilogue="glu_bwd", h=h, **bwd)
    stages = {
        "router+topk+sort": (lambda: ours.router(x), 0),
        "glu gemm (fwd, no h)": (
            lambda: gg(x, w_in, off, sp, K, None, p, epilogue="glu"),
            2 * p * D * 2 * F,
        ),
        "glu gemm (fwd, saves h)": (
            lambda: gg(x, w_in, off, sp, K, None, p, epilogue="glu", save_h=True),
            2 * p * D * 2 * F,
        ),
        "gemm2+scatter (fwd)": (lambda: gg(act, w_out, off, None, 1, sp, p), 2 * p * F * D),
        "combine (torch)": (lambda: combine(y, route.gates) + ours.bias, 0),
        "combine (triton, inference)": (lambda: mlp.combine(y, route.gates, ours.bias), 0),
        "gather dy and x to sorted order": (
            lambda: (dy.index_select(0, sp), x.index_select(0, sp // K)),
            0,
        ),
        "glu_bwd gemm (dh, sorted dy)": (
            lambda: gg(dy_s, w_out, off, None, 1, None, p, epilogue="glu_bwd", h=h, **bwd),
            2 * p * D * F,
        ),
        "xty dW_out (sorted)": (
            lambda: kernels.grouped_xty(act, dy_s, off, None, 1, None, w_out.shape, p),
            2 * p * D * F,
        ),
        "gemm_t dX (W_in^T)": (lambda: gg(dh, w_in, off, None, 1, sp, p, **bwd), 2 * p * 2 * F * D),
        "xty dW_in (sorted)": (
            lambda: kernels.grouped_xty(x_s, dh, off, None, 1, None, w_in.shape, p),
            2 * p * 2 * F * D,
        ),
    }
    rows = []
    for name, (fn, flops) in stages.items():
        with torch.no_grad():
            t = time_fn(fn, warmup=10, rep=40).median_ms
        tf = flops / (t * 1e-3) / 1e12 if flops else float("nan")
        rows.append(dict(bench="breakdown", label=name, tokens=tokens, median_ms=t, tflops=tf))
        print(f"T={tokens:6d} {name:32s} {t:8.3f} ms {tf:6.1f} TFLOP/s", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", default="1024,8192,32768")
    parser.add_argument("--out", default=str(HERE / "results" / "kernel_sweep.csv"))
    parser.add_argument("--sweep", default="fwd", choices=["fwd", "bwd", "none"])
    parser.add_argument("--breakdown", action="store_true", help="also time each kernel alone")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("tune_kernels: needs CUDA")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True
    ours, _, _ = make_layers(False)
    params = list(ours.parameters())
    warm = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(200):  # ~1 s of matmuls: clocks up before the first timing
        warm @ warm
    del warm

    def fwd(x):
        def run():
            with torch.no_grad():
                return ours(x)[0]

        return run

    def fwd_bwd(x, g):
        return lambda: torch.autograd.grad(ours(x)[0], [x, *params], g)

    def measure(rows, tokens, label, mode, fn, **extra):
        try:
            t = time_fn(fn, warmup=10, rep=40).median_ms
        except Exception as exc:  # a config that does not compile/fit is a printed miss
            print(
                f"T={tokens} {label} {mode}: failed {type(exc).__name__}: {exc}"[:300], flush=True
            )
            return
        flops = 2 * (D * 2 * F + F * D) * tokens * K * (3 if mode == "fwd+bwd" else 1)
        rows.append(
            dict(bench="sweep", label=label, tokens=tokens, mode=mode, median_ms=t,
                 tflops=flops / (t * 1e-3) / 1e12, **extra)
        )  # fmt: skip
        print(f"T={tokens:6d} {label:28s} {mode:8s} {t:8.3f} ms {rows[-1]['tflops']:6.1f} TFLOP/s",
              flush=True)  # fmt: skip

    for tokens in [int(t) for t in args.tokens.split(",")]:
        rows: list[dict] = []
        x = make_input(tokens, False).requires_grad_()
        g = torch.randn(1, tokens, D, device="cuda", dtype=torch.bfloat16)
        a = torch.randn(tokens * K, D, device="cuda", dtype=torch.bfloat16)
        w1 = torch.randn(D, 2 * F, device="cuda", dtype=torch.bfloat16) * 0.02
        w2 = torch.randn(F, D, device="cuda", dtype=torch.bfloat16) * 0.02
        with torch.no_grad():
            measure(
                rows,
                tokens,
                "dense_roofline",
                "fwd",
                lambda a=a, w1=w1, w2=w2: (a @ w1)[:, :F] @ w2,
            )
        for backend in ("grouped_mm", "triton"):
            ours.input_linear.config.expert_backend = backend
            measure(rows, tokens, f"{backend} default", "fwd", fwd(x))
            measure(rows, tokens, f"{backend} default", "fwd+bwd", fwd_bwd(x, g))
        kernels.USE_TMA = False
        measure(rows, tokens, "triton no-TMA", "fwd", fwd(x))
        measure(rows, tokens, "triton no-TMA", "fwd+bwd", fwd_bwd(x, g))
        kernels.USE_TMA = True
        if args.breakdown:
            rows += breakdown(ours, tokens)
        for key, configs, mode in SWEEPS.get(args.sweep, ()):
            for i, c in enumerate(configs):
                kernels.CONFIG_OVERRIDES[key] = c
                fn = fwd(x) if mode == "fwd" else fwd_bwd(x, g)
                measure(
                    rows, tokens, f"{key}{i}", mode, fn, kernel=key, config=i, sweep=args.sweep, **c
                )
            kernels.CONFIG_OVERRIDES.pop(key)
        write_csv(args.out, rows)  # per size: a timeout keeps what was measured
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
