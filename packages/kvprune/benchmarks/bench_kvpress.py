"""kvpress's presses on the same prompts and metrics as ``bench_quality.py`` (SmolLM2, CPU).

kvpress 0.5.5 needs transformers < 5.3, so this runs in its own environment and does not import
kvprune (only the prompt builders of ``bench_quality.py``, which import neither kvprune nor
anything beyond torch/transformers at module level)::

    uv venv /tmp/kvpress-env && uv pip install -p /tmp/kvpress-env torch==2.15.0 kvpress==0.5.5 'transformers<5.3'
    PYTHONPATH=shared/tensor-utils/src /tmp/kvpress-env/bin/python \\
        packages/kvprune/benchmarks/bench_kvpress.py --model-dir <SmolLM2 safetensors dir>

Protocol, as in ``bench_quality.py``: the whole prompt is prefilled under the press (kvpress
compresses at prefill only; later tokens are appended uncompressed, with their true positions
passed as ``position_ids`` as kvpress's own pipeline does), then (a) perplexity of the next 32
document tokens by teacher forcing, (b) 16 greedy tokens for the needle prompt (hit = the
passcode appears), (c) the greedy prefix agreeing with the no-press run, out of 32.

Compression ratio per prompt = 1 - the kept fraction FastGen T=0.95 reached on that same
prompt in ``results/quality_cpu.csv`` (``--match``), so the presses run at kvprune's matched
fractions. ``kept_fraction`` is what the cache physically holds after the prompt (AdaKV masks
rather than frees, so it stays 1.0; its nominal kept share is 1 - ``compression_ratio``).
Rows go to ``results/quality_kvpress_cpu.csv``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from bench_quality import (  # noqa: E402  (prompt builders shared with bench_quality)
    AGREE,
    NEEDLE_TOKENS,
    documents,
    haystack,
    needle_code,
    sweep_plan,
)

MATCH_T = "fastgen_0.95"


SKIP: set[str] = set()


def presses(ratio: float):
    import kvpress as kp

    every = {
        "kvpress_streamingllm": kp.StreamingLLMPress(compression_ratio=ratio),
        "kvpress_snapkv": kp.SnapKVPress(compression_ratio=ratio),
        "kvpress_tova": kp.TOVAPress(compression_ratio=ratio),
        "kvpress_observed_attention": kp.ObservedAttentionPress(compression_ratio=ratio),
        "kvpress_knorm": kp.KnormPress(compression_ratio=ratio),
        "kvpress_expected_attention": kp.ExpectedAttentionPress(compression_ratio=ratio),
        "kvpress_adakv_expected_attention": kp.AdaKVPress(
            kp.ExpectedAttentionPress(compression_ratio=ratio)
        ),
    }
    return {k: v for k, v in every.items() if k not in SKIP}


def prefill(model, press, ids):
    from transformers import DynamicCache

    cache = DynamicCache()
    eager = press is not None and type(press).__name__ == "ObservedAttentionPress"
    if eager:  # the press reads attention weights: eager attention while it runs
        model.set_attn_implementation("eager")
    try:
        if press is None:
            out = model(ids, past_key_values=cache)
        else:
            with press(model):
                out = model(ids, past_key_values=cache)
    finally:
        if eager:
            model.set_attn_implementation("sdpa")
    kept = cache.layers[0].keys.shape[-2] / ids.shape[1]
    return out.logits[0, -1], cache, kept


def step(model, cache, tok: int, pos: int):
    out = model(torch.tensor([[tok]]), past_key_values=cache, position_ids=torch.tensor([[pos]]))
    return out.logits[0, -1]


@torch.no_grad()
def run_ppl(model, press, ids, ctx):
    logits, cache, kept = prefill(model, press, torch.tensor([ids[:ctx]]))
    nll = 0.0
    for i, tok in enumerate(ids[ctx:]):
        nll -= torch.log_softmax(logits.float(), -1)[tok].item()
        logits = step(model, cache, tok, ctx + i)
    return math.exp(nll / (len(ids) - ctx)), kept


@torch.no_grad()
def run_greedy(model, press, prompt: torch.Tensor, new: int):
    logits, cache, kept = prefill(model, press, prompt)
    n = prompt.shape[1]
    toks = []
    for i in range(new):
        tok = int(logits.argmax())
        toks.append(tok)
        if len(toks) == new:
            break
        logits = step(model, cache, tok, n + i)
    return toks, kept


def matched_ratios(path: Path) -> dict:
    out = {}
    if not path.exists():
        return out
    for r in csv.DictReader(path.open()):
        if r["method"] == MATCH_T:
            key = (r["bench"], r["doc"], r["context"], r.get("depth") or "")
            out[key] = 1.0 - float(r["kept_fraction"])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--match", default=str(HERE / "results" / "quality_cpu.csv"))
    parser.add_argument("--default-ratio", type=float, default=0.4)
    parser.add_argument("--out", default=str(HERE / "results" / "quality_kvpress_cpu.csv"))
    parser.add_argument("--quick", action="store_true", help="one document, one needle")
    parser.add_argument("--benches", default="ppl,agree,needle", help="comma list")
    parser.add_argument("--skip", default="", help="comma list of press names to leave out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    SKIP.update(x for x in args.skip.split(",") if x)
    benches = set(args.benches.split(","))
    import kvpress
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    model.set_attn_implementation("sdpa")
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    ratios = matched_ratios(Path(args.match))
    plan = sweep_plan(args.quick)
    tags = dict(
        device="cpu",
        torch=torch.__version__,
        transformers=transformers.__version__,
        kvpress=getattr(kvpress, "__version__", "0.5.5"),
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
    )
    rows: list[dict] = []
    t0 = time.perf_counter()

    def emit(**row):
        rows.append({**row, **tags})
        with open(args.out, "w", newline="") as f:  # rewritten each row: partial runs count
            keys = list(dict.fromkeys(k for r in rows for k in r))
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)

    ctx = plan["ppl_context"]
    docs = documents(tokenizer, ctx, plan["docs"]) if benches & {"ppl", "agree"} else []
    for d, ids in enumerate(docs):
        ratio_p = ratios.get(("ppl", str(d), str(ctx), ""), args.default_ratio)
        ratio_a = ratios.get(("agree", str(d), str(ctx), ""), args.default_ratio)
        prompt = torch.tensor([ids[:ctx]])
        if "ppl" in benches:
            ppl, kept = run_ppl(model, None, ids, ctx)
            emit(
                bench="ppl",
                method="kvpress_none",
                doc=d,
                context=ctx,
                kept_fraction=kept,
                value=ppl,
            )
            print(f"ppl doc{d} no press: {ppl:.3f}", flush=True)
        for name, press in presses(ratio_p).items() if "ppl" in benches else ():
            ppl, kept = run_ppl(model, press, ids, ctx)
            emit(
                bench="ppl",
                method=name,
                matched_to=MATCH_T,
                compression_ratio=round(ratio_p, 4),
                doc=d,
                context=ctx,
                kept_fraction=round(kept, 4),
                value=ppl,
            )
            print(f"ppl doc{d} {name}: kept {kept:.3f} ppl {ppl:.3f}", flush=True)
        if "agree" in benches:
            ref, _ = run_greedy(model, None, prompt, AGREE)
            emit(
                bench="agree",
                method="kvpress_none",
                doc=d,
                context=ctx,
                kept_fraction=1.0,
                value=1.0,
            )
        for name, press in presses(ratio_a).items() if "agree" in benches else ():
            toks, kept = run_greedy(model, press, prompt, AGREE)
            same = next(
                (i for i, (a, b) in enumerate(zip(toks, ref, strict=True)) if a != b), AGREE
            )
            emit(
                bench="agree",
                method=name,
                matched_to=MATCH_T,
                compression_ratio=round(ratio_a, 4),
                doc=d,
                context=ctx,
                kept_fraction=round(kept, 4),
                value=same / AGREE,
            )
            print(f"agree doc{d} {name}: kept {kept:.3f} prefix {same}/{AGREE}", flush=True)
    for ctx in plan["needle_contexts"] if "needle" in benches else ():
        for i, depth in enumerate(plan["depths"]):
            code = needle_code(i, ctx)
            prompt = tokenizer(haystack(tokenizer, ctx, depth, code), return_tensors="pt")[
                "input_ids"
            ]
            ratio = ratios.get(("needle", "-1", str(ctx), str(depth)), args.default_ratio)
            for name, press in [("kvpress_none", None), *presses(ratio).items()]:
                toks, kept = run_greedy(model, press, prompt, NEEDLE_TOKENS)
                answer = tokenizer.decode(toks)
                emit(
                    bench="needle",
                    method=name,
                    matched_to="" if press is None else MATCH_T,
                    compression_ratio=0.0 if press is None else round(ratio, 4),
                    doc=-1,
                    context=ctx,
                    depth=depth,
                    kept_fraction=round(kept, 4),
                    value=float(code in answer),
                )
                print(
                    f"needle ctx{ctx} d{depth} {name}: kept {kept:.3f} "
                    f"{'hit' if code in answer else 'miss'} {answer!r}",
                    flush=True,
                )
    print(f"done in {time.perf_counter() - t0:.0f} s ({len(rows)} rows -> {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
