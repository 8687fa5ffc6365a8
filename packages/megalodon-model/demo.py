"""megalodon-model's part of the tour: pre-train a tiny Megalodon for about a minute on English
text, then generate a long continuation with a cache whose size stays flat.

The text is the docstrings of Python's standard library (shipped with every interpreter),
tokenized with SmolLM2's tokenizer; the vocabulary is cut down to the token ids that occur, so a
CPU step stays fast. Lines report the training loss falling, held-out loss before and after, and
the cache's bytes as the continuation grows past many attention chunks.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import time

import torch
from tqdm.auto import tqdm

MODULES = (
    "argparse", "collections", "json", "pathlib", "itertools", "functools", "textwrap",
    "statistics", "datetime", "decimal", "fractions", "heapq", "bisect", "string", "re",
    "shutil", "tempfile", "logging", "csv", "dataclasses", "enum", "typing", "contextlib",
    "difflib", "inspect", "zipfile", "tarfile", "subprocess", "threading", "queue", "os",
    "email.message", "http.client", "unittest", "asyncio", "socket", "configparser",
    "urllib.request", "xml.etree.ElementTree", "pickle", "io", "copy", "pprint", "calendar",
    "locale", "gettext", "optparse", "ftplib", "smtplib", "imaplib", "mailbox", "traceback",
    "warnings", "weakref", "types", "numbers", "hashlib", "secrets", "ipaddress", "shlex",
    "glob", "fnmatch", "filecmp", "pkgutil", "ast", "dis", "tokenize", "pdb", "timeit",
    "doctest", "sched", "selectors", "random", "codecs",
)  # fmt: skip
TRAIN_SECONDS = 60.0  # "about a minute" of training
MAX_STEPS = 5000


def english_text() -> str:
    """Docstrings of standard-library modules and their members, deduplicated."""
    docs = []
    for name in MODULES:
        module = importlib.import_module(name)
        for obj in [module, *vars(module).values()]:
            if inspect.ismodule(obj) and obj is not module:
                continue
            doc = inspect.getdoc(obj) if callable(obj) or obj is module else None
            if doc and len(doc) > 80:
                docs.append(doc)
    return "\n\n".join(dict.fromkeys(docs))


@contextlib.contextmanager
def cpu_threads(device: torch.device, threads: int):
    """One intra-op thread on the CPU: this model's matrices are small, and on a busy 2-core
    machine two OpenMP threads contending with other processes made a training step ~5x slower
    (1.1 s against 0.21 s measured). The caller's setting is restored afterwards."""
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(ctx) -> list[str]:
    device = torch.device(getattr(ctx, "device", "cpu") or "cpu")
    with cpu_threads(device, 1):
        return _run(ctx, device)


def _run(ctx, device: torch.device) -> list[str]:
    from megalodon_model import MegalodonCache, MegalodonConfig, MegalodonForCausalLM
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_dir)
    ids = torch.tensor(tokenizer(english_text())["input_ids"])
    vocab, compact = torch.unique(ids, return_inverse=True)  # real ids -> 0..V-1
    seq, batch, chunk = 128, 8, 32
    usable = compact[: (compact.numel() // seq) * seq].view(-1, seq)
    held_out, train = usable[:32], usable[32:]

    config = MegalodonConfig(
        vocab_size=len(vocab), hidden_size=128, num_hidden_layers=2, num_attention_heads=1,
        z_dim=64, value_dim=256, intermediate_size=256, chunk_size=chunk, norm_num_groups=8,
        cema_ndim=8, swiglu=True, tie_word_embeddings=True,
    )  # fmt: skip
    model = MegalodonForCausalLM(config).to(device)  # pyright: ignore[reportArgumentType]  (transformers types .to() wrongly)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1, betas=(0.9, 0.95))

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            x = held_out.to(device)
            loss = model(x, labels=x, use_cache=False).loss.item()
        model.train()
        return loss

    before = evaluate()
    budget_s, steps, losses, start = TRAIN_SECONDS, 0, [], time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    with tqdm(total=int(budget_s), desc="training", unit="s", leave=False) as bar:
        while time.perf_counter() - start < budget_s and steps < MAX_STEPS:
            x = train[torch.randint(0, train.shape[0], (batch,), generator=gen)].to(device)
            loss = model(x, labels=x, use_cache=False).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            steps += 1
            bar.n = min(int(time.perf_counter() - start), int(budget_s))
            bar.set_postfix(step=steps, loss=f"{losses[-1]:.2f}", refresh=True)
    seconds = time.perf_counter() - start
    after = evaluate()

    # a long continuation through transformers' generate, in rounds that carry one
    # MegalodonCache (sampled: temperature 0.8, top-k 50); its size is read after every round
    model.eval()
    prompt_text = "Return a new list containing"
    prompt_ids = tokenizer(prompt_text)["input_ids"]
    lookup = {int(v): i for i, v in enumerate(vocab.tolist())}
    prompt = torch.tensor([[lookup[t] for t in prompt_ids if t in lookup]], device=device)
    cache = MegalodonCache(config)
    rounds, per_round, sizes = 8, 128, {}
    tokens = prompt
    torch.manual_seed(1)
    decode_start = time.perf_counter()
    with torch.no_grad():
        for _ in tqdm(range(rounds), desc="generating", leave=False):
            tokens = model.generate(  # pyright: ignore[reportAttributeAccessIssue]  (transformers types generate() for its Protocol)
                tokens, cache=cache, max_new_tokens=per_round, do_sample=True,
                temperature=0.8, top_k=50,
            )  # fmt: skip
            sizes[tokens.shape[1]] = cache.nbytes()  # the same place inside a chunk each round
    decode_s = time.perf_counter() - decode_start
    new_tokens = tokens.shape[1] - prompt.shape[1]
    text = tokenizer.decode(vocab[tokens[0, prompt.shape[1] :].cpu()].tolist())
    snippet = " ".join((prompt_text + text).split())[:240]

    def trace(values, points=6):
        picks = [values[round(i * (len(values) - 1) / (points - 1))] for i in range(points)]
        return " -> ".join(f"{v:.2f}" for v in picks)

    shown = list(sizes.items())
    return [
        f"tiny Megalodon: {params / 1e6:.2f}M params, 2 layers, CEMA (N=8) + TimestepNorm + "
        f"attention in chunks of {chunk}; {len(vocab)}-token vocabulary cut from SmolLM2's; "
        f"{train.numel()} training tokens of stdlib docstrings",
        f"trained {steps} steps ({steps * batch * seq} tokens, "
        f"{steps * batch * seq / train.numel():.1f} passes) in {seconds:.0f} s on {device}: "
        f"train loss {trace(losses)}",
        f"held-out loss {before:.2f} -> {after:.2f} "
        f"(uniform guess = ln {len(vocab)} = {math.log(len(vocab)):.2f})",
        f"generate(): {new_tokens} new tokens ({new_tokens // chunk} attention chunks) in "
        f"{rounds} rounds of {per_round} carrying one cache, {decode_s:.1f} s; cache bytes at "
        + ", ".join(f"{n} tokens: {b / 1024:.1f} KiB" for n, b in (shown[0], *shown[-3:]))
        + " (the current chunk's K/V + CEMA and norm states: flat in the context length)",
        f"continuation: {snippet!r}",
    ]


if __name__ == "__main__":
    from pathlib import Path
    from types import SimpleNamespace

    from tensor_utils_dev.models import smollm2_dir

    for line in run(SimpleNamespace(model_dir=smollm2_dir(), workdir=Path("."), device="cpu")):
        print(line)
