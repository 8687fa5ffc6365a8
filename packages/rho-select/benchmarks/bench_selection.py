"""Does selection help? A small Rho-1 reproduction on the CPU, at one token budget.

Corpus: clean English = docstrings of Python's standard library (``ast``; tests excluded) plus
the language reference topics shipped with CPython (``pydoc_data.topics``), split by document
into a validation slice, a reference-training slice and the training slice. The training
stream mixes the clean training documents with as many tokens of noise in three kinds: the
clean documents' tokens shuffled, boilerplate (templated web lines), and random character
strings. Tokenizer: SmolLM2's (``tensor_utils_dev.models.smollm2_dir()``), its ids remapped to
the ones the corpus uses (a compact vocabulary keeps the tiny model's LM head small).

Models: a Llama-shaped student (4 layers, hidden 256, untied head; ~10M parameters).
The reference is the same model trained first on the clean reference slice. Then three
students from the same initialization see the same training stream (batch 16 x 64 tokens):
``full`` (cross entropy on every token), ``selective`` (Rho-1, top 60% of each batch by excess
loss) and ``random`` (60% of each batch at random). Every ``--eval-every`` steps the
validation loss on clean text is recorded against tokens seen (tokens fed forward).

    python packages/rho-select/benchmarks/bench_selection.py --seeds 0 1
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import random
import string
import sysconfig
import time
import warnings
from pathlib import Path

import torch
from rho_select import selective_loss
from rho_select.hf import final_hidden_states, lm_head_weight
from rho_select.scoring import OnlineReference, score_sequences

from tensor_utils_dev.bench import environment_tags, results_dir, write_csv

SEQ, BATCH = 64, 16


# ---------------------------------------------------------------------------------------------
# Corpus


def clean_documents(min_chars: int = 200) -> list[str]:
    """Docstrings of the standard library and the language reference topics, deduplicated."""
    docs: dict[str, None] = {}
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        if any(part in ("test", "tests", "idle_test", "site-packages") for part in path.parts):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= min_chars:
                    docs[doc] = None
    from pydoc_data.topics import topics

    for key in sorted(topics):
        if len(topics[key]) >= min_chars:
            docs[topics[key]] = None
    return list(docs)


BOILERPLATE = [
    "Copyright (c) {year} {name} Inc. All rights reserved.",
    "Click here to subscribe to our newsletter and get {n}% off your first order!",
    "Page {n} of {m} | Home | About | Contact | Privacy Policy | Terms of Use",
    "Posted by {name} on {month} {n}, {year} | {m} comments | Share on social media",
    "Cookies help us deliver our services. By using our services, you agree to our use of cookies.",
]
NAMES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne"]
MONTHS = ["January", "March", "May", "July", "September", "November"]


def noise_documents(clean_ids: list[list[int]], tokenizer, rng: random.Random, budget: int):
    """About ``budget`` tokens of noise, a third of each kind, as token-id lists."""
    docs: list[list[int]] = []
    per_kind = budget // 3
    made = 0
    while made < per_kind:  # clean documents with their tokens shuffled
        doc = list(rng.choice(clean_ids))
        rng.shuffle(doc)
        docs.append(doc)
        made += len(doc)
    made = 0
    while made < per_kind:  # boilerplate
        lines = [
            rng.choice(BOILERPLATE).format(
                year=rng.randint(1998, 2024),
                name=rng.choice(NAMES),
                n=rng.randint(1, 99),
                m=rng.randint(2, 400),
                month=rng.choice(MONTHS),
            )
            for _ in range(rng.randint(3, 12))
        ]
        doc = tokenizer("\n".join(lines), add_special_tokens=False)["input_ids"]
        docs.append(doc)
        made += len(doc)
    made = 0
    alphabet = string.ascii_letters + string.digits + string.punctuation + "    "
    while made < per_kind:  # random strings
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(100, 600)))
        doc = tokenizer(text, add_special_tokens=False)["input_ids"]
        docs.append(doc)
        made += len(doc)
    return docs


def pack(docs: list[list[int]], eos: int) -> torch.Tensor:
    stream = [t for d in docs for t in (*d, eos)]
    n = len(stream) // SEQ
    return torch.tensor(stream[: n * SEQ]).view(n, SEQ)


def build_corpus(seed_data: int, val_seqs: int, ref_tokens: int, train_tokens: int):
    from transformers import AutoTokenizer

    from tensor_utils_dev.models import smollm2_dir

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    rng = random.Random(seed_data)
    texts = clean_documents()
    rng.shuffle(texts)
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    eos = tokenizer.eos_token_id
    # slices by document: validation, reference training, student training (clean part)
    slices, start = [], 0
    for budget in (val_seqs * SEQ, ref_tokens, train_tokens // 2):
        taken, end = 0, start
        while taken < budget and end < len(ids):
            taken += len(ids[end]) + 1
            end += 1
        slices.append(ids[start:end])
        start = end
    val_docs, ref_docs, clean_train = slices
    noisy = noise_documents(clean_train, tokenizer, rng, sum(map(len, clean_train)))
    train_docs = clean_train + noisy
    rng.shuffle(train_docs)
    streams = {
        "val": pack(val_docs, eos)[:val_seqs],
        "ref": pack(ref_docs, eos),
        "train": pack(train_docs, eos),
    }
    # compact vocabulary: the ids the corpus uses
    used = torch.unique(torch.cat([s.reshape(-1) for s in streams.values()]))
    remap = torch.full((int(used.max()) + 1,), -1, dtype=torch.int64)
    remap[used] = torch.arange(used.numel())
    info = {
        "clean_docs": len(texts),
        "vocab": int(used.numel()),
        "noise_fraction_tokens": round(sum(map(len, noisy)) / sum(map(len, train_docs)), 3),
    }
    return {k: remap[v] for k, v in streams.items()}, info


# ---------------------------------------------------------------------------------------------
# Models and training


def make_model(vocab: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=SEQ,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


@torch.no_grad()
def val_loss(model, val: torch.Tensor) -> float:
    model.eval()
    total = 0.0
    for ids in val.split(BATCH):
        hidden = final_hidden_states(model, ids)
        out = selective_loss(
            hidden, lm_head_weight(model), ids, torch.zeros(ids.shape), 1.0, shift=True
        )
        total += float(out.loss) * ids.shape[0]
    model.train()
    return total / val.shape[0]


def train(model, data, ref_losses, *, method, ratio, steps, lr, eval_every, val, seed, log):
    """Train on ``data`` in order; returns [(tokens_seen, val_loss)]."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        ),
    )
    gen = torch.Generator().manual_seed(seed + 1000)
    curve = [(0, val_loss(model, val))]
    model.train()
    for step in range(steps):
        rows = torch.arange(step * BATCH, (step + 1) * BATCH) % data.shape[0]
        ids = data[rows]
        ref = ref_losses[rows] if ref_losses is not None else torch.zeros(ids.shape)
        hidden = final_hidden_states(model, ids)
        mode = "random" if method == "random" else "batch"
        out = selective_loss(
            hidden,
            lm_head_weight(model),
            ids,
            ref,
            ratio if method != "full" else 1.0,
            shift=True,
            mode=mode,
            generator=gen,
        )
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            curve.append(((step + 1) * BATCH * SEQ, val_loss(model, val)))
            log(
                f"  {method} step {step + 1}: val {curve[-1][1]:.3f} (train sel {float(out.selected_loss):.2f} unsel {float(out.unselected_loss):.2f})"
            )
    return curve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=100, help="student steps (16 x 64 tokens each)")
    p.add_argument("--ref-steps", type=int, default=100)
    p.add_argument("--ratio", type=float, default=0.6)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--val-seqs", type=int, default=32)
    p.add_argument("--out", default=None, help="CSV path (default: results/selection_cpu.csv)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: no barrier waits on a shared machine)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)

    train_tokens = args.steps * BATCH * SEQ
    streams, info = build_corpus(0, args.val_seqs, args.ref_steps * BATCH * SEQ, train_tokens)
    log(f"corpus: {info}, train {tuple(streams['train'].shape)}, ref {tuple(streams['ref'].shape)}")
    tags = {
        **environment_tags("cpu", ["rho-select"]),
        **{f"corpus_{k}": v for k, v in info.items()},
    }
    out = args.out or results_dir(__file__) / "selection_cpu.csv"
    for seed in args.seeds:
        reference = make_model(info["vocab"], seed)
        params = sum(p.numel() for p in reference.parameters())
        log(f"seed {seed}: training the reference ({params / 1e6:.1f}M parameters) on clean text")
        ref_curve = train(
            reference,
            streams["ref"],
            None,
            method="full",
            ratio=1.0,
            steps=args.ref_steps,
            lr=args.lr,
            eval_every=args.eval_every,
            val=streams["val"],
            seed=seed,
            log=log,
        )
        ref_losses = score_sequences(OnlineReference(reference), streams["train"], batch_size=BATCH)
        rows = [
            {"seed": seed, "method": "reference", "tokens_seen": t, "val_loss": round(v, 4)}
            for t, v in ref_curve
        ]
        for method in ("full", "selective", "random"):
            student = make_model(info["vocab"], seed)  # same initialization for all three
            start = time.perf_counter()
            curve = train(
                student,
                streams["train"],
                ref_losses,
                method=method,
                ratio=args.ratio,
                steps=args.steps,
                lr=args.lr,
                eval_every=args.eval_every,
                val=streams["val"],
                seed=seed,
                log=log,
            )
            seconds = time.perf_counter() - start
            rows += [
                {
                    "seed": seed,
                    "method": method,
                    "tokens_seen": t,
                    "val_loss": round(v, 4),
                    "ratio": args.ratio if method != "full" else 1.0,
                    "params": params,
                    "train_seconds": round(seconds, 1),
                }
                for t, v in curve
            ]
        write_csv(out, [{"benchmark": "selection_helps", **r} for r in rows], tags=tags)
        log(f"seed {seed} written to {out}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
