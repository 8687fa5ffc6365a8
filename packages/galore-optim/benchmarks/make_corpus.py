"""Build the token stream for ``bench_convergence_gpu.py`` (needs the SmolLM2 tokenizer; the
GPU run needs only the resulting file of ids).

Corpus: English technical prose available offline on a Linux machine, deduplicated by exact text:

1. the Python language/library reference topics shipped with CPython (``pydoc_data.topics``);
2. every docstring (module, class, function; via ``ast``) of the standard library (tests
   excluded) and of the installed site-packages (torch, transformers, numpy, ...);
3. the plain-text documentation under ``/usr/share/doc`` (``.md``/``.txt``/``.rst`` and
   gzipped NEWS/README/FAQ/text files; change logs, logs and copyright files excluded: they
   are lists of commits, test output and licences);
4. the English manual pages (``/usr/share/man/man[1-8]``), with the roff requests and font
   escapes stripped to plain text; the ~16.6k generated ``gcloud`` command pages are left out
   (one template repeated: they would be most of the corpus and make it unnaturally easy).

Tokenizer: the real SmolLM2 tokenizer (``tensor_utils_dev.models.smollm2_dir()``, 49152 ids). To get
GaLore's LLaMA-60M shape exactly (vocab 32000), ids are remapped by training-split frequency:
the 31999 most frequent SmolLM2 ids keep a slot (ranked 0..31998), every other id becomes one
``<unk>`` id 31999. Documents end with SmolLM2's end-of-text id (remapped like any other).
Documents are shuffled with a fixed seed, then every 20th goes to the validation split; the
splits are capped (``--max-train-tokens``, ``--max-val-tokens``) to keep the file small enough
to copy to a GPU machine (16.6 MiB compressed).

    python packages/galore-optim/benchmarks/make_corpus.py   # -> build/corpus_smollm2_v32000.npz
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import json
import random
import re
import sys
import sysconfig
import time
import warnings
from pathlib import Path

import numpy as np

VOCAB = 32000
DOC_ROOT = Path("/usr/share/doc")


def _docstrings(path: Path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= 80:  # one-liners are mostly boilerplate
                yield doc


_ROFF_TEXT_MACROS = re.compile(r"^\.(SH|SS|B|I|BR|IR|RB|RI|BI|IB|SM|SB|TP|IP|Nm|Nd|Sh)\b ?(.*)$")
_ROFF_ESCAPES = [
    (re.compile(r"\\f(\(..|\[[^\]]*\]|.)"), ""),  # font changes
    (re.compile(r"\\s[+-]?\d"), ""),  # size changes
    (re.compile(r"\\\*(\(..|\[[^\]]*\]|.)"), ""),  # string registers
    (re.compile(r"\\\((em|en)"), "-"),
    (re.compile(r"\\\((aq|cq|oq)"), "'"),
    (re.compile(r"\\\((dq|lq|rq)"), '"'),
    (re.compile(r"\\\(..|\\\[[^\]]*\]"), ""),  # other special characters
    (re.compile(r"\\[-e]"), lambda m: "-" if m.group(0)[1] == "-" else "\\"),
    (re.compile(r"\\[&%c|^:,/]"), ""),  # zero-width escapes
    (re.compile(r"\\(.)"), r"\1"),
]


def roff_to_text(src: str) -> str:
    """Plain text of a man page: requests dropped, text-carrying macros kept, escapes removed."""
    out = []
    for line in src.splitlines():
        if line.startswith((".", "'")):
            m = _ROFF_TEXT_MACROS.match(line)
            if not m or not m.group(2):
                if line.startswith((".SH", ".SS", ".PP", ".LP", ".P", ".sp", ".Sh")):
                    out.append("")
                continue
            line = m.group(2).replace('"', "")
        for pat, rep in _ROFF_ESCAPES:
            line = pat.sub(rep, line)
        out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def documents():
    """``(source, text)`` pairs in a fixed order."""
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield "pydoc_topics", topics[key]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    roots = [("stdlib_docstrings", stdlib)]
    roots += [
        ("site_packages_docstrings", Path(p)) for p in sys.path if p.endswith("site-packages")
    ]
    for source, root in roots:
        for path in sorted(root.rglob("*.py")):
            parts = set(path.parts)
            if source == "stdlib_docstrings" and (
                "site-packages" in parts or "test" in parts or "tests" in parts
            ):
                continue
            if "tests" in parts or "test" in parts:
                continue
            for doc in _docstrings(path):
                yield source, doc
    for path in sorted(DOC_ROOT.rglob("*")):
        name = path.name.lower()
        if path.suffix.lower() not in {".md", ".txt", ".rst"} or not path.is_file():
            continue
        if "changelog" in name or "copyright" in name or "license" in name:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if len(text) >= 200:
            yield "usr_share_doc", text
    for path in sorted(DOC_ROOT.rglob("*.gz")):
        name = path.name.lower()
        if any(k in name for k in ("changelog", "changes", "copyright", "log", "test", "history")):
            continue
        if any(name.endswith(k) for k in (".pdf.gz", ".ps.gz", ".tar.gz", ".json.gz", ".html.gz")):
            continue
        try:
            text = gzip.decompress(path.read_bytes()).decode("utf-8")
        except (UnicodeDecodeError, OSError, EOFError):
            continue
        if len(text) >= 200 and "\x00" not in text:
            yield "usr_share_doc", text
    for path in sorted(Path("/usr/share/man").glob("man[1-8]/*.gz")):
        try:
            src = gzip.decompress(path.read_bytes()).decode("utf-8")
        except (UnicodeDecodeError, OSError, EOFError):
            continue
        if src.startswith(".so ") or path.name.startswith("gcloud"):  # alias / generated
            continue
        text = roff_to_text(src)
        if len(text) >= 200:
            yield "man_pages", text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parents[3] / "build" / "corpus_smollm2_v32000.npz"),
    )
    ap.add_argument("--max-train-tokens", type=int, default=17_000_000)
    ap.add_argument("--max-val-tokens", type=int, default=1_000_000)
    ap.add_argument("--tokenizer", help="tokenizer directory (default: smollm2_dir())")
    ap.add_argument("--val-every", type=int, default=20)
    args = ap.parse_args()
    t0 = time.time()
    seen, docs, stats = set(), [], {}
    total = 0
    for source, text in documents():
        h = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=16).digest()
        if h in seen:
            continue
        seen.add(h)
        docs.append((source, text))
        s = stats.setdefault(source, {"documents": 0, "bytes": 0})
        s["documents"] += 1
        s["bytes"] += len(text.encode("utf-8", "replace"))
        total += len(text)
    print(f"{len(docs)} documents, {total / 1e6:.1f}M chars ({time.time() - t0:.0f} s)", stats)

    from transformers import AutoTokenizer

    from tensor_utils_dev.models import smollm2_dir

    tok_dir = args.tokenizer or smollm2_dir()
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    eos = tok.eos_token_id
    random.Random(0).shuffle(docs)
    train_ids, val_ids, n_train, n_val, used = [], [], 0, 0, {}
    for i in range(0, len(docs), 1024):
        if n_train >= args.max_train_tokens and n_val >= args.max_val_tokens:
            break
        batch = tok([d for _, d in docs[i : i + 1024]], add_special_tokens=False)["input_ids"]
        for j, ids in enumerate(batch):
            arr = np.array([*ids, eos], dtype=np.int32)
            if (i + j) % args.val_every == 0:
                if n_val >= args.max_val_tokens:
                    continue
                val_ids.append(arr)
                n_val += arr.size
            else:
                if n_train >= args.max_train_tokens:
                    continue
                train_ids.append(arr)
                n_train += arr.size
            src = docs[i + j][0]
            used[src] = used.get(src, 0) + arr.size
        print(f"tokenized {min(i + 1024, len(docs))}/{len(docs)}: {n_train} train, {n_val} val")
    train = np.concatenate(train_ids).astype(np.int64)
    val = np.concatenate(val_ids).astype(np.int64)
    counts = np.bincount(train, minlength=len(tok))
    order = np.argsort(-counts, kind="stable")[: VOCAB - 1]
    remap = np.full(len(tok), VOCAB - 1, dtype=np.int64)
    remap[order] = np.arange(VOCAB - 1)
    train16, val16 = remap[train].astype(np.uint16), remap[val].astype(np.uint16)
    info = {
        "tokenizer": f"SmolLM2 ({Path(tok_dir).name})",
        "tokenizer_vocab": len(tok),
        "vocab": VOCAB,
        "unk_id": VOCAB - 1,
        "train_tokens": int(train16.size),
        "val_tokens": int(val16.size),
        "train_unk_fraction": float((train16 == VOCAB - 1).mean()),
        "val_unk_fraction": float((val16 == VOCAB - 1).mean()),
        "documents": len(docs),
        "sources_found": stats,
        "tokens_used_per_source": used,
        "chars_found": total,
        "val_every": args.val_every,
    }
    np.savez_compressed(
        args.out, train=train16, val=val16, kept_ids=order.astype(np.int32), info=json.dumps(info)
    )
    print(json.dumps(info, indent=1))
    print(
        f"wrote {args.out} ({Path(args.out).stat().st_size / 2**20:.1f} MiB, {time.time() - t0:.0f} s)"
    )


if __name__ == "__main__":
    main()
