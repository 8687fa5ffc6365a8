"""CPU decode speed at Llama-3-8B layer shapes: the MLP block and one whole decoder layer,
sparse (each mode, predictor or threshold cost included) against dense PyTorch, side by side in
one process with interleaved rounds (dense, sparse, dense, ...; medians).

Synthetic weights (hidden 4096, intermediate 14336, 32 query / 8 KV heads, float32, the same
dtype dense and sparse), a KV cache of ``--context`` tokens, batch 1 and 4, sparsity 40/50/70%.
Also: the gathered ops against dense at several densities (the dense-fallback crossover), and
the bandwidth bound (a dense product over a contiguous slice of the selected size: skipping
without any gather cost).

    python benchmarks/bench_decode_cpu.py [--rounds 9] [--out results/decode_cpu.csv]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from tensor_utils_dev.bench import interleaved_medians

HERE = Path(__file__).resolve().parent


def fill_cache(model, batch: int, context: int, dtype):
    from transformers import DynamicCache

    c = model.config
    cache = DynamicCache(config=c)
    g = torch.Generator().manual_seed(0)
    for i in range(c.num_hidden_layers):
        k = torch.randn(batch, c.num_key_value_heads, context, c.head_dim, generator=g).to(dtype)
        cache.update(k, k.clone(), i)
    return cache


def _copy_cols(xs, w, idx):
    """gather_cols's chunked copy-into-buffer path, forced (it serves batch > 1)."""
    step = max(16, (2 << 20) // (w.shape[1] * w.element_size()))
    acc = torch.zeros(xs.shape[0], w.shape[1])
    buf = torch.empty(min(step, idx.numel()), w.shape[1], dtype=w.dtype)
    for s in range(0, idx.numel(), step):
        rows = buf[: min(idx.numel(), s + step) - s]
        torch.index_select(w, 0, idx[s : s + rows.shape[0]], out=rows)
        acc.addmm_(xs[:, s : s + rows.shape[0]], rows)
    return acc


def _gbps(nbytes: float, ms: float) -> float:
    return round(nbytes / ms / 1e6, 2)


def kernel_rows(rounds: int, dtype, densities=(0.3, 0.5, 0.7), batches=(1, 4),
                copies: int = 4) -> list[dict]:  # fmt: skip
    """The gathered ops against dense at several densities, and the effective bandwidth each
    reaches (bytes of the rows it must read / time). ``copies`` weight copies are cycled so the
    weights stream from memory (4 x 235 MB float32 against a 300 MB L3)."""
    from dejavu_sparse.fallback import set_dense_fallback

    g = torch.Generator().manual_seed(0)
    rows = []
    set_dense_fallback("cpu", {1: 1.0})  # time the gathered path itself
    try:
        # (n, k): gate/up rows (14336 x 4096: gathered rows; as a transposed down weight,
        # gathered columns), and TEAL's fused gate/up transposed weight (4096 x 28672)
        for n, k, ops in ((14336, 4096, ("rows", "cols")), (4096, 28672, ("cols",))):
            ws = [(torch.randn(n, k, generator=g) * 0.02).to(dtype) for _ in range(copies)]
            rows += _kernel_shape(ws, ops, rounds, g, densities, batches)
    finally:
        set_dense_fallback("cpu", None)
    return rows


def _kernel_shape(ws: list[torch.Tensor], ops, rounds: int, g, densities, batches) -> list[dict]:
    from dejavu_sparse.ops import gather_cols, gather_rows

    n, k = ws[0].shape
    dtype = ws[0].dtype
    row_bytes = k * ws[0].element_size()
    rows = []
    for batch in batches:
        x = torch.randn(batch, k, dtype=dtype)
        xi = torch.randn(batch, n, dtype=dtype)
        for density in densities if batch == 1 else [d for d in densities if d <= 0.5]:
            sel = int(density * n)
            idx = torch.randperm(n, generator=g)[:sel].sort().values
            xs = xi[:, idx].contiguous()
            fns: dict[str, Callable[[], object]] = {
                "contig": lambda x=x, sel=sel: [x @ w[:sel].t() for w in ws]
            }
            if "rows" in ops:
                fns["dense_rows"] = lambda x=x: [x @ w.t() for w in ws]
                fns["gather_rows"] = lambda x=x, idx=idx: [gather_rows(x, w, idx) for w in ws]
                fns["inplace_rows"] = lambda x=x, idx=idx: [
                    gather_rows(x, w, idx, backend="inplace") for w in ws
                ]
                fns["copy_rows"] = lambda x=x, idx=idx: [
                    gather_rows(x, w, idx, backend="chunked") for w in ws
                ]
            fns["dense_cols"] = lambda xi=xi: [xi @ w for w in ws]
            fns["gather_cols"] = lambda xs=xs, idx=idx: [gather_cols(xs, w, idx) for w in ws]
            # the plain PyTorch backend (embedding_bag at batch 1) beside the C kernel (auto)
            fns["chunked_cols"] = lambda xs=xs, idx=idx: [
                gather_cols(xs, w, idx, backend="chunked") for w in ws
            ]
            # the copying path of gather_cols (what batch > 1 runs), at any batch
            fns["copy_cols"] = lambda xs=xs, idx=idx: [_copy_cols(xs, w, idx) for w in ws]
            t = {name: v / len(ws) for name, v in interleaved_medians(fns, rounds).items()}
            full, part = n * row_bytes, sel * row_bytes
            row = {"bench": "kernel", "shape": f"{n}x{k}", "batch": batch, "density": density,
                   **{f"{name}_ms": round(v, 3) for name, v in t.items()},
                   "ideal_speedup": round(t["dense_cols"] / t["contig"], 3),
                   "cols_speedup": round(t["dense_cols"] / t["gather_cols"], 3),
                   "cols_backend": gather_cols.select("cpu", dtype),
                   "chunked_cols_speedup": round(t["dense_cols"] / t["chunked_cols"], 3),
                   "dense_cols_GBps": _gbps(full, t["dense_cols"]),
                   "gather_cols_GBps": _gbps(part, t["gather_cols"]),
                   "contig_GBps": _gbps(part, t["contig"]),
                   "load1": round(os.getloadavg()[0], 2)}  # fmt: skip
            if "rows" in ops:
                row.update({"rows_speedup": round(t["dense_rows"] / t["gather_rows"], 3),
                            "rows_backend": gather_rows.select("cpu", dtype),
                            "inplace_rows_speedup": round(t["dense_rows"] / t["inplace_rows"], 3),
                            "copy_rows_speedup": round(t["dense_rows"] / t["copy_rows"], 3),
                            "dense_rows_GBps": _gbps(full, t["dense_rows"]),
                            "gather_rows_GBps": _gbps(part, t["gather_rows"])})  # fmt: skip
            rows.append(row)
            print(row, flush=True)
    return rows


@contextlib.contextmanager
def backend(name: str):
    """Inside the block: ``""`` the automatic choice; ``"plain"`` the plain PyTorch backends of
    the CPU ops instead of their C kernels (``threshold_cols``: ``gathered``, ``gather_cols``:
    ``chunked``, ``gather_rows``: ``inplace``); any other name forces every op onto that
    backend."""
    from tensor_utils.ops import set_backend_override

    if not name:
        yield
        return
    if name != "plain":
        set_backend_override(name)
        try:
            yield
        finally:
            set_backend_override(None)
        return
    from dejavu_sparse import layers
    from dejavu_sparse.ops import gather_cols, gather_rows, threshold_cols

    # by module path: the package attribute ``threshold_cols`` is the op, not its folder
    gathered = importlib.import_module("dejavu_sparse.ops.threshold_cols.gathered")

    cols = functools.partial(gather_cols, backend="chunked")
    patches = [(layers, "threshold_cols", functools.partial(threshold_cols, backend="gathered")),
               (layers, "gather_cols", cols), (gathered, "gather_cols", cols),
               (layers, "gather_rows", functools.partial(gather_rows, backend="inplace"))]  # fmt: skip
    saved = [(module, attr, getattr(module, attr)) for module, attr, _ in patches]
    for module, attr, value in patches:
        setattr(module, attr, value)
    try:
        yield
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)


def block_rows(
    model,
    calib,
    rounds: int,
    context: int,
    dtype,
    batches=(1, 4),
    modes=("dejavu", "teal", "cats"),
    sparsities=(0.4, 0.5, 0.7),
) -> list[dict]:
    from dejavu_sparse import sparse_state, sparsify

    layer = model.model.layers[0]
    mlp = layer.mlp
    rows = []
    g = torch.Generator().manual_seed(1)
    for batch in batches:
        x = torch.randn(batch, 1, 4096, generator=g).to(dtype)
        xn = layer.post_attention_layernorm(x)
        ids = torch.randint(0, 256, (batch, 1), generator=g)
        pos = torch.full((batch, 1), context)
        for mode_name in modes:
            # "teal_b16": TEAL's block option (input channels in whole blocks of 16);
            # "teal@plain": the plain PyTorch backends instead of the C kernels (see backend())
            mode_blocks, _, forced = mode_name.partition("@")
            mode, _, blocks = mode_blocks.partition("_b")
            for s in sparsities:
                sparsify(model, mode, s, calib, greedy=False, block_size=int(blocks or 1))
                state = sparse_state(model)
                st = state.states[0]
                st.taps.attn_in[0] = x  # the MLP predictor's input when the block runs alone
                cache = fill_cache(model, batch, context, dtype)

                def switch(on, state=state):
                    for s_ in state.states:
                        s_.enabled = on

                def mlp_dense(xn=xn):
                    switch(False)
                    mlp(xn)

                def mlp_sparse(xn=xn, forced=forced):
                    switch(True)
                    with backend(forced):
                        mlp(xn)

                def layer_dense(cache=cache, ids=ids, pos=pos):
                    switch(False)
                    model(ids, cache=cache, position_ids=pos)
                    cache.crop(-1)

                def layer_sparse(cache=cache, ids=ids, pos=pos, forced=forced):
                    switch(True)
                    with backend(forced):
                        model(ids, cache=cache, position_ids=pos)
                    cache.crop(-1)

                with torch.no_grad():
                    state.reset_stats()
                    t = interleaved_medians({"mlp_dense": mlp_dense, "mlp_sparse": mlp_sparse,
                                     "layer_dense": layer_dense, "layer_sparse": layer_sparse},
                                    rounds)  # fmt: skip
                rep = state.report()["mean"]
                state.reset_stats()  # the MLP block's own input alone (the layer's differs)
                with torch.no_grad():
                    mlp_sparse()
                alone = state.report()["mean"]["mlp"]
                rows.append({"bench": "block", "batch": batch, "mode": mode_name, "sparsity": s,
                             **{f"{k}_ms": round(v, 3) for k, v in t.items()},
                             "mlp_speedup": round(t["mlp_dense"] / t["mlp_sparse"], 3),
                             "layer_speedup": round(t["layer_dense"] / t["layer_sparse"], 3),
                             "achieved_mlp": round(rep["mlp"], 4),
                             "achieved_mlp_block": round(alone, 4),
                             "achieved_attn": round(rep["attn"], 4),
                             "achieved_layer": round(rep["layer"], 4),
                             "load1": round(os.getloadavg()[0], 2)})  # fmt: skip
                print(rows[-1], flush=True)
                switch(True)
    return rows


def main() -> None:
    from llama8b import build, calibration

    from tensor_utils_dev.bench import environment_tags, results_dir, write_csv

    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-kernels", action="store_true")
    p.add_argument("--batches", type=int, nargs="+", default=[1])
    p.add_argument(
        "--modes",
        nargs="+",
        default=["dejavu", "teal", "cats"],
        help="also teal_b8 / teal_b16 / teal_b32 / teal_b64 (TEAL's block option); a suffix "
        "@plain runs the plain PyTorch backends instead of the C kernels (teal@plain)",
    )
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.5])
    p.add_argument("--densities", type=float, nargs="+", default=[0.5],
                   help="selected fractions for the kernel rows (page: 0.3 0.5 0.7)")  # fmt: skip
    p.add_argument("--out", default=str(results_dir(__file__) / "decode_cpu.csv"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dtype = torch.float32
    tags = {**environment_tags(packages=["dejavu-sparse"]), "dtype": "float32",
            "threads": str(args.threads), "context": str(args.context),
            "shapes": "Llama-3-8B layer (4096/14336, 32/8 heads)"}  # fmt: skip
    if not args.skip_kernels:  # written at once: a later failure keeps these
        write_csv(args.out, kernel_rows(args.rounds, dtype, args.densities, args.batches),
                  tags=tags)  # fmt: skip
    rows = []
    model = build(dtype)
    t0 = time.perf_counter()
    calib = calibration(model)
    print(f"calibrated in {time.perf_counter() - t0:.0f} s", flush=True)
    rows += block_rows(model, calib, args.rounds, args.context, dtype, args.batches, args.modes,
                       args.sparsities)  # fmt: skip
    write_csv(args.out, rows, tags=tags)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
