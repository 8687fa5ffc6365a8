"""Tour part: FastGen (T=0.95) versus the full cache on the real SmolLM2, one long prompt."""

from __future__ import annotations

import time


def long_prompt(tokenizer, target_tokens: int = 900) -> str:
    """A real-text chat prompt: the start of the stdlib ``argparse`` docs (ships with Python)."""
    import argparse
    import inspect

    text = inspect.getsource(argparse)
    ids = tokenizer(text)["input_ids"][:target_tokens]
    excerpt = tokenizer.decode(ids)
    messages = [
        {
            "role": "user",
            "content": "Read this Python source and explain what the module does.\n\n" + excerpt,
        }
    ]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def run(ctx) -> list[str]:
    import torch
    from kvprune import FastGen, KVPruneCache
    from kvprune.generate import cache_kwarg
    from transformers import AutoModelForCausalLM, AutoTokenizer

    threads = torch.get_num_threads()
    # One intra-op thread: the decode step is many small ops, which extra threads slow down
    # on a busy 2-core machine (measured 3.5 ms vs 50 ms for one ragged attention call).
    torch.set_num_threads(1)
    try:
        return _run(
            ctx, torch, AutoModelForCausalLM, AutoTokenizer, FastGen, KVPruneCache, cache_kwarg
        )
    finally:
        torch.set_num_threads(threads)


def _run(ctx, torch, AutoModelForCausalLM, AutoTokenizer, FastGen, KVPruneCache, cache_kwarg):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(ctx.model_dir, dtype=torch.float32)
    model = model.to(ctx.device).eval()
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_dir)
    inputs = tokenizer(long_prompt(tokenizer), return_tensors="pt").to(ctx.device)
    n_prompt = inputs["input_ids"].shape[1]
    new_tokens = 32
    config = model.config
    row_bytes = 2 * config.num_key_value_heads * config.head_dim * 4  # K + V, float32

    t0 = time.perf_counter()
    full = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
    t_full = time.perf_counter() - t0
    cached_tokens = full.shape[1] - 1  # the last token is never fed back
    full_bytes = cached_tokens * config.num_hidden_layers * row_bytes

    cache = KVPruneCache(model, FastGen(recovery=0.95), tokenizer)
    t0 = time.perf_counter()
    fast = model.generate(
        **inputs, max_new_tokens=new_tokens, do_sample=False, **{cache_kwarg(model): cache}
    )
    t_fast = time.perf_counter() - t0
    report = cache.report()
    mem = cache.memory()
    req = report.requests[0]
    a = full[0, n_prompt:].tolist()
    b = fast[0, n_prompt:].tolist()
    same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), len(a))
    counts = ", ".join(f"{k}={v}" for k, v in sorted(report.policy_counts().items()))
    answer = tokenizer.decode(fast[0, n_prompt:], skip_special_tokens=True).strip()
    return [
        f"prompt {n_prompt} tokens (argparse source excerpt), {new_tokens} new tokens, greedy",
        f"full cache: KV {full_bytes / 1e6:.2f} MB ({cached_tokens} tokens x 30 layers x 3 KV "
        f"heads, float32), generate {t_full:.1f} s",
        f"FastGen T=0.95: KV {mem['kv_allocated'] / 1e6:.2f} MB allocated "
        f"({mem['kv_live'] / 1e6:.2f} MB live, {req.kept_fraction:.1%} of entries kept, "
        f"+{mem['metadata'] / 1e6:.2f} MB metadata), freed {req.freed_bytes / 1e6:.2f} MB; "
        f"generate {t_fast:.1f} s",
        f"KV heads per policy: {counts}",
        f"outputs agree: {a == b} (first {same} of {len(a)} tokens identical)",
        f"FastGen answer: {answer[:120]!r}",
    ]


if __name__ == "__main__":
    from pathlib import Path
    from types import SimpleNamespace

    from tensor_utils_dev.models import smollm2_dir

    for line in run(SimpleNamespace(model_dir=smollm2_dir(), workdir=Path("."), device="cpu")):
        print(line)
