"""Perplexity of a (possibly sparsified) model on token ids, in fixed-length windows.

With a sparsified model the windows run with ``prefill`` sparsity on, so every token is
predicted with the mode's per-token selection (the same function a decode step computes)."""

from __future__ import annotations

import math

import torch


def perplexity(model, ids: torch.Tensor, *, seq_len: int = 256, progress: bool = False) -> float:
    from tqdm.auto import tqdm

    ids = ids.reshape(-1)
    n = ids.numel() // seq_len
    if n == 0:
        raise ValueError(f"perplexity needs at least {seq_len} tokens, got {ids.numel()}")
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in tqdm(range(n), desc="perplexity", disable=not progress):
            chunk = ids[i * seq_len : (i + 1) * seq_len].unsqueeze(0).to(device)
            logits = model(chunk, use_cache=False).logits[0, :-1].float()
            nll += float(torch.nn.functional.cross_entropy(logits, chunk[0, 1:], reduction="sum"))
            count += seq_len - 1
    return math.exp(nll / count)
