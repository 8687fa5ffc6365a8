"""H100 benchmark: decode attention over the compressed ragged cache vs full-cache SDPA, and the
GPU memory a compressed cache really frees, at Llama-3-8B shapes with synthetic weights.

    python packages/kvprune/benchmarks/bench_decode_gpu.py [--sweep] [--only kernel,memory]
    python packages/kvprune/benchmarks/bench_decode_gpu.py --smoke   # CPU (TRITON_INTERPRET=1)

(0) Physical limit: device-to-device copy bandwidth (bytes read + written), so every case gets
a floor = bytes it must read / bandwidth.

(1) Kernel timing, per batch in {1, 4} and context n in 4k..32k, fp16 (bf16 on two sizes):
``sdpa_full`` = ``F.scaled_dot_product_attention`` of one query token over K/V
``[B, 8, n, 128]`` with ``enable_gqa`` (transformers' SDPA decode path); ``sdpa_half`` = the
same over n/2 (what a uniform per-head compression would run); ``ours_full`` = the ragged
kernel with every head keeping n rows (kernel parity); ``ours_half`` = the ragged kernel with
its defaults (``default_tiles``; the merge launched with programmatic dependent launch on
Hopper) over a pool where each KV head keeps its own 25..75% of n (mean 50%), no per-key
weights (the target); ``ours_half_nopdl`` = the same with two plain launches;
``ours_half_mbd128`` = the merge with one program per query head (the shape before
2026-11-27; the default gives each 32 columns); ``ours_half_w`` = the default returning
per-key weights (heavy-hitter policies). Every method is timed four ways, all on the same
inputs:
  - ``graph_queued``: L layers (distinct K/V buffers, more bytes than the 50 MB L2) called
    back to back inside one captured CUDA graph, replayed behind a GPU sleep so the events
    time only GPU execution; time per layer (how a decode step inside a serving engine's
    graph runs: no launch overhead, no host latency);
  - ``graph``: the same replay without the sleep (the earlier runs' mode): the time from the
    start event also holds the host's submission of the graph, spread over the L calls;
  - ``eager_loop``: the same L calls from a Python loop, CUDA events around the loop; time per
    layer (includes the Python/launch cost when it exceeds the GPU time);
  - ``do_bench``: ``tensor_utils_dev.bench.time_fn`` of one call (L2 flushed before each call; the
    flush hides the host launch cost), as the first session measured.
Target: ``ours_half`` at least 1.6x faster than ``sdpa_full``.

``--sweep`` first times kernel variants (``SWEEP``: PDL or not, BLOCK_N, num_stages, programs
per SM) in graph and eager-loop mode on all ten sizes.

(2) Memory, per context: a 4-layer model with Llama-3-8B layer shapes (random fp16 weights)
prefilled with n tokens then decoding 16 tokens, once with a DynamicCache and once with
``KVPruneCache(StreamingLLM(0.5))``: ``memory_allocated`` after the prompt and the peak while
decoding, next to the bytes the report says were freed, plus the eager time per decode step.
Before it, the first cuBLAS call of the process is measured on its own: it allocates a cuBLAS
workspace through PyTorch's allocator, which the first session's 4k row had counted as cache.

Rows go to ``results/decode_gpu.csv`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tensor_utils_dev.bench import PeakMemory, time_fn, write_csv

RESULTS = Path(__file__).parent / "results"
LLAMA3_8B = dict(hidden=4096, heads=32, kv_heads=8, head_dim=128, intermediate=14336)
L2_BYTES = 50 * 2**20


def log(msg: str) -> None:
    print(msg, flush=True)


def ragged_pool(b, h, n, d, dtype, device, lo=0.25, hi=0.75, seed=0):
    """A pool where KV head (b, h) keeps a fraction in [lo, hi] of n rows (evenly spread)."""
    gen = torch.Generator().manual_seed(seed)
    fr = torch.linspace(lo, hi, b * h)[torch.randperm(b * h, generator=gen)]
    lengths = (fr * n).round().long().clamp(min=1)
    offsets = lengths.cumsum(0) - lengths
    rows = int(lengths.sum())
    k = torch.randn(rows, d, dtype=dtype, device=device)
    v = torch.randn(rows, d, dtype=dtype, device=device)
    return k, v, offsets.to(device), lengths.to(device=device, dtype=torch.int32)


def capture_graph(fns):
    """The calls of ``fns`` captured back to back in one CUDA graph (warmed up, replayed once)."""
    for f in fns:  # compile / warm up
        f()
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for f in fns:
            f()
    graph.replay()
    torch.cuda.synchronize()
    return graph


QUEUE_SLEEP_CYCLES = 2_000_000  # about 1 ms of GPU sleep: longer than submitting any graph here


def replay_ms(graph, reps, queued=False):
    """Median ms of one replay between CUDA events. ``queued``: a sleep kernel keeps the GPU busy
    while the replay is submitted, so the events time only the graph's GPU execution. Without it
    the GPU idles between the start event and the first kernel while the CPU submits the graph
    (the ``graph`` mode of the earlier runs: that latency, about 10-20 us, is spread over the L
    calls, so it weighs most where L is small)."""
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        if queued:
            torch.cuda._sleep(QUEUE_SLEEP_CYCLES)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


GRAPH_MODES = {"graph_queued": True, "graph": False}  # mode -> replay queued behind a sleep


def graph_times(fns, reps, device, modes) -> dict[str, float]:
    """Per-call ms of ``fns`` run back to back inside one captured CUDA graph, for each graph
    mode in ``modes`` (one capture, replayed each way; CPU: a timed loop)."""
    wanted = [m for m in GRAPH_MODES if m in modes]
    if not wanted:
        return {}
    if device != "cuda":
        for f in fns:
            f()
        t0 = time.perf_counter()
        for f in fns:
            f()
        ms = (time.perf_counter() - t0) * 1e3 / len(fns)
        return dict.fromkeys(wanted, ms)
    graph = capture_graph(fns)
    times = {m: replay_ms(graph, reps, GRAPH_MODES[m]) / len(fns) for m in wanted}
    del graph
    return times


def loop_ms(fns, reps, device):
    """Per-call ms of the same calls from a Python loop (events around the loop)."""
    for f in fns:
        f()
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for f in fns:
                f()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            for f in fns:
                f()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times) / len(fns)


def copy_bandwidth(device, smoke):
    """Bytes moved (read + written) per second by a large device-to-device copy."""
    n = (1 << 20) if smoke else (1 << 30)
    src = torch.empty(n, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), device=device, **({"warmup": 1, "rep": 3} if smoke else {}))
    return 2 * n / (t.median_ms * 1e-3)


METHOD_KW = {  # kernel options per method name (the bare names use the defaults)
    "ours_half_nopdl": dict(pdl=False),  # two plain launches
    "ours_half_mbd128": dict(merge_block_d=128),  # one merge program per query head
}


class Case:
    """Inputs of one (batch, context, dtype) size: L layers of full and compressed caches."""

    def __init__(self, b, n, dtype, device, layers, smoke):
        s = dict(heads=4, kv_heads=2, head_dim=16) if smoke else LLAMA3_8B
        self.b, self.n, self.dtype = b, n, dtype
        self.h, self.hq, self.d = s["kv_heads"], s["heads"], s["head_dim"]
        h, hq, d = self.h, self.hq, self.d
        self.layers = layers
        self.q = [torch.randn(b, hq, 1, d, dtype=dtype, device=device) for _ in range(layers)]
        self.qr = [q.view(b, h, hq // h, d).reshape(b * h, hq // h, d).contiguous() for q in self.q]
        self.full = [
            (
                torch.randn(b, h, n, d, dtype=dtype, device=device),
                torch.randn(b, h, n, d, dtype=dtype, device=device),
            )
            for _ in range(layers)
        ]
        self.half_dense = [(k[:, :, : n // 2], v[:, :, : n // 2]) for k, v in self.full]
        self.half = [ragged_pool(b, h, n, d, dtype, device, seed=i) for i in range(layers)]
        # the full cache as one ragged pool per layer (every head keeps n rows)
        self.full_pool = []
        for k, v in self.full:
            lens = torch.full((b * h,), n, dtype=torch.int32, device=device)
            off = torch.arange(b * h, device=device, dtype=torch.int64) * n
            self.full_pool.append((k.reshape(-1, d), v.reshape(-1, d), off, lens))
        self.kept = sum(int(x[3].sum()) for x in self.half) / (layers * b * h * n)
        self.scale = d**-0.5

    def bytes(self, method, i=0):
        e = torch.finfo(self.dtype).bits // 8
        if method in ("sdpa_full", "ours_full"):
            rows = self.b * self.h * self.n
        elif method == "sdpa_half":
            rows = self.b * self.h * (self.n // 2)
        else:
            rows = int(self.half[i][3].sum())
        extra = rows * (self.hq // self.h) * 4 * 3 if method == "ours_half_w" else 0
        return 2 * rows * self.d * e + extra

    def fns(self, method, ragged, kernel_kw):
        out = []
        for i in range(self.layers):
            if method == "sdpa_full":
                k, v = self.full[i]
                out.append(
                    lambda q=self.q[i], k=k, v=v: F.scaled_dot_product_attention(
                        q, k, v, enable_gqa=True
                    )
                )
            elif method == "sdpa_half":
                k, v = self.half_dense[i]
                out.append(
                    lambda q=self.q[i], k=k, v=v: F.scaled_dot_product_attention(
                        q, k, v, enable_gqa=True
                    )
                )
            else:
                full = method.startswith("ours_full")
                k, v, off, lens = self.full_pool[i] if full else self.half[i]
                max_len = self.n
                kw = {**METHOD_KW.get(method, {}), **kernel_kw}

                def call(q=self.qr[i], k=k, v=v, off=off, lens=lens, max_len=max_len, kw=kw):
                    return ragged(
                        q,
                        k,
                        v,
                        off,
                        lens,
                        self.scale,
                        max_len,
                        method == "ours_half_w",
                        **kw,
                    )

                out.append(call)
        return out


def check_case(case, ragged, kernel_kw):
    """Relative error of the kernel (fp16 inputs) against the float32 reference."""
    from kvprune.ops.ragged_decode import naive

    k, v, off, lens = case.half[0]
    out, w = ragged(case.qr[0], k, v, off, lens, case.scale, case.n, True, **kernel_kw)
    ref, ref_w = naive.ragged_decode_attention(
        case.qr[0].float(), k.float(), v.float(), off, lens, case.scale
    )
    err = float((out.float() - ref).norm() / ref.norm())
    fast, _ = ragged(case.qr[0], k, v, off, lens, case.scale, case.n, False, **kernel_kw)
    err = max(err, float((fast.float() - ref).norm() / ref.norm()))
    assert w is not None and ref_w is not None  # both asked for the weights
    werr = float((w - ref_w).norm() / ref_w.norm())
    full_k, full_v = case.full[0]
    sd = F.scaled_dot_product_attention(case.q[0], full_k, full_v, enable_gqa=True)
    kf, vf, offf, lensf = case.full_pool[0]
    of, _ = ragged(case.qr[0], kf, vf, offf, lensf, case.scale, case.n, False, **kernel_kw)
    serr = float(
        (of.float().reshape(sd.shape) - sd.float()).norm() / sd.float().norm().clamp(min=1e-9)
    )
    return err, werr, serr


def layers_for(b, n, smoke):
    if smoke:
        return 2
    per_layer = 2 * b * 8 * n * 128 * 2
    return max(2, min(32, math.ceil(12 * L2_BYTES / per_layer)))


def bench_kernel(
    sizes,
    device,
    smoke,
    bw,
    configs,
    methods,
    reps,
    modes,
    check=True,
    on_size=None,
    label="decode_attention",
):
    """Time ``methods`` on every size; kernel methods once per launch config in ``configs``.
    ``on_size(rows)`` is called after each size (progressive CSV). A method that fails (e.g. a
    compile error) is logged and skipped so the other rows still get measured."""
    from kvprune.ops.ragged_decode import ragged_decode_attention

    def ragged(*a, **kw):
        return ragged_decode_attention(*a, **kw, backend="triton")

    rows = []
    for b, n, dtype in sizes:
        layers = layers_for(b, n, smoke)
        case = Case(b, n, dtype, device, layers, smoke)
        if check:
            err, werr, serr = check_case(case, ragged, configs[0])
            log(
                f"B={b} n={n} {str(dtype)[6:]} L={layers} kept {case.kept:.3f}: rel err out "
                f"{err:.2e} weights {werr:.2e}, ours_full vs sdpa {serr:.2e}"
            )
        else:
            err = ""
        base = {}  # the sdpa timings of this size, shown next to every config
        for kernel_kw in configs:
            res = dict(base)
            for method in methods:
                if method.startswith("sdpa") and kernel_kw is not configs[0]:
                    continue
                fns = case.fns(method, ragged, kernel_kw)
                times = {}
                try:
                    times.update(graph_times(fns, reps, device, modes))
                    if "eager_loop" in modes:
                        times["eager_loop"] = loop_ms(fns, reps, device)
                    if "do_bench" in modes:
                        quick = {"warmup": 1, "rep": 3} if smoke else {}
                        times["do_bench"] = time_fn(fns[0], device=device, **quick).median_ms
                except Exception as exc:  # keep measuring the other methods
                    log(f"  {method} {kernel_kw}: FAILED {type(exc).__name__}: {exc}"[:400])
                    continue
                floor_ms = case.bytes(method) / bw * 1e3
                res[method] = times
                if method.startswith("sdpa"):
                    base[method] = times
                for mode, ms in times.items():
                    rows.append(
                        dict(
                            bench=label,
                            method=method,
                            mode=mode,
                            batch=b,
                            context=n,
                            dtype=str(dtype)[6:],
                            layers=layers,
                            kept_fraction=1.0
                            if method in ("sdpa_full", "ours_full")
                            else (0.5 if method == "sdpa_half" else round(case.kept, 4)),
                            ms=ms,
                            floor_ms=floor_ms,
                            rel_err=err if method.startswith("ours_half") else "",
                            config=" ".join(f"{k}={v}" for k, v in kernel_kw.items()),
                        )
                    )
                del fns
            best = [m for m in res if m.startswith("ours_half") and m != "ours_half_w"]
            line = " | ".join(
                f"{mode}: "
                + " ".join(f"{m}={res[m][mode] * 1e3:.1f}us" for m in res if mode in res[m])
                + (
                    " -> speedup "
                    + " ".join(f"{m}:{res['sdpa_full'][mode] / res[m][mode]:.2f}x" for m in best)
                    if "sdpa_full" in res
                    else ""
                )
                for mode in modes
            )
            log(f"  B={b} n={n} {kernel_kw or 'default'}: {line}")
            if on_size is not None:
                on_size(rows)
        del case
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


SWEEP = [  # kernel variants for ours_half (graph + eager); the first entry is the default
    dict(),
    dict(pdl=False),
    dict(num_stages=1),
    dict(block_n=64, num_warps=4, num_stages=1),
    dict(block_n=64, num_warps=4, num_stages=2),
    dict(programs_per_sm=2),
    dict(programs_per_sm=8),
]


def all_sizes(smoke):
    if smoke:
        return [(1, 256, torch.float32), (2, 512, torch.float16)]
    f16, b16 = torch.float16, torch.bfloat16
    # the missed sizes first: a cut-short run still has them
    sizes = [(1, n, f16) for n in (4096, 8192, 16384, 32768)] + [(4, 4096, f16)]
    sizes += [(4, n, f16) for n in (8192, 16384, 32768)]
    return [*sizes, (1, 32768, b16), (4, 4096, b16)]


def sweep(device, smoke, bw, on_size=None):
    configs = [dict(c) for c in (SWEEP[:4] if smoke else SWEEP)]
    if smoke:
        for c in configs:
            c.pop("num_warps", None)
            c.pop("num_stages", None)
    rows = bench_kernel(
        all_sizes(smoke),
        device,
        smoke,
        bw,
        configs,
        ["sdpa_full", "sdpa_half", "ours_half"],
        3 if smoke else 10,
        ["graph", "eager_loop"],
        check=True,
        on_size=on_size,
        label="sweep",
    )
    return rows


def synthetic_model(device, layers, smoke):
    from transformers import LlamaConfig, LlamaForCausalLM

    s = LLAMA3_8B
    if smoke:
        s = dict(hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128)
    config = LlamaConfig(
        vocab_size=1024,
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=layers,
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        head_dim=s["head_dim"],
        max_position_embeddings=40000,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
    )
    dtype = torch.float16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: seconds instead of a CPU minute
        model = LlamaForCausalLM(config)
    # transformers wraps Module.to with functools.wraps: pyright reads an unbound signature
    return model.to(dtype=dtype).eval()  # pyright: ignore[reportCallIssue]


def cublas_workspace(device) -> dict:
    """What the first cuBLAS call of the process allocates through PyTorch's allocator."""
    if device != "cuda":
        return {}
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()
    a = torch.randn(64, 64, dtype=torch.float16, device=device)
    mid = torch.cuda.memory_allocated()
    _ = a @ a
    torch.cuda.synchronize()
    del _
    after = torch.cuda.memory_allocated()
    stats = torch.cuda.memory_stats()
    info = dict(
        allocated_before_mm=mid,
        allocated_after_mm=after,
        workspace_bytes=after - mid,
        alloc_count_delta=stats["allocation.all.allocated"] - before["allocation.all.allocated"],
    )
    log(
        f"first cuBLAS matmul: memory_allocated {mid} -> {after} bytes "
        f"(+{(after - mid) / 2**20:.2f} MiB held after the 64x64 product is freed)"
    )
    return info


def bench_memory(contexts, device, smoke, layers=4, new_tokens=16):
    from kvprune import KVPruneCache, StreamingLLM
    from kvprune.generate import cache_kwarg
    from transformers import DynamicCache

    ws = cublas_workspace(device)
    model = synthetic_model(device, layers, smoke)
    kw = cache_kwarg(model)
    rows = []
    if ws:
        rows.append(dict(bench="cublas_workspace", **ws))
    with torch.no_grad():  # warm-up: every lazily allocated workspace exists before we measure
        model(torch.randint(3, 1024, (1, 64), device=device))
    for n in contexts:
        ids = torch.randint(3, 1024, (1, n), device=device)
        results = {}
        for name in ("dynamic", "kvprune_streaming_0.5"):
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.synchronize()
            before = torch.cuda.memory_allocated() if device == "cuda" else 0
            if name == "dynamic":
                cache = DynamicCache(config=model.config)
            else:
                cache = KVPruneCache(model, StreamingLLM(kept_fraction=0.5), backend=None)
            with torch.no_grad():
                out = model(ids, **{kw: cache})
                tok = out.logits[:, -1:].argmax(-1)
                del out
                resident = (torch.cuda.memory_allocated() - before) if device == "cuda" else 0
                step_times = []
                with PeakMemory(cuda=device == "cuda") as peak:
                    for _ in range(new_tokens):
                        if device == "cuda":
                            torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        out = model(tok, **{kw: cache})
                        tok = out.logits[:, -1:].argmax(-1)
                        if device == "cuda":
                            torch.cuda.synchronize()
                        step_times.append((time.perf_counter() - t0) * 1e3)
                        del out
            if isinstance(cache, DynamicCache):
                cache_bytes = sum(
                    t.nbytes
                    for layer in cache.layers
                    for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
                    if t is not None
                )
                freed = 0
            else:
                mem = cache.memory()  # kv_live is part of kv_allocated: not added twice
                cache_bytes = mem["kv_allocated"] + mem["metadata"]
                freed = cache.report().freed_bytes
            step_ms = statistics.median(step_times[2:]) if len(step_times) > 2 else 0.0
            results[name] = (resident, peak.cuda_bytes - before if device == "cuda" else 0, freed)
            rows.append(
                dict(
                    bench="memory",
                    method=name,
                    batch=1,
                    context=n,
                    layers=layers,
                    resident_bytes=resident,
                    cache_tensor_bytes=cache_bytes,
                    decode_peak_bytes=results[name][1],
                    reported_freed_bytes=freed,
                    decode_step_ms=step_ms,
                )
            )
            log(
                f"  n={n} {name}: resident {resident / 1e6:.1f} MB (cache tensors "
                f"{cache_bytes / 1e6:.1f} MB), decode peak {results[name][1] / 1e6:.1f} MB, "
                f"eager decode step {step_ms:.2f} ms"
            )
            del cache
        (r_d, p_d, _), (r_k, p_k, freed) = results["dynamic"], results["kvprune_streaming_0.5"]
        log(
            f"n={n}: resident after prompt dynamic {r_d / 1e6:.1f} MB vs kvprune {r_k / 1e6:.1f} MB "
            f"(measured drop {(r_d - r_k) / 1e6:.1f} MB, report says freed {freed / 1e6:.1f} MB); "
            f"decode peak {p_d / 1e6:.1f} vs {p_k / 1e6:.1f} MB"
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run (checks the script)")
    parser.add_argument("--sweep", action="store_true", help="time kernel variants first")
    parser.add_argument("--only", default="kernel,memory", help="comma list: kernel, memory")
    parser.add_argument("--out", default=None, help="CSV path (default results/decode_gpu.csv)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.smoke:
        log("bench_decode_gpu: no CUDA device; nothing measured (use --smoke to test the script)")
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out) if args.out else RESULTS / "decode_gpu.csv"
    if device == "cuda":
        log(f"device: {torch.cuda.get_device_name()}")
    bw = copy_bandwidth(device, args.smoke)
    log(f"device-to-device copy: {bw / 1e12:.3f} TB/s (read + write)")
    rows = [dict(bench="copy_bandwidth", bytes_per_s=bw)]

    written = 0

    def save(all_rows=None):
        # write_csv appends: hand it only the rows not written yet
        nonlocal written
        all_rows = rows if all_rows is None else all_rows
        if (not args.smoke or args.out) and len(all_rows) > written:
            write_csv(out, all_rows[written:])
            written = len(all_rows)

    parts = args.only.split(",")
    if args.sweep:
        done0 = list(rows)
        rows += sweep(device, args.smoke, bw, on_size=lambda new: save(done0 + new))
        save()
    if "kernel" in parts:
        sizes = all_sizes(args.smoke)
        methods = ["sdpa_full", "sdpa_half", "ours_full", "ours_half", "ours_half_nopdl"]
        methods += ["ours_half_mbd128", "ours_half_w"]
        done = list(rows)

        def partial(new_rows):
            save(done + new_rows)

        rows += bench_kernel(
            sizes,
            device,
            args.smoke,
            bw,
            [{}],
            methods,
            3 if args.smoke else 20,
            ["graph_queued", "graph", "eager_loop", "do_bench"],
            on_size=partial,
        )
        save()
    if "memory" in parts:
        contexts = [256, 512] if args.smoke else [4096, 8192, 16384, 32768]
        rows += bench_memory(contexts, device, args.smoke)
        save()
    if args.smoke and not args.out:
        log(f"smoke run: {len(rows)} rows (not written to results/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
