"""Why does FastGen lose the needle? (SmolLM2, CPU, one 573-token needle prompt at depth 0.5.)

    python packages/kvprune/benchmarks/diag_needle.py [--model-dir DIR]

Per (layer, KV head): the policy FastGen chose and whether every passcode token survived the
prompt; then the rank of the passcode tokens in the frequent (heavy-hitter) score, accumulated
over all prompt rows as the paper does, against the last 32 rows only (the question), next to
the frequent budget k_f = 0.3 n. Output kept in ``results/needle_diag_cpu.log``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))


def needle_positions(tokenizer, ids, code: str) -> list[int]:
    toks = [tokenizer.decode([i]) for i in ids[0].tolist()]
    start = "".join(toks).index(code)
    pos, acc = [], 0
    for i, t in enumerate(toks):
        if acc + len(t) > start and acc < start + len(code):
            pos.append(i)
        acc += len(t)
    return pos


def ranks(attn: torch.Tensor, rows: slice, pos: list[int]) -> torch.Tensor:
    """Mean rank (0 = highest) of the needle tokens in the attention summed over ``rows`` and
    the group, per KV head: ``attn`` is [B, H, G, n, n]."""
    score = attn[:, :, :, rows].sum((2, 3))[0]  # [H, n]
    order = score.argsort(-1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(score.shape[-1]).expand_as(order))
    return rank[:, pos].float().mean(-1)


def main(argv=None) -> int:
    import kvprune.cache as cache_mod
    from bench_quality import haystack, load_model
    from kvprune import FastGen, KVPruneCache
    from kvprune.generate import cache_kwarg

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, tok = load_model(args.model_dir)
    kw = cache_kwarg(model)
    code = "5711"
    ids = tok(haystack(tok, 512, 0.5, code), return_tensors="pt")["input_ids"]
    n = ids.shape[1]
    pos = needle_positions(tok, ids, code)
    print("n", n, "needle token positions", pos, [tok.decode([int(ids[0, i])]) for i in pos])
    for t in (0.9, 0.95):
        cache = KVPruneCache(model, FastGen(recovery=t), tok)
        with torch.no_grad():
            model(ids, **{kw: cache})
        kept_heads, total, by_policy = 0, 0, {}
        for layer in cache.layers:
            for h in range(layer.n_kv):
                kept = set(layer.kept_positions(0, h))
                name = layer.policy_names[int(layer.policy[h])]
                ok = all(p in kept for p in pos)
                by_policy.setdefault(name, [0, 0])
                by_policy[name][0] += 1
                by_policy[name][1] += ok
                kept_heads += ok
                total += 1
        print(
            f"T={t}: kept frac {cache.report().kept_fraction:.3f}; heads keeping all needle "
            f"tokens {kept_heads}/{total}; by policy [heads, keeping] {by_policy}"
        )

    ranks_all, ranks_last = [], []
    original = cache_mod.RaggedLayer.finish_prefill

    def spy(self, query, key, value, mask, scale):
        b, hq, n_, d = query.shape
        h = key.shape[1]
        q = query.float().reshape(b, h, hq // h, n_, d)
        logits = torch.einsum("bhgrd,bhnd->bhgrn", q, key.float()) * scale
        causal = torch.ones(n_, n_, dtype=torch.bool).tril()
        attn = torch.softmax(logits.masked_fill(~causal, float("-inf")), -1)
        ranks_all.append(ranks(attn, slice(0, n_), pos))
        ranks_last.append(ranks(attn, slice(n_ - 32, n_), pos))
        return original(self, query, key, value, mask, scale)

    cache_mod.RaggedLayer.finish_prefill = spy
    try:
        cache = KVPruneCache(model, FastGen(recovery=0.95), tok)
        with torch.no_grad():
            model(ids, **{kw: cache})
    finally:
        cache_mod.RaggedLayer.finish_prefill = original
    ra, rl = torch.stack(ranks_all), torch.stack(ranks_last)
    k_f = int(0.3 * n)
    print(
        f"k_f = {k_f}; mean rank of needle tokens (all rows): {ra.mean():.1f}, heads with "
        f"rank < k_f: {(ra < k_f).sum().item()}/{ra.numel()}"
    )
    print(
        f"last 32 rows only: mean rank {rl.mean():.1f}, heads with rank < k_f: "
        f"{(rl < k_f).sum().item()}/{rl.numel()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
