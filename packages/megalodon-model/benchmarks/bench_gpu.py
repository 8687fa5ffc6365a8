"""megalodon-model on a CUDA GPU (the H100 issue), CSV rows to --out:

1. CEMA at D=4096, N=16, L 2k..32k, bf16 inputs: the FFT path, the PyTorch chunked scan and the
   Triton chunked scan, forward and forward+backward (``triton.testing.do_bench`` medians), and
   each path's error against the float64 sequential recurrence on the same (bf16-rounded) inputs:
   max |y - y64| / max |y64| and the RMS ratio, for the bf16 output and for an fp32-input run.
2. Timestep norm: the Triton kernel against ``torch.nn.functional.layer_norm`` on the same tensor
   ([1, L, 4096], 64 groups, bf16), forward and forward+backward.
3. One Megalodon block (the reference's 7B layer shape: d 4096, 4 heads, z 1024, v 8192, SwiGLU
   8192, chunk 2048, 64 groups) against one transformers ``LlamaDecoderLayer`` of the same width
   (32 heads, MLP 11008, SDPA attention, causal) at 4K and 32K tokens, bf16, batch 1: forward+
   backward time and peak memory.

    python packages/megalodon-model/benchmarks/bench_gpu.py --out /tmp/megalodon_gpu
    python .../bench_gpu.py --quick --out /tmp/q       # small sizes, a smoke run

Needs torch, triton, transformers (and this package and tensor-utils on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from megalodon_model import MegalodonConfig
from megalodon_model.modeling import MegalodonBlock
from megalodon_model.ops.cema import cases, cema
from megalodon_model.ops.timestep_norm import timestep_norm

from tensor_utils_dev.bench import environment_tags, time_fn, write_csv


def log(msg: str) -> None:
    print(msg, flush=True)


def errors(y: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    d = (y.double() - ref).float()
    r = ref.float()
    return float(d.abs().max() / r.abs().max()), float(d.norm() / r.norm())


def bench_cema(args, rows):
    dim, n_dim = args.dim, 16
    p, q, eta = (t.cuda() for t in cases.random_coefficients(dim, n_dim, 0))
    for length in args.lengths:
        gen = torch.Generator(device="cuda").manual_seed(length)
        x = torch.randn(1, length, dim, device="cuda", generator=gen).to(torch.bfloat16)
        with torch.no_grad():
            y64, _ = cema(x.double(), p.double(), q.double(), eta.double(), backend="reference")
        for path in ("fft", "chunked", "triton"):
            row = {"bench": "cema", "path": path, "dim": dim, "ndim": n_dim, "length": length,
                   "dtype": "bfloat16"}  # fmt: skip
            try:
                with torch.no_grad():
                    y, _ = cema(x, p, q, eta, backend=path)
                    row["rel_err_max"], row["rel_err_rms"] = errors(y, y64)
                    y32, _ = cema(x.float(), p, q, eta, backend=path)
                    row["rel_err_max_fp32_in"], row["rel_err_rms_fp32_in"] = errors(y32, y64)
                del y, y32
                fwd = time_fn(lambda path=path, x=x: cema(x, p, q, eta, backend=path))
                row["fwd_ms"] = fwd.median_ms
                leaves = [t.clone().requires_grad_(True) for t in (x, p, q, eta)]
                dy = torch.randn_like(x)

                def step(path=path, leaves=leaves, dy=dy):
                    for t in leaves:
                        t.grad = None
                    y, h = cema(*leaves, backend=path)
                    torch.autograd.backward([y, h], [dy, torch.zeros_like(h)])

                torch.cuda.reset_peak_memory_stats()
                row["fwd_bwd_ms"] = time_fn(step).median_ms
                row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            except torch.OutOfMemoryError as exc:
                row["error"] = f"out of memory: {str(exc).splitlines()[0][:120]}"
            rows.append(row)
            log(f"cema L={length:6d} {path:8s} " + " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in row.items() if k not in ("bench", "path", "dim", "ndim", "length")))  # fmt: skip
            gc.collect()
            torch.cuda.empty_cache()
        del y64


def bench_norm(args, rows):
    dim, groups = args.dim, 64
    for length in args.norm_lengths:
        x = (torch.randn(1, length, dim, device="cuda") + 1).to(torch.bfloat16)
        w = torch.ones(dim, device="cuda", dtype=torch.bfloat16)
        b = torch.zeros(dim, device="cuda", dtype=torch.bfloat16)
        count = torch.zeros(1, dtype=torch.int64, device="cuda")
        mean = torch.zeros(1, groups, device="cuda")
        var = torch.ones(1, groups, device="cuda")
        fns = {
            "timestep_norm_triton": lambda xx, ww, bb, c=count, m=mean, v=var: timestep_norm(
                xx, c, m, v, ww, bb, None, 1e-5, backend="triton"
            )[0],
            "layer_norm": lambda xx, ww, bb: F.layer_norm(xx, (dim,), ww, bb, 1e-5),
        }
        res = {}
        for name, fn in fns.items():
            fwd = time_fn(lambda fn=fn, x=x, w=w, b=b: fn(x, w, b)).median_ms
            leaves = [t.clone().requires_grad_(True) for t in (x, w, b)]
            dy = torch.randn_like(x)

            def step(fn=fn, leaves=leaves, dy=dy):
                for t in leaves:
                    t.grad = None
                fn(*leaves).backward(dy)

            res[name] = (fwd, time_fn(step).median_ms)
        for name, (fwd, fb) in res.items():
            rows.append({"bench": "timestep_norm", "op": name, "length": length, "dim": dim,
                         "groups": groups, "dtype": "bfloat16", "fwd_ms": fwd,
                         "fwd_bwd_ms": fb})  # fmt: skip
        ratio_f = res["timestep_norm_triton"][0] / res["layer_norm"][0]
        ratio_b = res["timestep_norm_triton"][1] / res["layer_norm"][1]
        log(f"norm L={length}: triton/layer_norm fwd {ratio_f:.2f}x, fwd+bwd {ratio_b:.2f}x")


def megalodon_block(dim):
    cfg = MegalodonConfig(
        hidden_size=dim, num_attention_heads=4, z_dim=dim // 4, value_dim=2 * dim,
        intermediate_size=2 * dim, swiglu=True, chunk_size=2048, norm_num_groups=64,
        num_hidden_layers=1,
    )  # fmt: skip
    block = MegalodonBlock(cfg, 0)
    with torch.no_grad():
        block.mega.cema.reset_parameters()
        for mod in block.modules():
            if isinstance(mod, torch.nn.Linear):
                torch.nn.init.normal_(mod.weight, std=0.02)
    return block.cuda().to(torch.bfloat16), lambda h: block(h)


def llama_block(dim, length):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    cfg = LlamaConfig(
        hidden_size=dim, num_attention_heads=32, num_key_value_heads=32,
        intermediate_size=11008 * dim // 4096, max_position_embeddings=max(length, 4096),
    )  # fmt: skip
    cfg._attn_implementation = "sdpa"
    layer = LlamaDecoderLayer(cfg, 0).cuda().to(torch.bfloat16)
    rope = LlamaRotaryEmbedding(cfg).cuda()
    pos = torch.arange(length, device="cuda")[None]

    def run(h):
        cos, sin = rope(h, pos)
        out = layer(h, attention_mask=None, position_ids=pos, position_embeddings=(cos, sin))
        return out[0] if isinstance(out, tuple) else out

    return layer, run


def bench_blocks(args, rows):
    dim = args.dim
    for length in args.block_lengths:
        for name in ("megalodon", "llama"):
            gc.collect()
            torch.cuda.empty_cache()
            module, run = megalodon_block(dim) if name == "megalodon" else llama_block(dim, length)
            params = sum(p.numel() for p in module.parameters())
            h = torch.randn(1, length, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            dy = torch.randn_like(h)

            def step(run=run, h=h, dy=dy, module=module):
                h.grad = None
                for p in module.parameters():
                    p.grad = None
                run(h).backward(dy)

            row = {"bench": "block", "model": name, "length": length, "dim": dim,
                   "params": params, "dtype": "bfloat16"}  # fmt: skip
            try:
                step()
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                step()
                torch.cuda.synchronize()
                row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
                row["peak_above_weights_gib"] = (torch.cuda.max_memory_allocated() - base) / 2**30
                row["fwd_bwd_ms"] = time_fn(step).median_ms
                row["tokens_per_s"] = length / row["fwd_bwd_ms"] * 1e3
            except torch.OutOfMemoryError as exc:
                row["error"] = f"out of memory: {str(exc).splitlines()[0][:120]}"
            rows.append(row)
            log(f"block L={length} {name:9s} params {params / 1e6:.0f}M " + " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in row.items() if k.endswith(("_ms", "_gib", "_s", "error"))))  # fmt: skip
            del module, run, h, dy
    by = {(r["model"], r["length"]): r.get("fwd_bwd_ms") for r in rows if r["bench"] == "block"}
    for length in args.block_lengths:
        m, ll = by.get(("megalodon", length)), by.get(("llama", length))
        if m and ll:
            log(f"block L={length}: Megalodon / Llama fwd+bwd time = {m / ll:.2f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the CSV files")
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192, 16384, 32768])
    ap.add_argument("--norm-lengths", type=int, nargs="+", default=[4096, 32768])
    ap.add_argument("--block-lengths", type=int, nargs="+", default=[4096, 32768])
    ap.add_argument("--only", choices=("cema", "norm", "block"), nargs="+")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu: needs a CUDA device", file=sys.stderr)
        return 2
    if args.quick:
        args.dim, args.lengths = 512, [2048, 4096]
        args.norm_lengths, args.block_lengths = [4096], [4096]
    torch.backends.cuda.matmul.allow_tf32 = False
    args.out.mkdir(parents=True, exist_ok=True)
    tags = environment_tags("cuda", ["megalodon-model"])
    start = time.time()
    for part, fn, name in (("cema", bench_cema, "cema_gpu.csv"),
                           ("norm", bench_norm, "timestep_norm_gpu.csv"),
                           ("block", bench_blocks, "block_gpu.csv")):  # fmt: skip
        if args.only and part not in args.only:
            continue
        rows: list[dict] = []
        fn(args, rows)
        write_csv(args.out / name, rows, tags=tags)
        log(f"wrote {args.out / name} ({len(rows)} rows, {time.time() - start:.0f} s so far)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
