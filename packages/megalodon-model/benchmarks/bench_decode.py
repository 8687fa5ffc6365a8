"""Decoding on the CPU: cache memory and time per generated token at 1k / 8k / 64k tokens of
context, a small Megalodon against transformers' ``LlamaForCausalLM`` of the same width and depth
with its ``DynamicCache``.

    python bench_decode.py                                  # quick: contexts 1024 2048
    python bench_decode.py --contexts 1024 8192 65536       # the page's run

How each context is reached: Megalodon prefills the context in pieces of ``--prefill-piece``
tokens through its cache (the CEMA / TimestepNorm states carry it; only the current chunk's K/V
is kept). Llama's prefill at 64k would be a 64k x 64k attention on the CPU, so its cache is built
directly: a ``DynamicCache`` filled with ``context`` random K/V per layer (the tensors a prefill
would store, same shapes and dtype); decoding then attends over all of them exactly as after a
real prefill. Then ``--tokens`` tokens are decoded one at a time (greedy, fed back) and timed;
the cache's bytes are counted from its tensors. Rows: results/decode_cpu.csv.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from megalodon_model import MegalodonCache, MegalodonConfig, MegalodonForCausalLM

from tensor_utils_dev.bench import environment_tags, results_dir, write_csv


def cache_bytes(cache) -> int:
    if isinstance(cache, MegalodonCache):
        return cache.nbytes()
    total = 0
    for layer in cache.layers:
        for t in (layer.keys, layer.values):
            if t is not None:
                total += t.numel() * t.element_size()
    return total


def megalodon(args):
    cfg = MegalodonConfig(
        vocab_size=args.vocab, hidden_size=args.dim, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, z_dim=args.dim // 2, value_dim=args.dim * 2,
        intermediate_size=args.dim * 3, chunk_size=args.chunk, norm_num_groups=16, swiglu=True,
    )  # fmt: skip
    return MegalodonForCausalLM(cfg).eval()


def llama(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.dim, num_hidden_layers=args.layers,
        num_attention_heads=args.llama_heads, num_key_value_heads=args.llama_heads,
        intermediate_size=args.dim * 3, max_position_embeddings=1 << 20,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


@torch.no_grad()
def prefill_megalodon(model, context, piece, vocab):
    cache = MegalodonCache(model.config)
    gen = torch.Generator().manual_seed(0)
    done = 0
    while done < context:
        n = min(piece, context - done)
        model(torch.randint(0, vocab, (1, n), generator=gen), cache=cache)
        done += n
    return cache


@torch.no_grad()
def filled_llama_cache(model, context):
    from transformers import DynamicCache

    cfg = model.config
    cache = DynamicCache(config=cfg)
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    for i in range(cfg.num_hidden_layers):
        k = torch.randn(1, cfg.num_key_value_heads, context, head_dim)
        cache.update(k, torch.randn_like(k), i)
    return cache


@torch.no_grad()
def decode_ms(model, cache, tokens: int, vocab: int) -> list[float]:
    token = torch.zeros(1, 1, dtype=torch.long)
    times = []
    for _ in range(tokens):
        start = time.perf_counter()
        out = model(token, cache=cache, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--contexts", type=int, nargs="*", default=[1024, 2048])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=1, help="Megalodon attention heads")
    ap.add_argument("--llama-heads", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--prefill-piece", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--chunk-peak", action="store_true",
        help="also measure Megalodon's largest cache: chunk - 1 tokens into a chunk",
    )  # fmt: skip
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {"megalodon": megalodon(args), "llama": llama(args)}
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    rows = []
    if args.chunk_peak:
        # the cache is largest one token before a chunk boundary (chunk - 1 tokens of K/V);
        # the CEMA / norm states have the same size at any context
        cache = prefill_megalodon(
            models["megalodon"], args.chunk - 1, args.prefill_piece, args.vocab
        )
        peak = {
            "bench": "decode", "model": "megalodon", "context": args.chunk - 1, "dim": args.dim,
            "layers": args.layers, "params": params["megalodon"],
            "cache_bytes_at_context": cache_bytes(cache), "chunk": args.chunk,
            "how_context_was_built": "prefill of chunk - 1 tokens: the largest the cache gets",
            "threads": args.threads,
        }  # fmt: skip
        rows.append(peak)
        print(f"megalodon cache at its largest ({args.chunk - 1} tokens into a chunk): "
              f"{peak['cache_bytes_at_context'] / 1e6:.2f} MB")  # fmt: skip
    for context in args.contexts:
        caches = {
            "megalodon": prefill_megalodon(models["megalodon"], context, args.prefill_piece,
                                           args.vocab),
            "llama": filled_llama_cache(models["llama"], context),
        }  # fmt: skip
        before = {k: cache_bytes(c) for k, c in caches.items()}
        samples: dict[str, list[float]] = {k: [] for k in models}
        for _ in range(args.tokens):  # interleaved: one token of each model per round
            for name, model in models.items():
                samples[name] += decode_ms(model, caches[name], 1, args.vocab)
        for name in models:
            row = {
                "bench": "decode", "model": name, "context": context, "dim": args.dim,
                "layers": args.layers, "params": params[name],
                "cache_bytes_at_context": before[name],
                "cache_bytes_after": cache_bytes(caches[name]),
                "ms_per_token_median": round(statistics.median(samples[name][1:]), 3),
                "tokens": args.tokens, "chunk": args.chunk if name == "megalodon" else "",
                "how_context_was_built": (
                    f"prefill in pieces of {args.prefill_piece}" if name == "megalodon"
                    else "DynamicCache filled with random K/V of the context's shape"
                ),
                "threads": args.threads,
            }  # fmt: skip
            rows.append(row)
            print(f"context {context:6d} {name:9s}: cache {row['cache_bytes_at_context'] / 1e6:8.2f}"
                  f" MB, {row['ms_per_token_median']:.2f} ms/token")  # fmt: skip
    out = results_dir(__file__) / "decode_cpu.csv"
    write_csv(out, rows, tags=environment_tags("cpu", ["megalodon-model"]))
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
