"""Which policy to use: needle retrieval and perplexity at equal memory (CPU).

    python packages/kvprune/benchmarks/bench_quality.py                  # small smoke run
    python packages/kvprune/benchmarks/bench_quality.py --model smollm2 --contexts 2048,4096 \\
        --depths 10 --ppl-docs 0 --out results/quality_smollm2_cpu.csv
    python packages/kvprune/benchmarks/bench_quality.py --model qwen2.5-coder-0.5b --contexts "" \\
        --ppl-docs 16 --ppl-ctx 512 --ppl-cont 64 --fractions 0.7 --out results/ppl_qwen_cpu.csv

For every prompt the model runs once (SDPA, uncompressed), recording each layer's post-RoPE
queries/keys/values; every policy then compresses that same prefill
(``kvprune.cache.prefill_all``: each profiled attention computed once) and decodes from it, so the
comparison costs one prefill per prompt. Methods at kept fractions 70/50/30% (30/50/70% freed): FastGen (the paper's ladder,
per-layer threshold fitted to the fraction), AdaptiveFastGen, SnapKV, H2O, StreamingLLM, TOVA;
plus Full and FastGen at the paper's T=0.95.

(a) needle: a passcode at depths 0-100% of a haystack (``quality_cases``); up to
    ``NEEDLE_TOKENS`` greedy tokens (stopping once the passcode is there); success = the
    passcode appears in the answer.
(b) ppl: a document's first ``--ppl-ctx`` tokens are the prompt; the next ``--ppl-cont`` are
    scored through the compressed cache (teacher forcing, decoding-time eviction runs); rows
    carry the summed negative log-likelihood so perplexity pools over documents.

Every row records the kept fraction of the prompt's KV entries right after compression.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from quality_cases import NEEDLE_TOKENS, documents, needle_cases, needle_prompt

from tensor_utils_dev.bench import results_dir, write_csv

CAPTURE = "kvprune_capture"
STATES: dict[int, tuple] = {}


def capture_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    STATES[module.layer_idx] = (query, key, value)
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kw
    )


def load(name: str):
    from tensor_utils_dev import models

    if name == "smollm2":
        return models.load_smollm2()
    if name.startswith("qwen2.5-coder-"):
        return models.load_qwen_coder(name.removeprefix("qwen2.5-coder-"))
    raise SystemExit(f"bench_quality: unknown model {name!r}")


def methods(fractions, ablate=(0.5, 0.7)):
    """(name, target kept fraction, policy) of every method; the ablations of
    AdaptiveFastGen and HybridFastGen at the fractions in ``ablate``."""
    import kvprune as kp

    out = [("full", 1.0, kp.Full()), ("fastgen_t0.95", None, kp.FastGen(recovery=0.95))]
    for kept in fractions:
        out += [
            ("fastgen", kept, kp.FastGen(kept_fraction=kept)),
            ("adaptive_fastgen", kept, kp.AdaptiveFastGen(kept_fraction=kept)),
            ("snapkv", kept, kp.SnapKV(kept_fraction=kept)),
            ("h2o", kept, kp.H2O(kept_fraction=kept)),
            ("streamingllm", kept, kp.StreamingLLM(kept_fraction=kept)),
            ("tova", kept, kp.TOVA(kept_fraction=kept)),
        ]
        out.append(("hybrid_fastgen", kept, kp.HybridFastGen(kept_fraction=kept)))
        if kept in ablate:  # HybridFastGen with one of its settings back at AdaptiveFastGen's
            out += [
                ("hybrid_fastgen_adakv", kept, kp.HybridFastGen(kept_fraction=kept, alpha=0.2)),
                (
                    "hybrid_fastgen_window_votes",
                    kept,
                    kp.HybridFastGen(kept_fraction=kept, prompt_share=0.0),
                ),
                (
                    "hybrid_fastgen_no_recent",
                    kept,
                    kp.HybridFastGen(kept_fraction=kept, recent_share=0.0),
                ),
                (
                    "hybrid_fastgen_no_structural",
                    kept,
                    kp.HybridFastGen(kept_fraction=kept, structural_recovery=1.0),
                ),
            ]
        if kept in ablate:  # ablation of AdaptiveFastGen's two departures from plain SnapKV
            out += [
                (
                    "adaptive_fastgen_uniform",
                    kept,
                    kp.AdaptiveFastGen(kept_fraction=kept, alpha=1.0),
                ),
                (
                    "adaptive_fastgen_no_structural",
                    kept,
                    kp.AdaptiveFastGen(kept_fraction=kept, structural_recovery=1.0),
                ),
            ]
    return out


@torch.no_grad()
def prefill(model, ids):
    STATES.clear()
    model.set_attn_implementation(CAPTURE)
    try:
        logits = model(ids, use_cache=False, logits_to_keep=1).logits[0, -1]
    finally:
        model.set_attn_implementation("sdpa")
    return [STATES[i] for i in range(len(STATES))], logits


@torch.no_grad()
def greedy(model, cache, first: int, new: int, eos, found=None) -> list[int]:
    """Up to ``new`` greedy tokens; stops at EOS, or once ``found(tokens)`` says the answer
    holds the needle (what follows cannot change the outcome)."""
    toks = [first]
    while len(toks) < new and toks[-1] not in eos and not (found and found(toks)):
        step = torch.tensor([[toks[-1]]], device=model.device)
        logits = model(step, cache=cache, logits_to_keep=1).logits
        toks.append(int(logits[0, -1].argmax()))
    return toks


@torch.no_grad()
def continuation_nll(model, cache, first_logits, cont: list[int]) -> float:
    nll = -torch.log_softmax(first_logits.float(), -1)[cont[0]]
    if len(cont) > 1:
        logits = model(torch.tensor([cont[:-1]], device=model.device), cache=cache).logits[0]
        lp = torch.log_softmax(logits.float(), -1).cpu()
        nll = nll.cpu() - lp[torch.arange(len(cont) - 1), torch.tensor(cont[1:])].sum()
    return float(nll)


def compress_all(model, tok, todo, states, ids):
    """One cache per method, all from the same prefill (each profile computed once)."""
    from kvprune import KVPruneCache
    from kvprune.cache import prefill_all

    caches = [KVPruneCache(model, policy, tok) for _, _, policy in todo]
    t0 = time.time()
    prefill_all(caches, states, ids)
    per = (time.time() - t0) / max(1, len(caches))
    return [(c, c.report().kept_fraction) for c in caches], per


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--contexts", default="512", help="haystack lengths in tokens")
    ap.add_argument("--depths", type=int, default=3, help="depths evenly over 0..100%%")
    ap.add_argument("--per-depth", type=int, default=1, help="needle cases per depth")
    ap.add_argument("--fractions", default="0.7,0.5,0.3", help="kept fractions")
    ap.add_argument("--ppl-docs", type=int, default=1)
    ap.add_argument("--ppl-ctx", type=int, default=512)
    ap.add_argument("--ppl-cont", type=int, default=64)
    ap.add_argument(
        "--cases", default="", help="START:STOP slice of the needle cases (split or resume a run)"
    )
    ap.add_argument("--only", default="", help="comma-separated method names to run")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="where the model runs (cpu, cuda)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AttentionInterface

    AttentionInterface.register(CAPTURE, capture_attention)
    out = Path(args.out) if args.out else results_dir(__file__) / "quality_smoke_cpu.csv"
    try:
        model, tok = load(args.model)
        model = model.to(args.device)
    except Exception as e:  # one line: a missing model wheel is an environment problem
        print(f"bench_quality: cannot load {args.model}: {e}", file=sys.stderr)
        return 1
    fracs = [float(x) for x in args.fractions.split(",")]
    only = set(filter(None, args.only.split(",")))
    todo = [m for m in methods(fracs) if not only or m[0] in only]
    eos = {
        tok.eos_token_id,
        *(
            [model.generation_config.eos_token_id]
            if isinstance(model.generation_config.eos_token_id, int)
            else (model.generation_config.eos_token_id or [])
        ),
    }
    depths = [i / max(1, args.depths - 1) for i in range(args.depths)]
    contexts = [int(x) for x in args.contexts.split(",") if x]
    base = dict(model=args.model)
    t_all = time.time()
    cases = needle_cases(contexts, depths, args.per_depth)
    if args.cases:
        start, _, stop = args.cases.partition(":")
        cases = cases[int(start or 0) : int(stop) if stop else None]
    for ctx, depth, case, code in cases:
        ids = tok(needle_prompt(tok, ctx, depth, code), return_tensors="pt")["input_ids"]
        ids = ids.to(args.device)
        t0 = time.time()
        states, logits = prefill(model, ids)
        t_pre = time.time() - t0
        first = int(logits.argmax())
        rows = []
        built, t_compress = compress_all(model, tok, todo, states, ids)
        del states
        for (name, kept, _policy), (cache, kept_real) in zip(todo, built, strict=True):
            t1 = time.time()
            found = lambda toks, code=code: code in tok.decode(toks)  # noqa: E731
            answer = tok.decode(greedy(model, cache, first, NEEDLE_TOKENS, eos, found))
            rows.append(
                dict(
                    base,
                    bench="needle",
                    ctx=ctx,
                    prompt_tokens=ids.shape[1],
                    depth=depth,
                    case=case,
                    method=name,
                    target_kept=kept,
                    kept_fraction=round(kept_real, 4),
                    success=int(code in answer),
                    answer=answer.strip().replace("\n", " ")[:40],
                    seconds=round(time.time() - t1 + t_compress, 2),
                )
            )
        del built
        write_csv(out, rows)
        hits = ", ".join(f"{r['method']}@{r['target_kept']}:{r['success']}" for r in rows)
        print(
            f"needle ctx={ctx} depth={depth:.2f} case={case} prefill {t_pre:.0f}s "
            f"total {time.time() - t_all:.0f}s: {hits}",
            flush=True,
        )
    for i, doc in enumerate(documents(tok, args.ppl_ctx, args.ppl_docs, args.ppl_cont)):
        ids = torch.tensor([doc[: args.ppl_ctx]], device=args.device)
        states, logits = prefill(model, ids)
        rows = []
        built, _ = compress_all(model, tok, todo, states, ids)
        del states
        for (name, kept, _policy), (cache, kept_real) in zip(todo, built, strict=True):
            nll = continuation_nll(model, cache, logits, doc[args.ppl_ctx :])
            rows.append(
                dict(
                    base,
                    bench="ppl",
                    ctx=args.ppl_ctx,
                    prompt_tokens=args.ppl_ctx,
                    doc=i,
                    method=name,
                    target_kept=kept,
                    kept_fraction=round(kept_real, 4),
                    nll=round(nll, 4),
                    tokens=args.ppl_cont,
                    ppl=round(math.exp(nll / args.ppl_cont), 4),
                )
            )
        del built
        write_csv(out, rows)
        print(
            f"ppl doc {i}: "
            + ", ".join(f"{r['method']}@{r['target_kept']}:{r['ppl']}" for r in rows),
            flush=True,
        )
    print(f"rows in {out} ({time.time() - t_all:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
