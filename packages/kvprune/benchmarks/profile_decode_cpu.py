"""Where one decode step's time goes on the CPU: kvprune's cache work against ``DynamicCache``.

    OMP_NUM_THREADS=1 python packages/kvprune/benchmarks/profile_decode_cpu.py [--rounds 4]

SmolLM2-135M-Instruct, float32, one thread, a 1k-token document prompt (recorded prefill, as in
``bench_decode_cpu.py``). Each method decodes ``--steps`` tokens by direct model calls; the
cache's parts are timed by wrapping them (wall time summed over the 30 layers of a step):
``cache_update`` (``DynamicLayer.update``: concatenation; ``KVPruneLayer.update``: token
classes + ``store_append``), ``sdpa_attention`` (the full cache) or ``ragged_attention``
(kvprune's decode attention), ``after_step`` (score accumulation and eviction). Methods rotate
order every round; medians over every step after the first of each run.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_decode_cpu import build_cache
from bench_quality import CAPTURE, capture_attention, prefill
from quality_cases import documents


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import kvprune as kp
    import transformers.integrations.sdpa_attention as sa
    from kvprune import cache as kc
    from kvprune import storage as ks
    from transformers import AttentionInterface, cache_utils

    from tensor_utils_dev.models import load_smollm2

    acc: dict[str, float] = collections.defaultdict(float)

    def wrap(obj, name: str, label: str) -> None:
        f = getattr(obj, name)

        def timed(*a, **k):
            t = time.perf_counter()
            r = f(*a, **k)
            acc[label] += time.perf_counter() - t
            return r

        setattr(obj, name, timed)

    wrap(kc.KVPruneLayer, "update", "cache_update")
    wrap(ks.RaggedStore, "append", "store_append")
    wrap(kc, "ragged_decode_attention", "ragged_attention")
    wrap(ks.RaggedStore, "after_step", "after_step")
    wrap(ks.Arena, "flush", "finish_step")
    wrap(cache_utils.DynamicLayer, "update", "cache_update")
    wrap(sa, "sdpa_attention_forward", "sdpa_attention")  # the full cache's attention
    AttentionInterface.register("sdpa", sa.sdpa_attention_forward)
    AttentionInterface.register(CAPTURE, capture_attention)
    try:
        model, tok = load_smollm2()
    except Exception as e:
        print(f"profile_decode_cpu: cannot load SmolLM2: {e}", file=sys.stderr)
        return 1
    ctx = args.context
    ids = torch.tensor([documents(tok, ctx, 1, 1)[0][:ctx]])
    states, logits = prefill(model, ids)
    first = int(logits.argmax())
    policies = {
        "full": None,
        "kvprune_full": kp.Full(),
        "adaptive_fastgen_0.5": kp.AdaptiveFastGen(kept_fraction=0.5),
        "h2o_0.5": kp.H2O(kept_fraction=0.5),
        "fastgen_t0.95": kp.FastGen(recovery=0.95),
        "streamingllm_0.5": kp.StreamingLLM(kept_fraction=0.5),
        "tova_0.5": kp.TOVA(kept_fraction=0.5),
    }
    steps: dict[str, list[float]] = {k: [] for k in policies}
    parts: dict[str, dict[str, list[float]]] = {k: collections.defaultdict(list) for k in policies}
    names = list(policies)
    for r in range(args.rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            cache = build_cache(model, tok, policies[name], states, ids)
            x, pos = torch.tensor([[first]]), ctx
            with torch.no_grad():
                for i in range(args.steps):
                    acc.clear()
                    t = time.perf_counter()
                    out = model(
                        input_ids=x,
                        past_key_values=cache,
                        use_cache=True,
                        attention_mask=torch.ones(1, pos + 1, dtype=torch.long),
                    )
                    if i:  # the first step warms up
                        steps[name].append(time.perf_counter() - t)
                        for label, v in acc.items():
                            parts[name][label].append(v)
                    x, pos = out.logits[:, -1:].argmax(-1), pos + 1
    base = statistics.median(steps["full"])
    for name in names:
        m = statistics.median(steps[name])
        detail = ", ".join(
            f"{label} {statistics.median(v) * 1e3:.1f}" for label, v in sorted(parts[name].items())
        )
        print(f"{name}: step {m * 1e3:.1f} ms ({m / base:.2f}x) | ms per step: {detail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
