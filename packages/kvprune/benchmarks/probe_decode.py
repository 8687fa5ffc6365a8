"""H100 probe of the decode kernel's fixed costs: merge shapes, PDL and split counts against
SDPA, interleaved, CUDA-graph timing (queued behind a GPU sleep, and not).

    python packages/kvprune/benchmarks/probe_decode.py [--rounds 7] [--out CSV]

Same inputs and protocol as ``bench_decode_gpu.py`` (L layers with distinct K/V buffers, more
bytes than the L2, captured back to back in one CUDA graph; time per layer call), but every
method's graph is captured first and the graphs are then replayed in rotating order, round after
round, so clock or thermal drift hits all methods alike; the value is the median over rounds of
each round's median replay. Diagnostics next to the kernels:

- ``pass1_only``: the default's first launch alone (the merge launch left out; wrong output):
  what a single launch could cost at best;
- ``empty_kernel``: L launches of an empty Triton kernel in the graph: the fixed cost of one
  graph node.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).parent))
from bench_decode_gpu import (
    Case,
    capture_graph,
    check_case,
    copy_bandwidth,
    layers_for,
    log,
    replay_ms,
)

from tensor_utils_dev.bench import write_csv

RESULTS = Path(__file__).parent / "results"

PRESETS = {
    # calls 3 and 5 (2026-11-27): the defaults against their neighbours
    "defaults": {
        "ours_half": {},  # the defaults (merge launched with PDL on Hopper)
        "tiles128_pps4": dict(block_n=128, num_stages=2, programs_per_sm=4),  # call 3's default
        "nopdl": dict(pdl=False),
        "mbd128": dict(merge_block_d=128),  # one merge program per query head (the old shape)
        "pass1_only": {},
    },
    # call 4: smaller tiles and more programs where the cache is small
    "tiles": {
        "ours_half": {},
        "bn64_st1": dict(block_n=64, num_stages=1),
        "bn64_st2": dict(block_n=64, num_stages=2),
        "bn64_st2_pps8": dict(block_n=64, num_stages=2, programs_per_sm=8),
        "bn64_st1_pps8": dict(block_n=64, num_stages=1, programs_per_sm=8),
        "bn32_st1_pps8": dict(block_n=32, num_stages=1, programs_per_sm=8),
        "bn32_st2_pps8": dict(block_n=32, num_stages=2, programs_per_sm=8),
        "bn64_st2_w2": dict(block_n=64, num_stages=2, num_warps=2),
        "pps2": dict(programs_per_sm=2),
        "pass1_only": {},
    },
}


@triton.jit
def _empty(x_ptr):
    pass


class _NoLaunch:
    def __getitem__(self, grid):
        return lambda *a, **k: None


def make_fns(case, method, kernels):
    from kvprune.ops.ragged_decode import triton as tm

    if method.startswith("sdpa"):
        return case.fns(method, None, {})
    if method == "empty_kernel":
        x = torch.empty(1, device="cuda")
        return [lambda: _empty[(1,)](x) for _ in range(case.layers)]
    kw = kernels[method]

    def ragged(*a, **k):
        if method != "pass1_only":
            return tm.ragged_decode_attention(*a, **k)
        saved, tm._merge_kernel = tm._merge_kernel, _NoLaunch()
        try:
            return tm.ragged_decode_attention(*a, **k)
        finally:
            tm._merge_kernel = saved

    if method != "pass1_only":  # correctness first, on layer 0
        errors = check_case(case, ragged, kw)
        if not max(errors) < 1e-2:
            raise RuntimeError(f"{method}: relative errors {errors}")
    return case.fns("ours_half", ragged, kw)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "decode_probe_h100.csv"))
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--preset", default="defaults", choices=sorted(PRESETS))
    args = parser.parse_args(argv)
    kernels = PRESETS[args.preset]
    if not torch.cuda.is_available():
        log("probe_decode: needs a CUDA device")
        return 0
    bw = copy_bandwidth("cuda", False)
    log(f"{torch.cuda.get_device_name()}: copy {bw / 1e12:.3f} TB/s")
    methods = ["sdpa_full", "sdpa_half", *kernels, "empty_kernel"]
    for b in (int(x) for x in args.batches.split(",")):
        for n in (4096, 8192, 16384, 32768):
            layers = layers_for(b, n, False)
            case = Case(b, n, torch.float16, "cuda", layers, False)
            graphs = {}
            for m in methods:
                try:
                    graphs[m] = capture_graph(make_fns(case, m, kernels))
                except Exception as exc:  # keep the other methods
                    log(f"B={b} n={n} {m}: FAILED {type(exc).__name__}: {exc}"[:300])
            per_round = {(m, q): [] for m in graphs for q in (True, False)}
            order = list(graphs)
            for r in range(args.rounds):
                for m in order[r % len(order) :] + order[: r % len(order)]:
                    for q in (True, False):
                        per_round[m, q].append(replay_ms(graphs[m], args.reps, q) / layers)
            rows = []
            for queued in (True, False):
                us = {m: statistics.median(per_round[m, queued]) * 1e3 for m in graphs}
                for m, t in us.items():
                    kept = 1.0 if m == "sdpa_full" else (0.5 if m == "sdpa_half" else case.kept)
                    rows.append(
                        dict(
                            bench="decode_probe",
                            method=m,
                            config=" ".join(f"{k}={v}" for k, v in kernels.get(m, {}).items()),
                            mode="graph_queued" if queued else "graph",
                            batch=b,
                            context=n,
                            dtype="float16",
                            layers=layers,
                            kept_fraction=round(kept, 4),
                            us=round(t, 3),
                            speedup_vs_sdpa_full=round(us["sdpa_full"] / t, 4)
                            if "sdpa_full" in us
                            else "",
                            floor_us=round(case.bytes("ours_half") / bw * 1e6, 3),
                            rounds=args.rounds,
                        )
                    )
                log(
                    f"B={b} n={n} L={layers} {'queued' if queued else 'graph '}: "
                    + " ".join(
                        f"{m}={t:.1f}us"
                        + (f"({us['sdpa_full'] / t:.2f}x)" if "sdpa_full" in us else "")
                        for m, t in us.items()
                    )
                )
            write_csv(args.out, rows)
            del graphs, case
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
