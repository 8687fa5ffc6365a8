"""Serving at a fixed KV-cache memory budget (GPU): the batch the full cache fits against the
batch kvprune fits at 40-50% freed, and the generated tokens per second of each.

    python packages/kvprune/benchmarks/bench_serving_gpu.py --out serving_h100.csv
    python packages/kvprune/benchmarks/bench_serving_gpu.py --contexts 8192 --kv-budget-gib 24
    python packages/kvprune/benchmarks/bench_serving_gpu.py --smoke --device cpu   # code path

Model: Llama-3-8B shapes (32 layers, 4096 hidden, 32 query / 8 KV heads of 128, SwiGLU 14336,
vocab 128256) with synthetic bf16 weights. For each context length (default 8k, 16k, 32k):

1. ``full``: the batch is the largest whose full KV cache (prompt + generated tokens) fits the
   budget; each row is prefilled alone (SDPA) into a ``DynamicCache`` and the rows are
   concatenated; then ``--new`` tokens are decoded greedily for the whole batch.
2. ``kvprune``: one row is prefilled into a ``KVPruneCache`` (``--policy`` at ``--kept``,
   ``reserve=--new`` rows per head so decoding never reallocates or synchronizes) to measure
   the bytes a row allocates; the batch is the largest that fits the same budget; every row is
   prefilled alone and the rows' ragged stores are concatenated into one batch cache.

Columns: batch, KV bytes allocated, peak GPU memory during decoding, decode wall time,
generated tokens/s (batch x new / time), and the per-layer host time of the cache bookkeeping
of one decode step (Python + launches of ``update``, ragged attention and eviction, measured
without synchronizing; for ``full``: ``DynamicCache.update``). Prefill time is not part of
the tokens/s (the goal is decode throughput at equal memory). Writes one row per (context,
method) to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

LLAMA3_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=65536,
    rope_theta=500000.0,
    bos_token_id=1,
    eos_token_id=2,
)
SMOKE = dict(
    LLAMA3_8B,
    vocab_size=512,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
)


def build_model(config_kw: dict, device: str, dtype):
    """A randomly initialised Llama (transformers' own init), built on ``device`` in ``dtype``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**config_kw)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.set_attn_implementation("sdpa")
    return model.eval()


def make_policy(name: str, kept: float):
    import kvprune as kp

    table = {
        "adaptive_fastgen": lambda: kp.AdaptiveFastGen(kept_fraction=kept),
        "snapkv": lambda: kp.SnapKV(kept_fraction=kept),
        "streamingllm": lambda: kp.StreamingLLM(kept_fraction=kept),
        "h2o": lambda: kp.H2O(kept_fraction=kept),
        "tova": lambda: kp.TOVA(kept_fraction=kept),
    }
    if name not in table:
        raise SystemExit(
            f"bench_serving_gpu: unknown policy {name!r} (choose from {sorted(table)})"
        )
    return table[name]()


def kv_bytes_per_token(cfg: dict, dtype) -> int:
    elem = torch.empty(0, dtype=dtype).element_size()
    return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * cfg["head_dim"] * elem


def merge_kvprune(caches):
    """One batch cache from single-row caches: every layer's ragged stores merged by rows."""
    from kvprune.storage import RaggedStore

    out = caches[0]
    for i, layer in enumerate(out.layers):
        stores = [c.layers[i].store for c in caches]
        layer.store = RaggedStore.merge_rows(stores)
        for st in stores[1:]:  # free each row's copy as soon as it is merged
            st.k_pool = st.v_pool = torch.empty(0)
        layer.policy_index = torch.cat([c.layers[i].policy_index for c in caches])
        layer.recovery = torch.cat([c.layers[i].recovery for c in caches])
        layer.prompt_real = torch.cat([c.layers[i].prompt_real for c in caches])
    ids = [c._inputs["input_ids"] for c in caches]
    out._inputs = {"input_ids": torch.cat(ids), "attention_mask": None}
    return out


class HostTimer:
    """Accumulates host time spent in wrapped methods (no device synchronization)."""

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, obj, name):
        fn = getattr(obj, name)

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

        setattr(obj, name, timed)


@torch.no_grad()
def decode(model, cache, first_tok, ctx: int, new: int, device: str):
    tok = first_tok
    b = tok.shape[0]
    pos = torch.full((b, 1), ctx, device=device)
    for t in range(new):
        logits = model(tok, cache=cache, position_ids=pos + t, logits_to_keep=1).logits
        tok = logits[:, -1].argmax(-1, keepdim=True)
    return tok


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_full(model, cfg, ctx, new, budget, device, dtype, gen):
    from transformers import DynamicCache

    per_seq = kv_bytes_per_token(cfg, dtype) * (ctx + new)
    batch = int(budget // per_seq)
    if batch < 1:
        return None
    rows = []
    firsts = []
    for _ in range(batch):
        ids = torch.randint(3, cfg["vocab_size"], (1, ctx), generator=gen).to(device)
        c = DynamicCache(config=model.config)
        out = model(ids, cache=c, logits_to_keep=1)
        firsts.append(out.logits[:, -1].argmax(-1, keepdim=True))
        rows.append(c)
    cache = DynamicCache(config=model.config)
    for i in range(cfg["num_hidden_layers"]):
        k = torch.cat([r.layers[i].keys for r in rows])
        v = torch.cat([r.layers[i].values for r in rows])
        for r in rows:
            r.layers[i].keys = r.layers[i].values = None
        cache.update(k, v, i)
    del rows
    return cache, torch.cat(firsts), batch, kv_bytes_per_token(cfg, dtype) * ctx * batch


def run_kvprune(model, cfg, ctx, new, budget, device, dtype, gen, policy):
    from kvprune import KVPruneCache

    table = torch.zeros(cfg["vocab_size"], dtype=torch.int8)  # synthetic ids: no classes

    def one():
        ids = torch.randint(3, cfg["vocab_size"], (1, ctx), generator=gen).to(device)
        c = KVPruneCache(model, policy, token_classes_table=table, reserve=new)
        out = model(ids, cache=c, logits_to_keep=1)
        return c, out.logits[:, -1].argmax(-1, keepdim=True)

    probe, first = one()
    per_seq = probe.memory()["kv_allocated"] + probe.memory()["metadata"]
    kept = probe.report().kept_fraction
    batch = int(budget // per_seq)
    if batch < 1:
        return None
    caches, firsts = [probe], [first]
    for _ in range(batch - 1):
        c, f = one()
        caches.append(c)
        firsts.append(f)
    cache = merge_kvprune(caches)
    return cache, torch.cat(firsts), batch, cache.memory()["kv_allocated"], kept


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--contexts", default="8192,16384,32768")
    ap.add_argument("--new", type=int, default=128, help="tokens generated per row")
    ap.add_argument("--kv-budget-gib", type=float, default=32.0)
    ap.add_argument("--policy", default="adaptive_fastgen")
    ap.add_argument("--kept", type=float, default=0.55, help="kept fraction (0.55 = 45%% freed)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="tiny model and budget (code path)")
    ap.add_argument("--out", default=None, help="CSV (default: results/serving_gpu.csv)")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_serving_gpu: needs CUDA (or --device cpu --smoke)", file=sys.stderr)
        return 1
    from tensor_utils_dev.bench import results_dir, write_csv

    out = args.out or results_dir(__file__) / "serving_gpu.csv"

    cfg = SMOKE if args.smoke else LLAMA3_8B
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    contexts = [int(x) for x in args.contexts.split(",")]
    if args.smoke:
        contexts, args.new, args.kv_budget_gib = (
            [64],
            4,
            4 * kv_bytes_per_token(cfg, dtype) * 68 / 2**30,
        )
    model = build_model(cfg, args.device, dtype)
    budget = args.kv_budget_gib * 2**30
    policy = make_policy(args.policy, args.kept)
    for ctx in contexts:
        for method in ("full", "kvprune"):
            gen = torch.Generator().manual_seed(ctx)
            with torch.no_grad():
                if method == "full":
                    built = run_full(model, cfg, ctx, args.new, budget, args.device, dtype, gen)
                else:
                    built = run_kvprune(
                        model, cfg, ctx, args.new, budget, args.device, dtype, gen, policy
                    )
            if built is None:
                print(f"ctx {ctx} {method}: not even one row fits the budget", flush=True)
                continue
            cache, first, batch, kv_bytes = built[:4]
            kept = built[4] if len(built) > 4 else 1.0
            timer = HostTimer()
            for layer in cache.layers:
                if method == "kvprune":
                    for name in ("update", "decode_attention"):
                        timer.wrap(layer, name)
                else:
                    timer.wrap(layer, "update")
            decode(model, cache, first, ctx, 2, args.device)  # warm-up (kernels compile)
            timer.seconds, timer.calls = 0.0, 0
            sync(args.device)
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            decode(model, cache, first, ctx + 2, args.new, args.device)
            sync(args.device)
            wall = time.perf_counter() - t0
            peak = torch.cuda.max_memory_allocated() if args.device.startswith("cuda") else 0
            steps = args.new * cfg["num_hidden_layers"]
            row = dict(
                context=ctx,
                method=method,
                policy=args.policy if method == "kvprune" else "full",
                kept_fraction=round(kept, 4),
                batch=batch,
                new_tokens=args.new,
                kv_budget_gib=round(args.kv_budget_gib, 3),
                kv_allocated_gib=round(kv_bytes / 2**30, 3),
                peak_decode_gib=round(peak / 2**30, 3),
                decode_s=round(wall, 4),
                tokens_per_s=round(batch * args.new / wall, 2),
                host_cache_us_per_layer_step=round(timer.seconds / steps * 1e6, 2),
            )
            print(row, flush=True)
            write_csv(out, [row])
            del cache, built
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
