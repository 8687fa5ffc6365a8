"""Sweep a few Triton tile configs for the expert kernels on the 8B MoE-MLP layer (bf16, uniform
routing) and print the layer's forward / forward+backward time for each; CSV:
benchmarks/results/kernel_sweep.csv. Used to pick the defaults in ops/experts/triton.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench_moe_layer import D, make_input, make_layers  # noqa: E402
from jetmoe_model.ops.experts import triton as kernels  # noqa: E402

from tensor_utils.bench import time_fn, write_csv  # noqa: E402

GEMM = [
    dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3),
    dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3),
    dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4),
    dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4),
]
XTY = [
    dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=128, num_warps=8, num_stages=3),
    dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=128, num_warps=4, num_stages=3),
    dict(BLOCK_M=32, BLOCK_N=128, BLOCK_K=128, num_warps=4, num_stages=4),
    dict(BLOCK_M=64, BLOCK_N=256, BLOCK_K=128, num_warps=8, num_stages=3),
]


def main() -> int:
    if not torch.cuda.is_available():
        print("tune_kernels: needs CUDA")
        return 0
    ours, _ = make_layers(False)
    ours.input_linear.config.expert_backend = "triton"
    params = list(ours.parameters())
    rows = []

    def layer_fwd(x):
        return lambda: ours(x)[0]

    def layer_fwd_bwd(x, g):
        return lambda: torch.autograd.grad(ours(x)[0], [x, *params], g)

    for tokens in (1024, 8192):
        x = make_input(tokens, False).requires_grad_()
        g = torch.randn(1, tokens, D, device="cuda", dtype=torch.bfloat16)
        for i, cfg in enumerate(GEMM):
            kernels.CONFIG_OVERRIDES["gemm"] = cfg
            t = time_fn(layer_fwd(x), warmup=10, rep=40)
            rows.append(
                dict(
                    bench="sweep",
                    kernel="gemm",
                    config=i,
                    tokens=tokens,
                    mode="fwd",
                    median_ms=t.median_ms,
                    **cfg,
                )
            )
            print(f"T={tokens} gemm cfg{i} fwd {t.median_ms:.3f} ms {cfg}", flush=True)
        kernels.CONFIG_OVERRIDES.pop("gemm")
        for i, cfg in enumerate(XTY):
            kernels.CONFIG_OVERRIDES["xty"] = cfg
            t = time_fn(layer_fwd_bwd(x, g), warmup=10, rep=40)
            rows.append(
                dict(
                    bench="sweep",
                    kernel="xty",
                    config=i,
                    tokens=tokens,
                    mode="fwd+bwd",
                    median_ms=t.median_ms,
                    **cfg,
                )
            )
            print(f"T={tokens} xty cfg{i} fwd+bwd {t.median_ms:.3f} ms {cfg}", flush=True)
        kernels.CONFIG_OVERRIDES.pop("xty")
    for tokens in (1, 4, 16):
        x = make_input(tokens, False)
        for limit in (0, 64):
            kernels.DECODE_MAX_PAIRS = limit
            t = time_fn(layer_fwd(x), warmup=10, rep=40)
            rows.append(
                dict(
                    bench="sweep",
                    kernel="gemv" if limit else "gemm",
                    tokens=tokens,
                    mode="fwd",
                    median_ms=t.median_ms,
                )
            )
            print(
                f"T={tokens} decode_max_pairs={limit} fwd {t.median_ms:.3f} ms",
                flush=True,
            )
    write_csv(HERE / "results" / "kernel_sweep.csv", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
