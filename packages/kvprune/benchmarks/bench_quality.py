"""Quality versus memory on the real SmolLM2-135M-Instruct (CPU): FastGen at several T and the
baselines (StreamingLLM, H2O, SnapKV, TOVA) at the kept-KV fraction FastGen reached at T=0.95
on the same prompt, against the full cache.

    python packages/kvprune/benchmarks/bench_quality.py [--threads 1] [--quick]
    python packages/kvprune/benchmarks/bench_quality.py --benches ppl --no-agree --docs 8 \
        --cont 64 --t-values 0.9,0.92,0.95 --match-t 0.9 --out results/quality_ppl_wide_cpu.csv

Text is real English documentation shipped with Python (``pydoc_data.topics``).

(a) ``ppl``: the first ``ctx`` tokens of a document are the prompt (compressed by the method);
    the next ``--cont`` tokens (32) are fed one at a time through the cache (decoding-time
    eviction runs) and their perplexity is measured (teacher forcing). Each row also carries
    the summed negative log-likelihood, so perplexity can be pooled over documents.
(b) ``needle``: a passcode sentence is inserted at a depth of a haystack of ``ctx`` tokens
    (512 and 1024; depths 0.1 .. 0.9), the chat prompt asks for it, 16 tokens are decoded
    greedily; success = the passcode appears.
(c) ``agree``: greedy decoding of 32 tokens from the ppl prompts; the share of tokens before
    the first disagreement with the full cache.

Every row records the method, its kept fraction of the prompt's KV entries (after the prompt,
averaged over layers and heads) and the KV bytes allocated. Rows go to
``results/quality_cpu.csv``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from tensor_utils_dev.bench import write_csv

RESULTS = Path(__file__).parent / "results"
T_VALUES = (0.9, 0.95, 0.98)
MATCH_T = 0.95
CONT = 32
AGREE = 32
NEEDLE_TOKENS = 16


def sweep_plan(quick: bool = False) -> dict:
    """What is measured (shared with bench_kvpress.py so both run the same prompts)."""
    if quick:
        return dict(docs=1, ppl_context=512, needle_contexts=[512], depths=[0.5])
    return dict(
        docs=2, ppl_context=512, needle_contexts=[512, 1024], depths=[0.1, 0.3, 0.5, 0.7, 0.9]
    )


def needle_code(i: int, ctx: int) -> str:
    return str(4000 + 1237 * (i + 1) + ctx % 997)


def documents(tokenizer, ctx: int, count: int, cont: int = CONT) -> list[list[int]]:
    from pydoc_data.topics import topics

    docs = []
    for key in sorted(topics, key=lambda k: -len(topics[k])):
        ids = tokenizer(topics[key])["input_ids"]
        if len(ids) >= ctx + cont:
            docs.append(ids[: ctx + cont])
        if len(docs) == count:
            break
    return docs


def haystack(tokenizer, ctx: int, depth: float, code: str) -> str:
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in ("assignment", "class", "compound", "exceptions"))
    ids = tokenizer(text)["input_ids"][:ctx]
    hay = tokenizer.decode(ids)
    cut = hay.rfind("\n", 0, int(len(hay) * depth))
    cut = cut if cut > 0 else int(len(hay) * depth)
    needle = f"\nThe secret passcode is {code}. Remember it.\n"
    body = hay[:cut] + needle + hay[cut:]
    messages = [
        {
            "role": "user",
            "content": body + "\n\nWhat is the secret passcode? Answer with the number only.",
        }
    ]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def model_dir(path: str | None = None) -> Path:
    """The SmolLM2 safetensors directory: ``path``, else ``tensor_utils_dev.models.smollm2_dir()``."""
    from tensor_utils_dev.models import smollm2_dir

    return Path(path) if path else smollm2_dir()


def load_model(path: str | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = model_dir(path)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(d)


def make_cache(model, tokenizer, method: str, fraction: float | None):
    from kvprune import H2O, TOVA, FastGen, KVPruneCache, SnapKV, StreamingLLM
    from transformers import DynamicCache

    if method == "full":
        return DynamicCache(config=model.config)
    if method.startswith("fastgen"):
        # fastgen_<T> or fastgen_<T>_w<rows>: profile only the last <rows> prompt rows
        parts = method.split("_")
        extra = {"profile_window": int(parts[2][1:])} if len(parts) > 2 else {}
        policy = FastGen(recovery=float(parts[1]), **extra)
    else:
        policy = {
            "streamingllm": StreamingLLM,
            "h2o": H2O,
            "snapkv": SnapKV,
            "tova": TOVA,
        }[method](kept_fraction=fraction)
    return KVPruneCache(model, policy, tokenizer)


def prompt_fraction(cache) -> tuple[float, int]:
    """Kept fraction of the prompt's KV entries and KV bytes allocated, right after the prompt."""
    from kvprune import KVPruneCache

    if not isinstance(cache, KVPruneCache):
        layers = cache.layers
        return 1.0, sum(layer.keys.nbytes + layer.values.nbytes for layer in layers)
    kept = total = 0
    for layer in cache.layers:
        kept += int(layer.lengths.sum())
        total += int(layer.prompt_real.sum()) * layer.n_kv
    return kept / total, cache.memory()["kv_allocated"]


@torch.no_grad()
def run_ppl(model, kw, cache, ids: list[int], ctx: int):
    """``((perplexity, summed NLL), kept fraction, KV bytes)`` of the continuation."""
    prompt = torch.tensor([ids[:ctx]])
    out = model(prompt, **{kw: cache})
    frac, nbytes = prompt_fraction(cache)
    nll, logits = 0.0, out.logits[0, -1]
    for tok in ids[ctx:]:
        nll -= torch.log_softmax(logits.float(), -1)[tok].item()
        logits = model(torch.tensor([[tok]]), **{kw: cache}).logits[0, -1]
    return (math.exp(nll / (len(ids) - ctx)), nll), frac, nbytes


@torch.no_grad()
def run_greedy(model, kw, cache, prompt_ids: torch.Tensor, new: int):
    out = model(prompt_ids, **{kw: cache})
    frac, nbytes = prompt_fraction(cache)
    toks = []
    tok = out.logits[:, -1:].argmax(-1)
    for _ in range(new):
        toks.append(int(tok))
        if len(toks) == new:
            break
        tok = model(tok, **{kw: cache}).logits[:, -1:].argmax(-1)
    return toks, frac, nbytes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one document, one needle")
    parser.add_argument("--model-dir", default=None, help="SmolLM2 safetensors directory")
    parser.add_argument(
        "--benches", default="ppl,needle", help="comma list of ppl (with agree), needle"
    )
    parser.add_argument(
        "--windows",
        default="",
        help="comma list of FastGen profile windows (rows) to run instead of the default one; "
        "with it only full and FastGen run (no baselines, no greedy agreement)",
    )
    parser.add_argument("--out", default=None, help="CSV path (default results/quality_cpu.csv)")
    parser.add_argument("--docs", type=int, default=None, help="perplexity documents (2)")
    parser.add_argument("--cont", type=int, default=CONT, help="continuation tokens scored")
    parser.add_argument("--t-values", default=None, help="comma list of FastGen T (0.9,0.95,0.98)")
    parser.add_argument(
        "--match-t", type=float, default=MATCH_T, help="baselines run at the fraction of this T"
    )
    parser.add_argument("--no-agree", action="store_true", help="skip greedy agreement")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from kvprune.generate import cache_kwarg

    model, tokenizer = load_model(args.model_dir)
    plan = sweep_plan(args.quick)
    kw = cache_kwarg(model)
    t_values = [float(t) for t in args.t_values.split(",")] if args.t_values else T_VALUES
    if args.match_t not in t_values:
        parser.error(f"--match-t {args.match_t} must be one of the T values {t_values}")
    fast = [f"fastgen_{t}" for t in t_values]
    baselines = ["streamingllm", "h2o", "snapkv", "tova"]
    windows = [int(w) for w in args.windows.split(",") if w]
    if windows:
        fast = [f"fastgen_{t}_w{w}" for w in windows for t in t_values]
        baselines = []
    rows: list[dict] = []

    def methods_for(runner):
        """full, FastGen at each T, then each baseline at the kept fraction FastGen reached at
        T = MATCH_T on this prompt (one matched point keeps the CPU run short)."""
        results = [("full", None, *runner("full", None))]
        for m in fast:
            results.append((m, None, *runner(m, None)))
        if not baselines:
            return results
        match = next(r for r in results if r[0] == f"fastgen_{args.match_t}")
        for b in baselines:
            results.append((b, match[0], *runner(b, match[-2])))
        return results

    ctx_ppl = plan["ppl_context"]
    n_docs = args.docs or plan["docs"]
    t0 = time.perf_counter()
    docs = documents(tokenizer, ctx_ppl, n_docs, args.cont) if "ppl" in args.benches else []
    if len(docs) < n_docs:
        parser.error(f"only {len(docs)} documents hold {ctx_ppl + args.cont} tokens")
    for d, ids in enumerate(docs):

        def ppl_runner(method, frac, ids=ids):
            return run_ppl(model, kw, make_cache(model, tokenizer, method, frac), ids, ctx_ppl)

        for method, matched, (ppl, nll), frac, nbytes in methods_for(ppl_runner):
            rows.append(
                dict(
                    bench="ppl",
                    method=method,
                    matched_to=matched or "",
                    doc=d,
                    context=ctx_ppl,
                    kept_fraction=round(frac, 4),
                    kv_bytes=nbytes,
                    value=ppl,
                    nll_sum=nll,
                    tokens=args.cont,
                )
            )
            print(
                f"ppl doc{d} {method:>14} ({matched or '-'}): kept {frac:.3f} ppl {ppl:.3f}",
                flush=True,
            )

        if windows or args.no_agree:
            continue
        prompt = torch.tensor([ids[:ctx_ppl]])

        def greedy_runner(method, frac, prompt=prompt):
            return run_greedy(model, kw, make_cache(model, tokenizer, method, frac), prompt, AGREE)

        results = methods_for(greedy_runner)
        ref = results[0][2]
        for method, matched, toks, frac, nbytes in results:
            same = next(
                (i for i, (a, b) in enumerate(zip(toks, ref, strict=True)) if a != b), AGREE
            )
            rows.append(
                dict(
                    bench="agree",
                    method=method,
                    matched_to=matched or "",
                    doc=d,
                    context=ctx_ppl,
                    kept_fraction=round(frac, 4),
                    kv_bytes=nbytes,
                    value=same / AGREE,
                )
            )
            print(
                f"agree doc{d} {method:>14} ({matched or '-'}): kept {frac:.3f} prefix {same}/{AGREE}",
                flush=True,
            )

    out = RESULTS / ("quality_cpu_quick.csv" if args.quick else "quality_cpu.csv")
    if args.out:
        out = Path(args.out)
    written = 0

    def save():
        # write_csv appends: hand it only the rows not written yet
        nonlocal written
        if len(rows) > written:
            write_csv(out, rows[written:])
            written = len(rows)

    save()
    contexts = plan["needle_contexts"] if "needle" in args.benches else []
    for ctx in contexts:
        for i, depth in enumerate(plan["depths"]):
            code = needle_code(i, ctx)
            text = haystack(tokenizer, ctx, depth, code)
            prompt = tokenizer(text, return_tensors="pt")["input_ids"]

            def needle_runner(method, frac, prompt=prompt):
                return run_greedy(
                    model, kw, make_cache(model, tokenizer, method, frac), prompt, NEEDLE_TOKENS
                )

            for method, matched, toks, frac, nbytes in methods_for(needle_runner):
                answer = tokenizer.decode(toks)
                rows.append(
                    dict(
                        bench="needle",
                        method=method,
                        matched_to=matched or "",
                        doc=-1,
                        context=ctx,
                        depth=depth,
                        kept_fraction=round(frac, 4),
                        kv_bytes=nbytes,
                        value=float(code in answer),
                    )
                )
                print(
                    f"needle ctx{ctx} d{depth} {method:>14} ({matched or '-'}): kept {frac:.3f} "
                    f"{'hit' if code in answer else 'miss'} {answer!r}",
                    flush=True,
                )
        save()  # after each context: a cut-short run keeps what it measured
    print(f"done in {time.perf_counter() - t0:.0f} s")
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
