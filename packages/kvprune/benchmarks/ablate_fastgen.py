"""Why FastGen's perplexity lags H2O at equal memory on SmolLM2 (CPU): ablations on the
documents of the wider perplexity run (``bench_quality.py --docs 8 --cont 64``).

    python packages/kvprune/benchmarks/ablate_fastgen.py [--part rungs|recovery|both]

``rungs`` (documents 6, 7): FastGen T=0.90 with its full ladder, against the ladder cut to one
rung (special+punct+frequent+local, then without punct, then frequent+local alone), each next to
H2O at the kept fraction that variant reached.

``recovery`` (documents 6, 7, 0, 1): the recovery test judged on the last 64 profiled rows
(``FastGen(recovery_rows=64)``; heavy-hitter scores still sum every row) at T=0.90 and 0.95,
next to H2O at the same fraction, with the number of heads on each rung.

Perplexity of 64 teacher-forced tokens after a compressed 512-token prompt, eviction active.
Output: lines on stdout (``results/fastgen_ablation_cpu.log``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_quality import documents, load_model, run_ppl


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", default="both", choices=["rungs", "recovery", "both"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from kvprune import H2O, FastGen, KVPruneCache
    from kvprune.generate import cache_kwarg
    from transformers import DynamicCache

    model, tok = load_model()
    kw = cache_kwarg(model)
    docs = documents(tok, 512, 8, 64)

    def ppl(ids, policy=None):
        cache = DynamicCache(config=model.config) if policy is None else None
        cache = cache or KVPruneCache(model, policy, tok)
        (p, _nll), frac, _ = run_ppl(model, kw, cache, ids, 512)
        return p, frac, cache

    def line(d, name, p, p_full, frac, extra=""):
        print(
            f"doc{d} {name:14s} kept {frac:.3f} ppl {p:.3f} ({(p / p_full - 1) * 100:+.1f}%){extra}"
        )

    if args.part in ("rungs", "both"):
        variants = {
            "fastgen_0.9": {},
            "hybrid_only": dict(ladder=(("special", "punct", "frequent", "local"),)),
            "no_punct": dict(ladder=(("special", "frequent", "local"),)),
            "freq_local": dict(ladder=(("frequent", "local"),)),
        }
        for d in (6, 7):
            p_full, _, _ = ppl(docs[d])
            print(f"doc{d} full {p_full:.3f}", flush=True)
            for name, kwargs in variants.items():
                p, frac, _ = ppl(docs[d], FastGen(recovery=0.9, **kwargs))
                ph, frach, _ = ppl(docs[d], H2O(kept_fraction=frac))
                h2o = f" | h2o at {frach:.3f}: {ph:.3f} ({(ph / p_full - 1) * 100:+.1f}%)"
                line(d, name, p, p_full, frac, h2o)
    if args.part in ("recovery", "both"):
        for d in (6, 7, 0, 1):
            p_full, _, _ = ppl(docs[d])
            print(f"doc{d} full {p_full:.3f}", flush=True)
            for name, policy in (
                ("T0.9 all rows", FastGen(recovery=0.9)),
                ("T0.9 rec64", FastGen(recovery=0.9, recovery_rows=64)),
                ("T0.95 rec64", FastGen(recovery=0.95, recovery_rows=64)),
            ):
                p, frac, cache = ppl(docs[d], policy)
                line(d, name, p, p_full, frac, f" {dict(cache.report().policy_counts())}")
                if policy.recovery_rows is not None:
                    ph, frach, _ = ppl(docs[d], H2O(kept_fraction=frac))
                    print(
                        f"doc{d}   h2o at {frach:.3f}: {ph:.3f} ({(ph / p_full - 1) * 100:+.1f}%)"
                    )
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
