"""Sweep Triton tile configs and the TMA switch for the expert kernels on the 8B MoE-MLP layer
(bf16, uniform routing) and print the layer's forward (no_grad) / forward+backward time for
each, next to grouped_mm and the dense roofline of the same run; CSV:
benchmarks/results/kernel_sweep.csv. Used to pick the defaults in ops/experts/triton.py.

    python packages/jetmoe-model/benchmarks/tune_kernels.py [--tokens 1024,8192,32768]

``--profile LOG`` also times the unfused-routing path (routing as its own autograd node,
``unfused_moe.py``) next to the fused one and the cost of one bare Triton / ATen launch;
``--dh`` times the dh GEMM candidates at 8,192 tokens (kernel alone, then the layer);
``--persistent`` and ``--glu`` time the persistent-grid and GLU tile candidates next to cuBLAS;
``--pick FILE`` writes the fastest one's config overrides (JSON) for ``bench_moe_layer_gpu.py``.
Needs CUDA; run it through ``tools/run_gpu.py jetmoe-model --bench tune_kernels.py -- ...``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from typing import Any

import torch
from bench_moe_layer_gpu import D, F, K, make_input, make_layers
from jetmoe_model.ops.experts import triton as kernels
from jetmoe_model.ops.options import kernel_options, set_kernel_options
from unfused_moe import use_route_node

from tensor_utils_dev.bench import results_dir, time_fn, write_csv


class _Overrides:
    """The ``config_overrides`` of the kernel options in force, edited like a dict by the sweeps
    (each edit installs a new ``KernelOptions``)."""

    def __setitem__(self, key: str, config: dict) -> None:
        set_kernel_options(kernel_options().with_override(key, config))

    def pop(self, key: str, default=None) -> None:
        set_kernel_options(kernel_options().with_override(key, None))

    def clear(self) -> None:
        set_kernel_options(kernel_options().replace(config_overrides={}))

    def update(self, table: dict) -> None:
        merged = {**kernel_options().config_overrides, **table}
        set_kernel_options(kernel_options().replace(config_overrides=merged))


OVERRIDES = _Overrides()


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
# kernel-level sweep (``--sweep kernels``): each kernel timed alone on the layer's operands
KERNELS = {
    "glu": [
        cfg(128, 128, 64, 8, 3, 8),
        cfg(128, 128, 64, 8, 4, 8),
        cfg(128, 128, 64, 8, 3, 16),
        cfg(128, 128, 128, 8, 2, 8),
    ],
    "gemm": [cfg(128, 256, 64, 8, 3, 8), cfg(128, 256, 64, 8, 4, 8), cfg(128, 256, 64, 8, 3, 16)],
    "glu_bwd": [cfg(128, 128, 64, 8, 3, 8), cfg(128, 64, 64, 8, 4, 8), cfg(128, 128, 64, 8, 4, 8)],
    "gemm_t": [cfg(128, 256, 64, 8, 3, 8), cfg(128, 256, 64, 8, 4, 8), cfg(128, 128, 64, 8, 4, 8)],
    "xty": [
        cfg(64, 128, 128, 8, 3),
        cfg(64, 256, 128, 8, 3),
        cfg(128, 128, 128, 8, 3),
        cfg(128, 256, 64, 8, 3),
        cfg(64, 256, 64, 8, 4),
    ],
}
SWEEPS = {
    "fwd": (("glu", GLU, "fwd"), ("gemm", GEMM, "fwd"), ("xty", XTY, "fwd+bwd")),
    "bwd": (
        ("glu_bwd", GLU_BWD, "fwd+bwd"),
        ("gemm_t", GEMM_T, "fwd+bwd"),
        ("xty", XTY2, "fwd+bwd"),
    ),
}


def breakdown(ours, tokens: int) -> list[dict]:
    """Each kernel / stage of the Triton layer timed alone (same routing as the layer), as the
    layer runs them: Triton routing, x gathered to sorted order (above ``gather_x_min_pairs``),
    the combine's backward writing dy in sorted order, every backward GEMM on sorted rows."""
    from jetmoe_model.ops.expert_mlp import triton as mlp
    from jetmoe_model.ops.routing import triton as route_kernels
    from jetmoe_model.routing import top_k_route

    o = layer_operands(ours, tokens)
    x, x_s, w_in, w_out, logits = o["x"], o["x_s"], o["w_in"], o["w_out"], o["logits"]
    sp, off, p, act, h, y, dout, dy_s, dh, bwd = (
        o[k] for k in ("sp", "off", "p", "act", "h", "y", "dout", "dy_s", "dh", "bwd")
    )
    gates, pos = o["route"].gates, o["route"].routing.pair_position
    gg = kernels.gather_gemm_scatter
    glu_flops, out_flops = 2 * p * D * 2 * F, 2 * p * F * D
    stages = {
        "router matmul": (lambda: ours.router.layer(x).float(), 0),
        "topk+sort (torch)": (lambda: top_k_route(logits, K, x.dtype), 0),
        "topk+sort (triton)": (lambda: route_kernels.top_k_route(logits, K, x.dtype), 0),
        "gather x to sorted": (lambda: x.index_select(0, sp // K), 0),
        "glu gemm (gathered x, no h)": (
            lambda: gg(x, w_in, off, sp, K, None, p, epilogue="glu"), glu_flops),
        "glu gemm (sorted x, no h)": (
            lambda: gg(x_s, w_in, off, None, 1, None, p, epilogue="glu"), glu_flops),
        "glu gemm (sorted x, saves h)": (
            lambda: gg(x_s, w_in, off, None, 1, None, p, epilogue="glu", save_h=True), glu_flops),
        "gemm2+scatter (fwd)": (lambda: gg(act, w_out, off, None, 1, sp, p), out_flops),
        "combine (triton)": (lambda: mlp.combine(y, gates, ours.bias), 0),
        "combine bwd (dy sorted)": (lambda: mlp._combine_bwd_launch(dout, y, gates, pos), 0),
        "glu_bwd gemm (dh, sorted dy)": (
            lambda: gg(dy_s, w_out, off, None, 1, None, p, epilogue="glu_bwd", h=h, **bwd),
            out_flops),
        "xty dW_out (sorted)": (
            lambda: kernels.grouped_xty(act, dy_s, off, None, 1, None, w_out.shape, p), out_flops),
        "gemm_t dX (W_in^T)": (lambda: gg(dh, w_in, off, None, 1, sp, p, **bwd), glu_flops),
        "xty dW_in (sorted)": (
            lambda: kernels.grouped_xty(x_s, dh, off, None, 1, None, w_in.shape, p), glu_flops),
    }  # fmt: skip
    rows = []
    for name, (fn, flops) in stages.items():
        with torch.no_grad():
            t = time_fn(fn, warmup=10, rep=40).median_ms
        tf = flops / (t * 1e-3) / 1e12 if flops else float("nan")
        rows.append(dict(bench="breakdown", label=name, tokens=tokens, median_ms=t, tflops=tf))
        print(f"T={tokens:6d} {name:32s} {t:8.3f} ms {tf:6.1f} TFLOP/s", flush=True)
    return rows


def layer_operands(ours, tokens: int) -> dict[str, Any]:
    """The Triton layer's operands at ``tokens`` (routing, sorted x, h, act, y, sorted dy, dh)."""
    from jetmoe_model.ops.expert_mlp import triton as mlp
    from jetmoe_model.ops.routing import triton as route_kernels

    x = make_input(tokens, False).view(-1, D)
    w_in, w_out = ours.input_linear.weight.detach(), ours.output_linear.weight.detach()
    with torch.no_grad():
        logits = ours.router.layer(x).float()
        route = route_kernels.top_k_route(logits, K, x.dtype)
    r = route.routing
    sp, off, p = r.sorted_pair, r.expert_offsets, r.num_pairs
    gg = kernels.gather_gemm_scatter
    x_s = x.index_select(0, sp // K)
    act, h = gg(x_s, w_in, off, None, 1, None, p, epilogue="glu", save_h=True)
    y, _ = gg(act, w_out, off, None, 1, sp, p)
    dout = torch.randn_like(x)
    dy_s, _ = mlp._combine_bwd_launch(dout, y, route.gates, r.pair_position)
    bwd: dict[str, Any] = dict(transpose_weight=True, allow_gemv=False)
    dh, _ = gg(dy_s, w_out, off, None, 1, None, p, epilogue="glu_bwd", h=h, **bwd)
    return dict(x=x, x_s=x_s, w_in=w_in, w_out=w_out, logits=logits, route=route, sp=sp,
                off=off, p=p, act=act, h=h, y=y, dout=dout, dy_s=dy_s, dh=dh, bwd=bwd)  # fmt: skip


def kernel_sweep(ours, tokens: int) -> list[dict]:
    """Each config of ``KERNELS`` timed on the kernel alone (less noise than the whole layer)."""
    o = layer_operands(ours, tokens)
    gg, p, off, sp, bwd = kernels.gather_gemm_scatter, o["p"], o["off"], o["sp"], o["bwd"]
    w_in, w_out = o["w_in"], o["w_out"]
    glu_flops, out_flops = 2 * p * D * 2 * F, 2 * p * F * D
    calls = {
        "glu": (lambda: gg(o["x_s"], w_in, off, None, 1, None, p, epilogue="glu", save_h=True),
                glu_flops),
        "gemm": (lambda: gg(o["act"], w_out, off, None, 1, sp, p), out_flops),
        "glu_bwd": (lambda: gg(o["dy_s"], w_out, off, None, 1, None, p, epilogue="glu_bwd",
                               h=o["h"], **bwd), out_flops),
        "gemm_t": (lambda: gg(o["dh"], w_in, off, None, 1, sp, p, **bwd), glu_flops),
        "xty": (lambda: (kernels.grouped_xty(o["act"], o["dy_s"], off, None, 1, None,
                                             w_out.shape, p),
                         kernels.grouped_xty(o["x_s"], o["dh"], off, None, 1, None,
                                             w_in.shape, p)), out_flops + glu_flops),
    }  # fmt: skip
    rows = []
    for key, configs in KERNELS.items():
        fn, flops = calls[key]
        for i, c in enumerate(configs):
            OVERRIDES[key] = c
            try:
                with torch.no_grad():
                    t = time_fn(fn, warmup=10, rep=40).median_ms
            except Exception as exc:  # a config that does not compile/fit is a printed miss
                print(f"T={tokens} {key}{i}: failed {type(exc).__name__}: {exc}"[:300], flush=True)
                continue
            finally:
                OVERRIDES.pop(key)
            tf = flops / (t * 1e-3) / 1e12
            rows.append(dict(bench="kernel_sweep", kernel=key, config=i, tokens=tokens,
                             median_ms=t, tflops=tf, label=f"{key}{i}", sweep="kernels", **c))  # fmt: skip
            print(f"T={tokens:6d} {key}{i} {c} {t:8.3f} ms {tf:6.1f} TFLOP/s", flush=True)
    return rows


def launch_costs() -> list[dict]:
    """Host time of one bare launch: a tiny Triton kernel (our combine, through Triton's Python
    launcher) and a tiny ATen op, 200 back to back without a sync."""
    from jetmoe_model.ops.expert_mlp import triton as mlp

    y = torch.randn(8, 64, device="cuda", dtype=torch.bfloat16)
    gates = torch.rand(4, 2, device="cuda", dtype=torch.bfloat16)
    bias = torch.zeros(64, device="cuda", dtype=torch.bfloat16)
    calls = {
        "triton launch (combine, 9 args)": lambda: mlp._combine_fwd(y, gates, bias),
        "aten launch (add)": lambda: torch.add(y, y),
        "aten launch (sum dim 0)": lambda: y.sum(0),
    }
    rows = []
    for label, fn in calls.items():
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(200):
            fn()
        us = (time.perf_counter() - t0) / 200 * 1e6
        torch.cuda.synchronize()
        rows.append(dict(bench="host_launch", label=label, median_ms=us / 1e3))
        print(f"{label:34s} {us:7.1f} us host per launch", flush=True)
    return rows


def host_profile(ours, tokens: int, log) -> list[dict]:
    """Where the time of one layer call goes at small sizes: host enqueue time per call (N calls
    back to back, no sync in between) against the wall time per call (all calls, synced), the
    do_bench median, and a torch.profiler summary (CPU ops, CUDA kernels) of one call; for the
    fused routing path, the unfused one (routing node + layer node) and grouped_mm, and the fused
    path's forward+backward once more with Python's garbage collector off."""
    from torch.profiler import ProfilerActivity, profile

    x = make_input(tokens, False).requires_grad_()
    g = torch.randn_like(x)
    params = list(ours.parameters())
    rows = launch_costs()
    variants = (
        ("triton fused route", "triton", True, True),
        ("triton route node", "triton", False, True),
        ("grouped_mm", "grouped_mm", True, True),
        ("triton fused route, gc off", "triton", True, False),
    )
    for label, backend, fuse, gc_on in variants:
        ours.input_linear.config.expert_backend = backend
        use_route_node(ours, not fuse)
        for mode in ("fwd", "fwd+bwd"):
            if not gc_on and mode == "fwd":
                continue

            def fn(backward: bool = mode != "fwd"):
                if backward:
                    return torch.autograd.grad(ours(x)[0], [x, *params], g)
                with torch.no_grad():
                    return ours(x)[0]

            for _ in range(5):
                fn()
            if not gc_on:
                gc.collect()
                gc.disable()
            torch.cuda.synchronize()
            n = 30
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            t1 = time.perf_counter()
            torch.cuda.synchronize()
            t2 = time.perf_counter()
            med = time_fn(fn, warmup=5, rep=40).median_ms
            gc.enable()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                fn()
                torch.cuda.synchronize()
            ev = prof.key_averages()
            gpu_us = sum(e.self_device_time_total for e in ev if e.device_type.name == "CUDA")
            kernels_n = sum(e.count for e in ev if e.device_type.name == "CUDA")
            host_ms, total_ms = (t1 - t0) / n * 1e3, (t2 - t0) / n * 1e3
            rows.append(dict(bench="host_profile", label=f"{label} {mode}", tokens=tokens,
                             mode=mode, median_ms=med, host_ms=host_ms, wall_ms=total_ms,
                             gpu_ms=gpu_us / 1e3, kernels=kernels_n))  # fmt: skip
            msg = (f"T={tokens} {label:27s} {mode:8s} host enqueue {host_ms:.3f} ms/call, "
                   f"wall {total_ms:.3f} ms/call, do_bench median {med:.3f} ms, GPU kernels "
                   f"{gpu_us / 1e3:.3f} ms ({kernels_n} launches)")  # fmt: skip
            print(msg, flush=True)
            log.write(f"\n===== {msg}\n")
            log.write(
                ev.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=60)
            )
            log.flush()
    use_route_node(ours, False)
    return rows


def _with_h_early(c, h_early):
    return {**c, "H_EARLY": int(h_early)}


# dh GEMM candidates (``--dh``): the glu_bwd epilogue over sorted rows with the h loads after (0)
# or before (1) the K loop (the general kernel's H_EARLY option), a few tiles: kernel_sweep.csv
DH = {
    "sorted 128x128x64/8/4 h late": _with_h_early(cfg(128, 128, 64, 8, 4, 8), 0),
    "sorted 128x128x64/8/4 h early": _with_h_early(cfg(128, 128, 64, 8, 4, 8), 1),
    "sorted 128x128x64/8/3 h early": _with_h_early(cfg(128, 128, 64, 8, 3, 8), 1),
    "sorted 128x128x128/8/3 h early": _with_h_early(cfg(128, 128, 128, 8, 3, 8), 1),
    "sorted 64x256x64/8/4 h early": _with_h_early(cfg(64, 256, 64, 8, 4, 8), 1),
}


def dh_candidates(ours, tokens: int, pick: str) -> list[dict]:
    """The dh GEMM alone for each ``DH`` candidate, then the layer's forward+backward with the
    fastest sorted-row candidate against the h-late one (ABAB, medians); the pick (if any
    candidate beats the defaults) goes to ``pick`` as config overrides."""
    o = layer_operands(ours, tokens)
    gg, p, off, bwd = kernels.gather_gemm_scatter, o["p"], o["off"], o["bwd"]
    flops = 2 * p * F * D
    rows, best = [], None
    fn = lambda: gg(o["dy_s"], o["w_out"], off, None, 1, None, p,  # noqa: E731
                    epilogue="glu_bwd", h=o["h"], **bwd)  # fmt: skip
    for label, c in DH.items():
        OVERRIDES["glu_bwd"] = c
        try:
            with torch.no_grad():
                t = time_fn(fn, warmup=10, rep=40).median_ms
        except Exception as exc:  # a config that does not compile/fit is a printed miss
            print(f"T={tokens} dh {label}: failed {type(exc).__name__}: {exc}"[:300], flush=True)
            continue
        finally:
            OVERRIDES.pop("glu_bwd", None)
        tf = flops / (t * 1e-3) / 1e12
        rows.append(dict(bench="dh_candidates", label=label, tokens=tokens, median_ms=t,
                         tflops=tf, **c))  # fmt: skip
        print(f"T={tokens:6d} dh {label:34s} {t:8.3f} ms {tf:6.1f} TFLOP/s", flush=True)
        if best is None or t < best[1]:
            best = (label, t, c)
    if best is None:
        return rows
    x = make_input(tokens, False).requires_grad_()
    g = torch.randn(1, tokens, D, device="cuda", dtype=torch.bfloat16)
    params = list(ours.parameters())
    ours.input_linear.config.expert_backend = "triton"

    late = DH["sorted 128x128x64/8/4 h late"]
    # label: (dh overrides, fused routing); "unfused routing": routing node + dh loads after the loop
    layer = {"defaults": (None, True), best[0]: (best[2], True), "h late": (late, True),
             "unfused routing": (late, False)}  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in layer}
    for _ in range(2):  # ABAB: the layer's run-to-run spread is ~1-2%
        for label, (c, fuse) in layer.items():
            if c is not None:
                OVERRIDES["glu_bwd"] = c
            use_route_node(ours, not fuse)
            times[label].append(
                time_fn(
                    lambda: torch.autograd.grad(ours(x)[0], [x, *params], g), warmup=5, rep=40
                ).median_ms
            )
            OVERRIDES.pop("glu_bwd", None)
            use_route_node(ours, False)
    for label, ts in times.items():
        rows.append(dict(bench="dh_layer", label=f"layer fwd+bwd, dh {label}", tokens=tokens,
                         mode="fwd+bwd", median_ms=min(ts)))  # fmt: skip
        print(f"T={tokens:6d} layer fwd+bwd {label:34s} {[round(v, 3) for v in ts]} ms",
              flush=True)  # fmt: skip
    if pick:
        chosen = min((k for k in times if layer[k][1]), key=lambda k: min(times[k]))
        overrides = {} if layer[chosen][0] is None else {"glu_bwd": layer[chosen][0]}
        with open(pick, "w") as fh:
            json.dump(overrides, fh)
        print(f"picked dh: {chosen} -> {overrides}", flush=True)
    return rows


# persistent-grid candidates (``--persistent``), layered over each kind's default tiles (which
# above 4,096 pairs already carry ``KernelOptions.persistent_large``)
PERSISTENT = {
    "one program per tile": {"PERSISTENT": 0},
    "persistent": {"PERSISTENT": 1, "FLATTEN": 0, "WARP_SPECIALIZE": 0},
    "persistent flatten": {"PERSISTENT": 1, "FLATTEN": 1, "WARP_SPECIALIZE": 0},
    "persistent ws": {"PERSISTENT": 1, "FLATTEN": 0, "WARP_SPECIALIZE": 1},
    "persistent flatten ws": {"PERSISTENT": 1, "FLATTEN": 1, "WARP_SPECIALIZE": 1},
}
XTY_PERSISTENT = {k: v for k, v in PERSISTENT.items() if not v.get("WARP_SPECIALIZE")}
# every GEMM kind with one program per tile and dh in the GEMM's epilogue (no persistent grid)
ONE_PROGRAM_PER_TILE = {
    kind: {"PERSISTENT": 0} for kind in ("gemm", "gemm_t", "glu", "glu_bwd", "xty")
}


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def compiled_candidates(fn, key: str, variants: dict, tag: str) -> dict:
    """The ``variants`` (``config_overrides[key]`` values) that compile, each run once and its
    output compared with the default config's (max abs difference printed; a failure to compile
    is a printed miss)."""
    ok = {}
    for label, c in variants.items():
        try:
            with torch.no_grad():
                base = _first(fn())
                OVERRIDES[key] = c
                err = (_first(fn()).float() - base.float()).abs().max().item()
            ok[label] = c
            print(f"{tag} {label}: compiled, max diff vs default {err:.3g}", flush=True)
        except Exception as exc:  # a candidate that does not compile is a printed miss
            print(f"{tag} {label}: failed {type(exc).__name__}: {exc}"[:400], flush=True)
        finally:
            OVERRIDES.pop(key, None)
    return ok


def interleaved(fns: dict, rounds: int, *, rep: int, overrides: dict | None = None):
    """``(medians, all times)``: each ``fns[label]`` timed once per pass, in turn, over ``rounds``
    passes (GPU timings drift within a process; interleaving spreads the drift over every
    candidate); the median of its per-pass medians. ``overrides[label] = (key, config)``
    sits in the kernel options' ``config_overrides`` while that label is timed."""
    import statistics

    times = {label: [] for label in fns}
    for _ in range(rounds):
        for label, fn in fns.items():
            key, c = (overrides or {}).get(label, (None, None))
            if key is not None:
                OVERRIDES[key] = c
            try:
                times[label].append(time_fn(fn, warmup=5, rep=rep).median_ms)
            finally:
                if key is not None:
                    OVERRIDES.pop(key, None)
    return {label: statistics.median(v) for label, v in times.items()}, times


def dense_roofline(tokens: int, backward: bool):
    """The roofline call: two dense bf16 GEMMs with the layer's FLOPs at ``tokens`` (as
    ``bench_moe_layer_gpu.py`` times it), forward (no grad) or forward+backward."""
    a = torch.randn(tokens * K, D, device="cuda", dtype=torch.bfloat16)
    w1 = torch.randn(D, 2 * F, device="cuda", dtype=torch.bfloat16) * 0.02
    w2 = torch.randn(F, D, device="cuda", dtype=torch.bfloat16) * 0.02
    if not backward:

        def fwd():
            with torch.no_grad():
                return (a @ w1)[:, :F] @ w2

        return fwd
    a, w1, w2 = (t.requires_grad_() for t in (a, w1, w2))
    grad_out = torch.randn(tokens * K, D, device="cuda", dtype=torch.bfloat16)
    return lambda: torch.autograd.grad((a @ w1)[:, :F] @ w2, [a, w1, w2], grad_out)


def _print_layer(rows, tokens, mode, med, times, width, extra):
    """Append a row per layer timing (with ``extra[label]``'s fields) and print it with its
    ratio to the dense roofline."""
    for label, t in med.items():
        rows.append(dict(tokens=tokens, mode=mode, label=label, median_ms=t,
                         rounds=len(times[label]), **extra.get(label, {})))  # fmt: skip
        print(f"T={tokens:6d} layer {mode:8s} {label:{width}s} {t:8.3f} ms "
              f"({t / med['dense_roofline']:.3f}x dense) all {[round(v, 3) for v in times[label]]}",
              flush=True)  # fmt: skip


def persistent_probe(ours, tokens: int, rounds: int, pick: str) -> list[dict]:
    """Each GEMM kind of the layer (sorted operands, as the layer runs them) with each
    ``PERSISTENT`` candidate, timed interleaved over ``rounds`` passes next to cuBLAS on the
    same dense shape, and dh both ways (the GEMM's glu_bwd epilogue; a plain GEMM + the
    elementwise pass); then the layer (forward, forward+backward) with one program per tile
    everywhere, with the current defaults and with the per-kind picks (> 2% faster than the default), against
    grouped_mm and the dense roofline, interleaved too. The picks go to ``pick`` (JSON)."""
    from jetmoe_model.ops.expert_mlp import triton as mlp

    o = layer_operands(ours, tokens)
    gg, p, off, sp, bwd = kernels.gather_gemm_scatter, o["p"], o["off"], o["sp"], o["bwd"]
    w_in, w_out = o["w_in"], o["w_out"]
    dense = {k: torch.randn(*s, device="cuda", dtype=torch.bfloat16) * 0.02 for k, s in
             (("pd", (p, D)), ("d2f", (D, 2 * F)), ("pf", (p, F)), ("fd", (F, D)),
              ("df", (D, F)), ("p2f", (p, 2 * F)), ("2fd", (2 * F, D)))}  # fmt: skip
    d_act = gg(o["dy_s"], w_out, off, None, 1, None, p, **bwd)[0]
    calls = {  # kind: (override key, our call, cuBLAS on the dense shape of the same FLOPs, FLOPs)
        "glu": ("glu", lambda: gg(o["x_s"], w_in, off, None, 1, None, p, epilogue="glu",
                                  save_h=True), lambda: dense["pd"] @ dense["d2f"], 2 * p * D * 2 * F),
        "gemm": ("gemm", lambda: gg(o["act"], w_out, off, None, 1, sp, p),
                 lambda: dense["pf"] @ dense["fd"], 2 * p * F * D),
        "dh fused": ("glu_bwd", lambda: gg(o["dy_s"], w_out, off, None, 1, None, p,
                                           epilogue="glu_bwd", h=o["h"], **bwd),
                     lambda: dense["pd"] @ dense["df"], 2 * p * F * D),
        "dh split": ("gemm_t", lambda: mlp.swiglu_backward(
                         gg(o["dy_s"], w_out, off, None, 1, None, p, **bwd)[0], o["h"]),
                     lambda: dense["pd"] @ dense["df"], 2 * p * F * D),
        "swiglu bwd pass": ("none", lambda: mlp.swiglu_backward(d_act, o["h"]), None, 0),
        "gemm_t": ("gemm_t", lambda: gg(o["dh"], w_in, off, None, 1, sp, p, **bwd),
                   lambda: dense["p2f"] @ dense["2fd"], 2 * p * D * 2 * F),
        "xty dW_out": ("xty", lambda: kernels.grouped_xty(o["act"], o["dy_s"], off, None, 1,
                                                          None, w_out.shape, p),
                       lambda: dense["pd"].T @ dense["pf"], 2 * p * F * D),
        "xty dW_in": ("xty", lambda: kernels.grouped_xty(o["x_s"], o["dh"], off, None, 1, None,
                                                         w_in.shape, p),
                      lambda: dense["p2f"].T @ dense["pd"], 2 * p * D * 2 * F),
    }  # fmt: skip
    rows, picks = [], {}
    for kind, (key, fn, ref, flops) in calls.items():
        variants = {"none": {"default": {}}, "xty": XTY_PERSISTENT}.get(key, PERSISTENT)
        ok = compiled_candidates(fn, key, variants, f"T={tokens} {kind}")
        fns = {**({"cublas": ref} if ref else {}), **dict.fromkeys(ok, fn)}
        with torch.no_grad():
            med, times = interleaved(fns, rounds, rep=25,
                                     overrides={label: (key, c) for label, c in ok.items()})  # fmt: skip
        for label, t in med.items():
            tf = flops / (t * 1e-3) / 1e12 if flops else float("nan")
            rows.append(dict(bench="persistent_probe", kernel=kind, label=label, tokens=tokens,
                             median_ms=t, tflops=tf, rounds=rounds, **variants.get(label, {})))  # fmt: skip
            print(f"T={tokens:6d} {kind:15s} {label:24s} {t:8.3f} ms {tf:6.1f} TFLOP/s "
                  f"all {[round(v, 3) for v in times[label]]}", flush=True)  # fmt: skip
        if key == "xty":
            default = kernels._xty_config(p)
        else:
            default = kernels._gemm_config(
                p, {"glu": "glu", "glu_bwd": "glu_bwd"}.get(key, "plain"), key == "gemm_t"
            )
        same = [k for k in ok if all(default.get(opt, 0) == v for opt, v in ok[k].items())]
        if key != "none" and same:
            best = min(ok, key=lambda label: med[label])
            if med[best] < 0.98 * med[same[0]]:
                picks[key] = ok[best]
    print(f"picks: {picks}", flush=True)
    if pick:
        with open(pick, "w") as fh:
            json.dump(picks, fh)
    x = make_input(tokens, False).requires_grad_()
    g = torch.randn(1, tokens, D, device="cuda", dtype=torch.bfloat16)
    params = list(ours.parameters())
    split_default = kernel_options().dh_split_min_pairs

    def layer(mode, backend, overrides, split=split_default):
        def run():
            ours.input_linear.config.expert_backend = backend
            OVERRIDES.clear()
            OVERRIDES.update(overrides)
            set_kernel_options(kernel_options().replace(dh_split_min_pairs=split))
            if mode == "fwd":
                with torch.no_grad():
                    return ours(x)[0]
            return torch.autograd.grad(ours(x)[0], [x, *params], g)

        return run

    for mode in ("fwd", "fwd+bwd"):
        fns = {"dense_roofline": dense_roofline(tokens, mode == "fwd+bwd"),
               "grouped_mm": layer(mode, "grouped_mm", {}),
               "triton one program per tile": layer(mode, "triton", ONE_PROGRAM_PER_TILE, 1 << 40),
               "triton": layer(mode, "triton", {}),
               "triton picks": layer(mode, "triton", picks)}  # fmt: skip
        med, times = interleaved(fns, rounds, rep=40)
        OVERRIDES.clear()
        set_kernel_options(kernel_options().replace(dh_split_min_pairs=split_default))
        _print_layer(rows, tokens, mode, med, times, 16, {
            label: dict(bench="persistent_layer",
                        overrides=json.dumps(picks) if label == "triton picks" else "")
            for label in med})  # fmt: skip
    return rows


# GLU GEMM tile candidates for the inference forward (``--glu``), over the >4,096-pair defaults
GLU_FWD = {
    "default": {},
    "GROUP_M 16": {"GROUP_M": 16},
    "GROUP_M 4": {"GROUP_M": 4},
    "3 stages": {"num_stages": 3},
    "256x64 (x2) tiles, 3 stages": {"BLOCK_M": 256, "BLOCK_N": 64, "num_stages": 3},
    "256x64 (x2) tiles, 4 stages": {"BLOCK_M": 256, "BLOCK_N": 64, "num_stages": 4},
    "BLOCK_K 32, 6 stages": {"BLOCK_K": 32, "num_stages": 6},
    "one program per tile": {"PERSISTENT": 0},
}


def glu_probe(ours, tokens: int, rounds: int, pick: str = "") -> list[dict]:
    """The GLU GEMM without ``h`` (what the no-grad forward runs) for each ``GLU_FWD`` candidate,
    interleaved over ``rounds``; then the layer's no-grad forward with the fastest candidate
    against the defaults and the dense roofline, interleaved. A candidate > 2% faster in the
    layer goes to ``pick`` (JSON overrides for ``bench_moe_layer_gpu.py --overrides``)."""
    o = layer_operands(ours, tokens)
    gg, p, off = kernels.gather_gemm_scatter, o["p"], o["off"]
    fn = lambda: gg(o["x_s"], o["w_in"], off, None, 1, None, p, epilogue="glu")  # noqa: E731
    flops = 2 * p * D * 2 * F
    ok = compiled_candidates(fn, "glu", GLU_FWD, f"T={tokens} glu")
    with torch.no_grad():
        med, times = interleaved(dict.fromkeys(ok, fn), rounds, rep=25,
                                 overrides={label: ("glu", c) for label, c in ok.items()})  # fmt: skip
    rows = []
    for label, t in med.items():
        rows.append(dict(bench="glu_probe", kernel="glu", label=label, tokens=tokens, median_ms=t,
                         tflops=flops / (t * 1e-3) / 1e12, rounds=rounds, **GLU_FWD[label]))  # fmt: skip
        print(f"T={tokens:6d} glu (no h) {label:30s} {t:8.3f} ms all {[round(v, 3) for v in times[label]]}",
              flush=True)  # fmt: skip
    best = min(med, key=lambda label: med[label])
    x = make_input(tokens, False)
    ours.input_linear.config.expert_backend = "triton"
    layer = lambda: ours(x)[0]  # noqa: E731
    with torch.no_grad():
        lm, lt = interleaved({"dense_roofline": dense_roofline(tokens, False),
                              "triton default": layer, f"triton glu {best}": layer}, rounds,
                             rep=40, overrides={f"triton glu {best}": ("glu", ok[best])})  # fmt: skip
    _print_layer(rows, tokens, "fwd", lm, lt, 36, {label: dict(bench="glu_layer") for label in lm})
    if pick and best != "default" and lm[f"triton glu {best}"] < 0.98 * lm["triton default"]:
        with open(pick, "w") as fh:
            json.dump({"glu": ok[best]}, fh)
        print(f"picked glu: {best} -> {ok[best]}", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", default="1024,8192,32768")
    parser.add_argument("--out", default=str(results_dir(__file__) / "kernel_sweep.csv"))
    parser.add_argument("--sweep", default="fwd", choices=["fwd", "bwd", "kernels", "none"])
    parser.add_argument("--breakdown", action="store_true", help="also time each kernel alone")
    parser.add_argument("--profile", default="", help="host/GPU profile log path (at 1,024 tokens)")
    parser.add_argument(
        "--candidates", action="store_true", help="TMA / x-gather thresholds on and off"
    )
    parser.add_argument("--dh", action="store_true", help="dh GEMM candidates at 8,192 tokens")
    parser.add_argument("--pick", default="", help="write the picked dh overrides (JSON) here")
    parser.add_argument("--persistent", default="", help="token counts for the persistent probe")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved passes (--persistent)")
    parser.add_argument("--glu", default="", help="token counts for the GLU tile probe")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("tune_kernels: needs CUDA")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True
    ours, _, _ = make_layers(False)
    params = list(ours.parameters())
    warm = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(200):  # ~1 s of matmuls: clocks up before the first timing
        _ = warm @ warm
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

    if args.profile:
        with open(args.profile, "w") as log:
            write_csv(args.out, host_profile(ours, 1024, log))
    if args.dh:
        write_csv(args.out, dh_candidates(ours, 8192, args.pick))
    for tokens in [int(t) for t in args.glu.split(",") if t]:
        write_csv(args.out, glu_probe(ours, tokens, args.rounds, args.pick))
        torch.cuda.empty_cache()
    for tokens in [int(t) for t in args.persistent.split(",") if t]:
        pick = args.pick and args.pick.replace(".json", f"_{tokens}.json")
        write_csv(args.out, persistent_probe(ours, tokens, args.rounds, pick))
        torch.cuda.empty_cache()

    for tokens in [int(t) for t in args.tokens.split(",") if t]:
        rows: list[dict] = []
        x = make_input(tokens, False).requires_grad_()
        g = torch.randn(1, tokens, D, device="cuda", dtype=torch.bfloat16)
        measure(rows, tokens, "dense_roofline", "fwd", dense_roofline(tokens, False))
        for backend in ("grouped_mm", "triton"):
            ours.input_linear.config.expert_backend = backend
            measure(rows, tokens, f"{backend} default", "fwd", fwd(x))
            measure(rows, tokens, f"{backend} default", "fwd+bwd", fwd_bwd(x, g))
        set_kernel_options(kernel_options().replace(use_tma=False))
        measure(rows, tokens, "triton no-TMA", "fwd", fwd(x))
        measure(rows, tokens, "triton no-TMA", "fwd+bwd", fwd_bwd(x, g))
        set_kernel_options(kernel_options().replace(use_tma=True))
        if args.candidates:  # each threshold flipped against the defaults above
            for name, attr, value in (
                ("TMA at every size", "tma_min_pairs", 0),
                ("x gathered in the GEMM", "gather_x_min_pairs", 1 << 40),
                ("x gathered first", "gather_x_min_pairs", 0),
            ):
                old = getattr(kernel_options(), attr)
                if (tokens * K > value) == (tokens * K > old):
                    continue  # same behaviour as the default at this size
                set_kernel_options(kernel_options().replace(**{attr: value}))
                measure(rows, tokens, f"triton {name}", "fwd", fwd(x))
                measure(rows, tokens, f"triton {name}", "fwd+bwd", fwd_bwd(x, g))
                set_kernel_options(kernel_options().replace(**{attr: old}))
        if args.breakdown:
            rows += breakdown(ours, tokens)
            write_csv(args.out, rows)
            rows = []
        if args.sweep == "kernels":
            rows += kernel_sweep(ours, tokens)
        for key, configs, mode in SWEEPS.get(args.sweep, ()):
            for i, c in enumerate(configs):
                OVERRIDES[key] = c
                fn = fwd(x) if mode == "fwd" else fwd_bwd(x, g)
                measure(
                    rows, tokens, f"{key}{i}", mode, fn, kernel=key, config=i, sweep=args.sweep, **c
                )
            OVERRIDES.pop(key)
        write_csv(args.out, rows)  # per size: a timeout keeps what was measured
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
