"""MoE-MLP layer at JetMoE-8B shapes (d 2048, D_ffn 5632 SwiGLU, 8 experts, top-2, bf16):
forward and forward+backward time of the whole layer (router, sort, experts, combine) for the
loop, torch._grouped_mm, our Triton kernels, transformers' JetMoeMoE and (when importable)
ScatterMoE's GLUMLP with the same weights and router, against a dense GEMM pair with the same
FLOPs (the roofline). Forward runs under ``torch.no_grad()`` (inference), forward+backward with
autograd. At <= 16 tokens the sync-free backends are also timed as a CUDA-graph replay
(``fwd_graph``: the loop and transformers read the routing on the host and cannot be captured).
Routing uniform (random router) or skewed (a shared input direction that the router favours).
``max_err`` = max |out - loop out| of the forward (bf16). ``host_ms`` (up to 4,096 tokens) = host
time per call enqueuing 20 calls back to back without a sync, in this process right after the
timing (a row whose ``host_ms`` reaches ``median_ms`` is host-bound). ``--overrides FILE``: Triton
config overrides (JSON, ``{kind: {key: value}}``, e.g. picked by ``tune_kernels.py --pick``),
recorded in the triton rows. CSV: benchmarks/results/moe_layer.csv. Needs CUDA; the page's runs:

    python tools/run_gpu.py jetmoe-model --bench bench_moe_layer_gpu.py        # every backend
    python tools/run_gpu.py jetmoe-model --bench bench_moe_layer_gpu.py -- --rounds 7 \
        --tokens 1024,8192,32768 --impls grouped_mm,triton,dense_roofline \
        --out build/gpu/moe_layer_interleaved.csv                               # interleaved
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from jetmoe_model import JetMoEConfig
from jetmoe_model.modeling import JetMoEMoE

from tensor_utils_dev.bench import PeakMemory, results_dir, time_fn, write_csv

D, F, E, K = 2048, 5632, 8, 2
FLOP_PER_PAIR = 2 * (D * 2 * F + F * D)  # forward, per (token, expert) pair


def make_layers(skew: bool):
    cfg = JetMoEConfig(
        hidden_size=D, intermediate_size=F, num_local_experts=E, num_experts_per_tok=K
    )
    torch.manual_seed(0)
    ours = JetMoEMoE(cfg)
    with torch.no_grad():
        ours.input_linear.weight.normal_(0, 0.02)
        ours.output_linear.weight.normal_(0, 0.02)
        ours.bias.zero_()
        ours.router.layer.weight.normal_(0, 0.02)
        if skew:  # favour experts 0, 1, ... along a shared input direction
            u = torch.ones(D) / D**0.5
            ours.router.layer.weight += torch.linspace(1.5, 0.0, E)[:, None] * u[None, :]
    ours = ours.cuda().bfloat16()
    from transformers import JetMoeConfig
    from transformers.models.jetmoe.modeling_jetmoe import JetMoeMoE

    theirs = JetMoeMoE(
        JetMoeConfig(
            hidden_size=D,
            intermediate_size=F,
            num_local_experts=E,
            num_experts_per_tok=K,
        )
    )
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs.cuda().bfloat16(), make_scattermoe(ours)


def make_scattermoe(ours):
    """ScatterMoE's GLUMLP with our weights, or None when scattermoe is not importable.
    ScatterMoE applies the activation to the *second* half of W_in's output: swap the halves."""
    try:
        from scattermoe.mlp import GLUMLP  # pyright: ignore[reportMissingImports]  (optional peer)
    except ImportError:
        return None
    mlp = GLUMLP(D, F, E, K).cuda().bfloat16()
    with torch.no_grad():
        w_in = ours.input_linear.weight
        mlp.experts.weight.copy_(torch.cat([w_in[:, F:], w_in[:, :F]], dim=1))
        mlp.output_experts.weight.copy_(ours.output_linear.weight)

    def layer(x):
        flat = x.view(-1, D)
        logits = ours.router.layer(flat).float()
        top, idx = logits.topk(K, dim=-1)
        gates = torch.softmax(top, dim=-1).to(flat.dtype)
        return (mlp(flat, gates, idx) + ours.bias).view(x.shape)

    layer.params = [*mlp.parameters(), ours.bias, ours.router.layer.weight]
    return layer


def graph_replay(fn):
    """Capture ``fn`` (already warm) in a CUDA graph; return the replay callable."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def host_ms(fn, calls: int = 20) -> float:
    """Host time per call of ``calls`` back-to-back calls (no sync in between), ms."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / calls * 1e3


def make_input(tokens: int, skew: bool):
    gen = torch.Generator(device="cuda").manual_seed(tokens)
    x = torch.randn(1, tokens, D, device="cuda", generator=gen)
    if skew:  # unit shift along the router's favoured direction
        x += torch.ones(D, device="cuda") / D**0.5
    return x.bfloat16()


def bench_size(ours, theirs, smoe, tokens: int, skew: bool, rep: int, overrides: str = "",
               rounds: int = 1, only: tuple[str, ...] = ()) -> list[dict]:  # fmt: skip
    """Every backend x mode at one size. ``rounds`` > 1: the backends are timed interleaved,
    ``rounds`` passes over all of them, and each row reports the median of its per-pass medians
    (p20/p80 over the passes), so drift of the machine during the run hits every backend alike."""
    x = make_input(tokens, skew)
    x_req = x.clone().requires_grad_()
    with torch.no_grad():
        counts = ours.router(x.view(-1, D)).routing.expert_counts().float()
        top_share = (counts.max() / counts.sum()).item()
    g = torch.randn(1, tokens, D, device="cuda", dtype=torch.bfloat16)
    ga = torch.randn(tokens * K, D, device="cuda", dtype=torch.bfloat16)
    a = torch.randn(tokens * K, D, device="cuda", dtype=torch.bfloat16)
    w1 = torch.randn(D, 2 * F, device="cuda", dtype=torch.bfloat16) * 0.02
    w2 = torch.randn(F, D, device="cuda", dtype=torch.bfloat16) * 0.02
    ours_params, their_params = list(ours.parameters()), list(theirs.parameters())

    def no_grad(fn):
        def run():
            with torch.no_grad():
                return fn()

        return run

    def ours_fn(backend, backward):
        def call(inp):  # the backend is set per call: interleaved rounds alternate backends
            ours.input_linear.config.expert_backend = backend
            return ours(inp)[0]

        if not backward:
            return no_grad(lambda: call(x))
        return lambda: torch.autograd.grad(call(x_req), [x_req, *ours_params], g)

    def theirs_call(inp):
        out = theirs(inp)
        return out[0] if isinstance(out, tuple) else out  # older releases also return logits

    def theirs_fn(backward):
        if not backward:
            return no_grad(lambda: theirs_call(x))
        return lambda: torch.autograd.grad(theirs_call(x_req), [x_req, *their_params], g)

    def smoe_fn(backward):
        if not backward:
            return no_grad(lambda: smoe(x))
        return lambda: torch.autograd.grad(smoe(x_req), [x_req, *smoe.params], g)

    def dense_fn(backward):
        a_, w1_, w2_ = (t.detach().requires_grad_(backward) for t in (a, w1, w2))
        if not backward:
            return no_grad(lambda: (a_ @ w1_)[:, :F] @ w2_)
        return lambda: torch.autograd.grad((a_ @ w1_)[:, :F] @ w2_, [a_, w1_, w2_], ga)

    impls = {
        "loop": lambda b: ours_fn("reference", b),
        "grouped_mm": lambda b: ours_fn("grouped_mm", b),
        "triton": lambda b: ours_fn("triton", b),
        "transformers": theirs_fn,
        "dense_roofline": dense_fn,
    }
    if smoe is not None:
        impls["scattermoe"] = smoe_fn
    if only:
        impls = {name: make for name, make in impls.items() if name in only}
    modes = ["fwd", "fwd+bwd"] + (["fwd_graph"] if tokens <= 16 else [])
    graphable = ("grouped_mm", "triton", "dense_roofline")
    reference_out = None
    cases = {}  # (name, mode) -> (fn, err, peak increase bytes, host ms)
    for name, make in impls.items():
        for mode in modes:
            if mode == "fwd_graph" and name not in graphable:
                continue
            fn = make(mode == "fwd+bwd")
            err = float("nan")
            try:
                out = fn()
                if mode == "fwd" and name != "dense_roofline":
                    if reference_out is None:
                        reference_out = out.float()
                    err = (out.float() - reference_out).abs().max().item()
                if mode == "fwd_graph":
                    fn = graph_replay(fn)
                with PeakMemory() as mem:
                    fn()
                host = host_ms(fn) if tokens <= 4096 and mode != "fwd_graph" else float("nan")
            except torch.OutOfMemoryError:
                print(f"{name} {tokens} {mode}: out of memory")
                continue
            except Exception as exc:  # a peer failing (e.g. ScatterMoE on this Triton) is a row
                print(f"{name} {tokens} {mode}: failed: {type(exc).__name__}: {exc}"[:300])
                continue
            cases[name, mode] = (fn, err, mem.cuda_increase_bytes, host)
    timings = {case: [] for case in cases}
    for _ in range(rounds):
        for case, (fn, *_) in cases.items():
            timings[case].append(time_fn(fn, warmup=10, rep=rep))
    rows = []
    for (name, mode), (_fn, err, peak, host) in cases.items():
        ts = timings[name, mode]
        if rounds == 1:
            median, p20, p80 = ts[0].median_ms, ts[0].p20_ms, ts[0].p80_ms
        else:
            meds = sorted(t.median_ms for t in ts)
            median = meds[len(meds) // 2]
            p20, p80 = meds[len(meds) // 5], meds[(4 * len(meds)) // 5]
        flops = FLOP_PER_PAIR * tokens * K * (3 if mode == "fwd+bwd" else 1)
        row = dict(
            bench="moe_layer", impl=name, mode=mode, tokens=tokens,
            routing="skewed" if skew else "uniform", top_expert_share=round(top_share, 4),
            median_ms=median, p20_ms=p20, p80_ms=p80,
            tflops=flops / (median * 1e-3) / 1e12,
            peak_increase_mb=peak / 2**20, max_err=err, host_ms=host,
            overrides=overrides if name == "triton" else "", rounds=rounds,
        )  # fmt: skip
        rows.append(row)
        print(
            f"{row['routing']:7s} T={tokens:6d} {name:14s} {mode:9s} "
            f"{median:8.3f} ms {row['tflops']:6.1f} TFLOP/s  err {err:.3g}  "
            f"host {host:.3f} ms"
            + (f"  rounds {rounds} p20-p80 {p20:.3f}-{p80:.3f}" if rounds > 1 else ""),
            flush=True,
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", default="1,16,256,1024,4096,8192,32768")
    parser.add_argument("--out", default=str(results_dir(__file__) / "moe_layer.csv"))
    parser.add_argument("--rep", type=int, default=40)
    parser.add_argument("--routings", default="uniform,skewed")
    parser.add_argument("--overrides", default="", help="JSON file of Triton config overrides")
    parser.add_argument("--rounds", type=int, default=1, help="> 1: time the backends interleaved")
    parser.add_argument("--impls", default="", help="comma-separated subset of the backends")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_moe_layer_gpu: needs CUDA (H100 numbers); nothing measured")
        return 0
    overrides = ""
    if args.overrides and os.path.exists(args.overrides):
        from jetmoe_model.ops.options import kernel_options, set_kernel_options

        with open(args.overrides) as fh:
            picked = json.load(fh)
        table = {**kernel_options().config_overrides, **picked}
        set_kernel_options(kernel_options().replace(config_overrides=table))
        overrides = json.dumps(picked, sort_keys=True)
        print(f"Triton config overrides: {overrides}")
    torch.backends.cuda.matmul.allow_tf32 = True
    rows = []
    sizes = [int(t) for t in args.tokens.split(",")]
    for routing in args.routings.split(","):
        skew = routing == "skewed"
        ours, theirs, smoe = make_layers(skew)
        for tokens in sizes:
            only = tuple(name for name in args.impls.split(",") if name)
            size_rows = bench_size(
                ours, theirs, smoe, tokens, skew, args.rep, overrides, args.rounds, only
            )
            write_csv(args.out, size_rows)  # progressively: a timeout keeps what was measured
            rows += size_rows
            torch.cuda.empty_cache()
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
