"""kvpress's presses on the prompts and metrics of ``bench_quality.py`` (CPU, its own env).

    uv venv /tmp/kvpress-env && uv pip install -p /tmp/kvpress-env torch==2.15.0 \\
        kvpress==0.5.5 'transformers<5.3'
    /tmp/kvpress-env/bin/python packages/kvprune/benchmarks/bench_kvpress.py \\
        --model-dir "$(python -c 'from tensor_utils_dev.models import smollm2_dir; print(smollm2_dir())')" \\
        --model smollm2 --contexts 2048,4096 --depths 11 --ppl-docs 4 \\
        --out packages/kvprune/benchmarks/results/quality_smollm2_kvpress_cpu.csv

kvpress compresses the prompt in a forward hook after each attention layer, from that layer's
input hidden states and cached keys/values; compression does not change the prefill's
outputs. So the prompt runs once (uncompressed, the hook's inputs recorded) and every press
applies its own ``compress`` to those inputs, exactly as its hook would; the compressed
``DynamicCache`` then decodes with explicit positions, as kvpress's pipeline does (needle:
greedy answer; ppl: the continuation scored in one teacher-forced call). Presses: the
scorer presses that need no attention matrix (SnapKV, TOVA, Knorm, ExpectedAttention,
StreamingLLM) at compression ratios 0.3/0.5/0.7.
"""

from __future__ import annotations

import argparse
import csv
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from quality_cases import NEEDLE_TOKENS, documents, needle_cases, needle_prompt

REQUIRES = "kvpress 0.5.5 in its own environment (transformers < 5.3): see the docstring"
CAPTURED: dict[int, tuple] = {}


def presses(ratio: float):
    import kvpress as kp  # pyright: ignore[reportMissingImports]  (its own environment)

    return {
        "kvpress_snapkv": kp.SnapKVPress(compression_ratio=ratio),
        "kvpress_tova": kp.TOVAPress(compression_ratio=ratio),
        "kvpress_knorm": kp.KnormPress(compression_ratio=ratio),
        "kvpress_expected_attention": kp.ExpectedAttentionPress(compression_ratio=ratio),
        "kvpress_streamingllm": kp.StreamingLLMPress(compression_ratio=ratio),
    }


def _record(module, args, kwargs, output):
    CAPTURED[module.layer_idx] = (module, kwargs)


@torch.no_grad()
def prefill(model, ids):
    from transformers import DynamicCache

    CAPTURED.clear()
    hooks = [
        layer.self_attn.register_forward_hook(_record, with_kwargs=True)
        for layer in model.model.layers
    ]
    try:
        cache = DynamicCache(config=model.config)
        logits = model(ids, past_key_values=cache, logits_to_keep=1).logits[0, -1]
    finally:
        for h in hooks:
            h.remove()
    return cache, logits


@torch.no_grad()
def compress(model, press, full):
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    if press is None:
        for i, layer in enumerate(full.layers):
            cache.update(layer.keys, layer.values, i)
        return cache
    press.post_init_from_model(model)
    for i, layer in enumerate(full.layers):
        module, kwargs = CAPTURED[i]
        k, v = press.compress(
            module, kwargs["hidden_states"], layer.keys, layer.values, None, kwargs
        )
        cache.update(k, v, i)
    return cache


@torch.no_grad()
def greedy(model, cache, first, n, new, eos, found=None):
    """As ``bench_quality.greedy``: stops at EOS or once ``found(tokens)`` holds."""
    toks = [first]
    while len(toks) < new and toks[-1] not in eos and not (found and found(toks)):
        pos = torch.tensor([[n + len(toks) - 1]])
        out = model(torch.tensor([[toks[-1]]]), past_key_values=cache, position_ids=pos)
        toks.append(int(out.logits[0, -1].argmax()))
    return toks


@torch.no_grad()
def continuation_nll(model, cache, first_logits, n, cont):
    nll = -torch.log_softmax(first_logits.float(), -1)[cont[0]]
    if len(cont) > 1:
        pos = torch.arange(n, n + len(cont) - 1)[None]
        logits = model(torch.tensor([cont[:-1]]), past_key_values=cache, position_ids=pos).logits[0]
        lp = torch.log_softmax(logits.float(), -1)
        nll = nll - lp[torch.arange(len(cont) - 1), torch.tensor(cont[1:])].sum()
    return float(nll)


def kept_fraction(cache, n):
    kept = sum(layer.keys.shape[2] for layer in cache.layers)
    return kept / (n * len(cache.layers))


def append(path: Path, rows, tags):
    rows = [{**r, **tags} for r in rows]
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--contexts", default="512")
    ap.add_argument("--depths", type=int, default=3)
    ap.add_argument("--per-depth", type=int, default=1)
    ap.add_argument("--ratios", default="0.3,0.5,0.7", help="compression ratios (freed)")
    ap.add_argument("--ppl-docs", type=int, default=1)
    ap.add_argument("--ppl-ctx", type=int, default=512)
    ap.add_argument("--ppl-cont", type=int, default=64)
    ap.add_argument(
        "--cases", default="", help="START:STOP slice of the needle cases (split or resume a run)"
    )
    ap.add_argument("--out", default="quality_kvpress_cpu.csv")
    args = ap.parse_args(argv)
    import kvpress  # noqa: F401  # pyright: ignore[reportMissingImports]  (its own environment)
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    model.set_attn_implementation("sdpa")
    for layer in model.model.layers:  # what BasePress.__call__ sets up for its presses
        layer.self_attn.rotary_emb = model.model.rotary_emb
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    from importlib.metadata import version

    tags = dict(
        device=f"{platform.machine()} cpu",
        torch=torch.__version__,
        transformers=transformers.__version__,
        kvpress=version("kvpress"),
    )
    out = Path(args.out)
    ratios = [float(x) for x in args.ratios.split(",")]
    todo = [("kvpress_none", 0.0, None)] + [
        (name, r, p) for r in ratios for name, p in presses(r).items()
    ]
    gen_eos = model.generation_config.eos_token_id
    eos = {tok.eos_token_id, *([gen_eos] if isinstance(gen_eos, int) else (gen_eos or []))}
    depths = [i / max(1, args.depths - 1) for i in range(args.depths)]
    contexts = [int(x) for x in args.contexts.split(",") if x]
    t_all = time.time()
    base = dict(model=args.model)
    cases = needle_cases(contexts, depths, args.per_depth)
    if args.cases:
        start, _, stop = args.cases.partition(":")
        cases = cases[int(start or 0) : int(stop) if stop else None]
    for ctx, depth, case, code in cases:
        ids = tok(needle_prompt(tok, ctx, depth, code), return_tensors="pt")["input_ids"]
        n = ids.shape[1]
        full, logits = prefill(model, ids)
        first = int(logits.argmax())
        rows = []
        for name, ratio, press in todo:
            cache = compress(model, press, full)
            kept = kept_fraction(cache, n)
            found = lambda toks, code=code: code in tok.decode(toks)  # noqa: E731
            answer = tok.decode(greedy(model, cache, first, n, NEEDLE_TOKENS, eos, found))
            rows.append(
                dict(
                    base,
                    bench="needle",
                    ctx=ctx,
                    prompt_tokens=n,
                    depth=depth,
                    case=case,
                    method=name,
                    target_kept=round(1 - ratio, 2),
                    kept_fraction=round(kept, 4),
                    success=int(code in answer),
                    answer=answer.strip().replace("\n", " ")[:40],
                )
            )
        append(out, rows, tags)
        hits = ", ".join(f"{r['method']}@{r['target_kept']}:{r['success']}" for r in rows)
        print(
            f"needle ctx={ctx} depth={depth:.2f} ({time.time() - t_all:.0f}s): {hits}", flush=True
        )
    for i, doc in enumerate(documents(tok, args.ppl_ctx, args.ppl_docs, args.ppl_cont)):
        ids = torch.tensor([doc[: args.ppl_ctx]])
        full, logits = prefill(model, ids)
        rows = []
        for name, ratio, press in todo:
            cache = compress(model, press, full)
            kept = kept_fraction(cache, args.ppl_ctx)  # before scoring appends to the cache
            nll = continuation_nll(model, cache, logits, args.ppl_ctx, doc[args.ppl_ctx :])
            rows.append(
                dict(
                    base,
                    bench="ppl",
                    ctx=args.ppl_ctx,
                    prompt_tokens=args.ppl_ctx,
                    doc=i,
                    method=name,
                    target_kept=round(1 - ratio, 2),
                    kept_fraction=round(kept, 4),
                    nll=round(nll, 4),
                    tokens=args.ppl_cont,
                    ppl=round(math.exp(nll / args.ppl_cont), 4),
                )
            )
        append(out, rows, tags)
        print(f"ppl doc {i} ({time.time() - t_all:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
