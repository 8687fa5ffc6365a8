"""Per-token decode time of ``model.generate`` on the CPU: kvprune against the full cache.

    python packages/kvprune/benchmarks/bench_decode_cpu.py                      # 1k context
    python packages/kvprune/benchmarks/bench_decode_cpu.py --contexts 1024,8192 --new 64 \\
        --rounds 3 --out results/decode_cpu.csv

SmolLM2-135M-Instruct, float32. The prompt runs once per context (SDPA, states recorded, as
in ``bench_quality.py``); each method's cache is built from that prefill (``DynamicCache`` for
the full cache, ``KVPruneCache.prefill_from`` for kvprune), then ``model.generate`` decodes
``--new`` tokens greedily. A streamer stamps every generated token; the per-token time is the
median gap between consecutive tokens (prefill excluded). Methods run interleaved, ``--rounds``
times, the order rotated by one method each round (A, B, C, B, C, A, ...) so that drift in the
machine's load does not always hit the same method; medians over rounds: other processes share
the CPU.

``--mode steps`` interleaves finer, for a machine whose load drifts within a ``generate``
call: every method's cache is built, then token after token each method runs one greedy
decoding step (the model call ``generate`` makes per token), the method order rotated at every
token; the per-token time is the median over the steps of all rounds (each round's first step,
which joins the cache's layers, left out).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_quality import CAPTURE, capture_attention, prefill
from quality_cases import documents

from tensor_utils_dev.bench import results_dir, write_csv


class Stamps:
    """A generate() streamer recording when each new token arrives."""

    def __init__(self):
        self.times: list[float] = []
        self.first = True

    def put(self, value):
        if self.first:  # the prompt
            self.first = False
            return
        self.times.append(time.perf_counter())

    def end(self):
        pass


def methods():
    import kvprune as kp

    return {
        "full": None,
        "kvprune_full": kp.Full(),
        "fastgen_t0.95": kp.FastGen(recovery=0.95),
        "adaptive_fastgen_0.5": kp.AdaptiveFastGen(kept_fraction=0.5),
        "hybrid_fastgen_0.5": kp.HybridFastGen(kept_fraction=0.5),
        "h2o_0.5": kp.H2O(kept_fraction=0.5),
        "streamingllm_0.5": kp.StreamingLLM(kept_fraction=0.5),
        "tova_0.5": kp.TOVA(kept_fraction=0.5),
    }


def build_cache(model, tok, policy, states, ids):
    from kvprune import KVPruneCache
    from transformers import DynamicCache

    if policy is None:
        cache = DynamicCache(config=model.config)
        for i, (_q, k, v) in enumerate(states):
            cache.update(k.clone(), v.clone(), i)
        return cache
    cache = KVPruneCache(model, policy, tok)
    cache.prefill_from(states, ids)
    return cache


@torch.no_grad()
def time_generate(model, tok, cache, ids, first: int, new: int) -> float:
    stamps = Stamps()
    inputs = torch.cat([ids, torch.tensor([[first]])], 1)
    model.generate(
        inputs,
        attention_mask=torch.ones_like(inputs),
        cache=cache,
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=False,
        streamer=stamps,
        pad_token_id=tok.eos_token_id,
    )
    gaps = [b - a for a, b in zip(stamps.times, stamps.times[1:], strict=False)]
    return statistics.median(gaps)


@torch.no_grad()
def time_steps(model, caches: dict, ids, first: int, new: int) -> dict[str, list[float]]:
    """Token-interleaved decoding: at each step every method (rotated order) decodes one
    token greedily with its own cache; seconds per step and method (the first step left out)."""
    from kvprune.generate import cache_kwarg

    kw = cache_kwarg(model)
    names = list(caches)
    tokens = {name: torch.tensor([[first]]) for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(new):
        shift = i % len(names)
        mask = torch.ones(1, ids.shape[1] + 1 + i, dtype=torch.long)
        for name in names[shift:] + names[:shift]:
            t = time.perf_counter()
            out = model(
                input_ids=tokens[name], attention_mask=mask, use_cache=True, **{kw: caches[name]}
            )
            tokens[name] = out.logits[:, -1:].argmax(-1)
            if i:
                times[name].append(time.perf_counter() - t)
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--contexts", default="1024")
    ap.add_argument("--new", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--mode", choices=("generate", "steps"), default="generate")
    ap.add_argument(
        "--only", default="", help="comma-separated methods (the full cache always runs)"
    )
    args = ap.parse_args(argv)
    from kvprune import KVPruneCache
    from transformers import AttentionInterface

    from tensor_utils_dev.models import load_smollm2

    AttentionInterface.register(CAPTURE, capture_attention)
    try:
        model, tok = load_smollm2()
    except Exception as e:
        print(f"bench_decode_cpu: cannot load SmolLM2: {e}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else results_dir(__file__) / "decode_smoke_cpu.csv"
    todo = methods()
    only = set(filter(None, args.only.split(",")))
    if only:
        todo = {k: v for k, v in todo.items() if k == "full" or k in only}
    for ctx in (int(x) for x in args.contexts.split(",")):
        doc = documents(tok, ctx, 1, 1)
        if not doc:  # shorter documents than ctx: repeat the longest
            doc = [(documents(tok, 64, 1, 0)[0] * (ctx // 64 + 1))[:ctx]]
        ids = torch.tensor([doc[0][:ctx]])
        states, logits = prefill(model, ids)
        first = int(logits.argmax())
        times: dict[str, list[float]] = {m: [] for m in todo}
        kept: dict[str, float] = {}
        names = list(todo)
        for r in range(args.rounds):
            if args.mode == "steps":
                caches = {n: build_cache(model, tok, todo[n], states, ids) for n in names}
                for name, cache in caches.items():
                    if isinstance(cache, KVPruneCache):
                        kept[name] = cache.report().kept_fraction
                for name, ts in time_steps(model, caches, ids, first, args.new).items():
                    times[name] += ts
                del caches
                print(f"ctx {ctx} round {r} done", flush=True)
                continue
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                policy = todo[name]
                cache = build_cache(model, tok, policy, states, ids)
                if isinstance(cache, KVPruneCache):
                    kept[name] = cache.report().kept_fraction
                times[name].append(time_generate(model, tok, cache, ids, first, args.new))
                print(
                    f"ctx {ctx} round {r} {name}: {times[name][-1] * 1e3:.1f} ms/token", flush=True
                )
        base = statistics.median(times["full"])
        rows = []
        for name in todo:
            med = statistics.median(times[name])
            rows.append(
                dict(
                    model="smollm2",
                    context=ctx,
                    method=name,
                    mode=args.mode,
                    new_tokens=args.new,
                    rounds=args.rounds,
                    kept_fraction=round(kept.get(name, 1.0), 4),
                    ms_per_token=round(med * 1e3, 2),
                    vs_full=round(med / base, 3),
                    threads=torch.get_num_threads(),
                )
            )
        write_csv(out, rows)
        for row in rows:
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
