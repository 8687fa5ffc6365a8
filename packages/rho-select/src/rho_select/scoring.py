"""Reference losses: computed by a frozen reference model, stored aligned to packed sequences.

Offline (the paper's step 2)::

    corpus = tokenize_and_pack(tokenizer, texts, seq_len=2048)
    score_corpus(reference_model, corpus, "scores/", tokenizer=tokenizer)   # resumable
    scores = ReferenceScores.open("scores/")
    scores.check(tokenizer=tokenizer, corpus=corpus)        # one-line error on any mismatch
    train_set = scores.dataset()                            # input_ids, labels, ref_losses

Online (no storage: the reference runs inside the training step)::

    reference = OnlineReference(reference_model)
    ref_losses = reference(input_ids, attention_mask)

Layout of a scores directory: ``manifest.json`` plus ``scores-NNNNN.safetensors`` shards, each
holding ``ref_losses`` (float16 or bfloat16, ``[sequences, seq_len]``) and ``input_ids`` (int32,
the exact tokens scored). ``ref_losses[s, t]`` is the reference's cross entropy of token ``t``
given tokens ``< t`` of the same packed sequence; ``ref_losses[s, 0] = 0`` (nothing predicts
it). The manifest records the reference model (class, name, SHA-256 of its weights), the
tokenizer (name, SHA-256 of its vocabulary and special tokens), the sequence length, the packing
and a SHA-256 of every shard's tokens. Shards are written to a temporary name and renamed when
complete, and the manifest is rewritten after each one, so an interrupted run leaves no partial
file and a rerun skips the finished shards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from .errors import ManifestMismatchError, RhoSelectError, ScoresFormatError
from .hf import final_hidden_states, lm_head_weight
from .loss import token_cross_entropy
from .packing import PackedCorpus, tokens_sha256

FORMAT = "rho-select-scores/1"
MANIFEST = "manifest.json"
SCORE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------
# Fingerprints


def model_fingerprint(model) -> dict:
    """Class, name and a SHA-256 over every weight (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    count = 0
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        count += t.numel()
    config = getattr(model, "config", None)
    return {
        "class": type(model).__name__,
        "name": str(getattr(config, "_name_or_path", "") or ""),
        "weights_sha256": h.hexdigest(),
        "numel": count,
    }


def tokenizer_fingerprint(tokenizer) -> dict:
    """Name and a SHA-256 over the vocabulary and special tokens."""
    vocab = sorted(tokenizer.get_vocab().items())
    special = sorted((str(k), str(v)) for k, v in tokenizer.special_tokens_map.items())
    h = hashlib.sha256(json.dumps([vocab, special]).encode())
    return {
        "class": type(tokenizer).__name__,
        "name": str(getattr(tokenizer, "name_or_path", "") or ""),
        "vocab_size": len(vocab),
        "sha256": h.hexdigest(),
    }


# ---------------------------------------------------------------------------------------------
# Scoring


class OnlineReference:
    """A frozen reference model that scores batches inside the training step.

    ``reference(input_ids, attention_mask=None) -> [batch, seq]`` float32 reference losses in
    the layout of :mod:`rho_select.scoring` (position 0 and masked positions are 0). The logits
    are never materialized (the same chunked op as the loss), and no gradient is kept.
    """

    def __init__(self, model, *, chunk_size: int = 0, backend: str | None = None):
        self.model = model.eval().requires_grad_(False)
        self.weight = lm_head_weight(model)
        self.chunk_size, self.backend = chunk_size, backend

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        if input_ids.dim() != 2:
            raise RhoSelectError(f"input_ids must be [batch, seq], got {tuple(input_ids.shape)}")
        hidden = final_hidden_states(self.model, input_ids, attention_mask)
        labels = input_ids[:, 1:]
        if attention_mask is not None:
            labels = labels.masked_fill(attention_mask[:, 1:] == 0, -100)
        losses = token_cross_entropy(
            hidden[:, :-1].reshape(-1, hidden.shape[-1]),
            self.weight,
            labels.reshape(-1),
            chunk_size=self.chunk_size,
            backend=self.backend,
        ).view(labels.shape)
        return torch.cat([losses.new_zeros(losses.shape[0], 1), losses], dim=1)


def _batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def score_sequences(
    model, input_ids: torch.Tensor, *, batch_size: int = 8, progress: bool = False
) -> torch.Tensor:
    """Reference losses ``[sequences, seq_len]`` (float32) of packed sequences, in memory."""
    reference = model if isinstance(model, OnlineReference) else OnlineReference(model)
    device = reference.weight.device
    out = torch.empty(input_ids.shape, dtype=torch.float32)
    bar = _progress(input_ids.shape[0], "scoring", progress)
    for start, end in _batches(input_ids.shape[0], batch_size):
        out[start:end] = reference(input_ids[start:end].to(device)).cpu()
        bar.update(end - start)
    bar.close()
    return out


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="seq", disable=not enabled, dynamic_ncols=True)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _shard_name(index: int) -> str:
    return f"scores-{index:05d}.safetensors"


def score_corpus(
    model,
    corpus: PackedCorpus,
    out_dir: str | os.PathLike,
    *,
    tokenizer=None,
    dtype: str = "float16",
    shard_size: int = 1024,
    batch_size: int = 8,
    progress: bool = True,
) -> dict:
    """Score ``corpus`` with ``model`` into ``out_dir`` (see the module doc); returns a report
    ``{"out", "sequences", "tokens", "shards", "skipped_shards", "seconds", ...}``.

    A directory holding a finished or partial run of the *same* configuration (model weights,
    tokenizer, packing, tokens, dtype, shard size) resumes; one of another configuration is an
    error (nothing is overwritten).
    """
    from safetensors.torch import save_file

    if dtype not in SCORE_DTYPES:
        raise RhoSelectError(f"dtype must be one of {', '.join(SCORE_DTYPES)}, got {dtype!r}")
    if shard_size < 1 or batch_size < 1:
        raise RhoSelectError("shard_size and batch_size must be positive")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RhoSelectError(f"{out} exists and is not a directory")
    start_time = time.perf_counter()
    config = {
        "format": FORMAT,
        "model": model_fingerprint(model),
        "tokenizer": tokenizer_fingerprint(tokenizer) if tokenizer is not None else None,
        "seq_len": corpus.seq_len,
        "packing": corpus.packing,
        "sequences": len(corpus),
        "tokens_sha256": corpus.sha256(),
        "dtype": dtype,
        "shard_size": shard_size,
    }
    manifest_path = out / MANIFEST
    shards: list[dict] = []
    if manifest_path.exists():
        previous = _read_manifest(out)
        differs = [k for k in config if previous.get(k) != config[k]]
        if differs:
            raise ManifestMismatchError(
                f"{out} holds scores of another run (differs in: {', '.join(differs)}); "
                "use another output directory or delete it"
            )
        shards = [s for s in previous.get("shards", []) if (out / s["file"]).is_file()]
    out.mkdir(parents=True, exist_ok=True)
    done = {s["index"] for s in shards}
    manifest = {**config, "complete": False, "shards": shards}
    _write_json(manifest_path, manifest)

    reference = OnlineReference(model)
    device = reference.weight.device
    n = len(corpus)
    skipped = sum(s["count"] for s in shards)
    bar = _progress(n, "scoring", progress)
    bar.update(skipped)
    for index, (lo, hi) in enumerate(_batches(n, shard_size)):
        if index in done:
            continue
        ids = corpus.input_ids[lo:hi]
        losses = torch.empty(ids.shape, dtype=torch.float32)
        for start, end in _batches(hi - lo, batch_size):
            losses[start:end] = reference(ids[start:end].to(device)).cpu()
            bar.update(end - start)
        name = _shard_name(index)
        tmp = out / (name + ".tmp")
        try:
            save_file(
                {
                    "ref_losses": losses.to(SCORE_DTYPES[dtype]).contiguous(),
                    "input_ids": ids.to(torch.int32).contiguous(),
                },
                str(tmp),
                metadata={"format": FORMAT, "start": str(lo)},
            )
            os.replace(tmp, out / name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        shards.append(
            {
                "index": index,
                "file": name,
                "start": lo,
                "count": hi - lo,
                "tokens_sha256": tokens_sha256(ids),
            }
        )
        shards.sort(key=lambda s: s["index"])
        _write_json(manifest_path, {**manifest, "shards": shards})
    bar.close()
    manifest = {**manifest, "shards": shards, "complete": True}
    _write_json(manifest_path, manifest)
    return {
        "out": str(out),
        "sequences": n,
        "seq_len": corpus.seq_len,
        "tokens": n * corpus.seq_len,
        "shards": len(shards),
        "skipped_shards": len(done),
        "dtype": dtype,
        "model_weights_sha256": config["model"]["weights_sha256"],
        "seconds": round(time.perf_counter() - start_time, 3),
    }


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise ScoresFormatError(
            f"{path} has no {MANIFEST}: not a rho-select scores directory"
        ) from None
    except json.JSONDecodeError as exc:
        raise ScoresFormatError(f"{path / MANIFEST} is not valid JSON ({exc.msg})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ScoresFormatError(f"{path / MANIFEST} is not a {FORMAT} manifest")
    return manifest


# ---------------------------------------------------------------------------------------------
# Loading


class ReferenceScores:
    """A finished scores directory: check it against the data, then read it."""

    def __init__(self, path: Path, manifest: dict):
        self.path, self.manifest = path, manifest
        self._cache: tuple[int, dict[str, torch.Tensor]] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> ReferenceScores:
        path = Path(path)
        manifest = _read_manifest(path)
        if not manifest.get("complete"):
            raise ScoresFormatError(f"{path}: scoring did not finish (rerun it to resume)")
        covered = sum(s["count"] for s in manifest["shards"])
        if covered != manifest["sequences"]:
            raise ScoresFormatError(
                f"{path}: shards cover {covered} of {manifest['sequences']} sequences"
            )
        for s in manifest["shards"]:
            if not (path / s["file"]).is_file():
                raise ScoresFormatError(f"{path}: shard {s['file']} is missing")
        return cls(path, manifest)

    @property
    def seq_len(self) -> int:
        return int(self.manifest["seq_len"])

    def __len__(self) -> int:
        return int(self.manifest["sequences"])

    def check(
        self,
        *,
        tokenizer=None,
        seq_len: int | None = None,
        packing: dict | None = None,
        corpus: PackedCorpus | None = None,
        model=None,
    ) -> None:
        """Raise :class:`ManifestMismatchError` (one line) if the scores were computed for other
        data: another tokenizer, sequence length, packing or token stream (or, when given,
        another reference model)."""
        m, where = self.manifest, self.path
        if tokenizer is not None:
            mine, theirs = tokenizer_fingerprint(tokenizer), m.get("tokenizer")
            if theirs is None or mine["sha256"] != theirs["sha256"]:
                name = (theirs or {}).get("name") or "an unrecorded tokenizer"
                raise ManifestMismatchError(
                    f"{where} was scored with tokenizer {name!r}, not {mine['name']!r} "
                    "(vocabularies differ)"
                )
        if corpus is not None:
            seq_len = corpus.seq_len if seq_len is None else seq_len
            packing = corpus.packing if packing is None else packing
        if seq_len is not None and int(seq_len) != self.seq_len:
            raise ManifestMismatchError(
                f"{where} was scored at sequence length {self.seq_len}, the data has {seq_len}"
            )
        if packing is not None and packing != m.get("packing"):
            keys = sorted(set(packing) | set(m.get("packing") or {}))
            diff = [k for k in keys if packing.get(k) != (m.get("packing") or {}).get(k)]
            raise ManifestMismatchError(
                f"{where} was scored with another packing (differs in: {', '.join(diff)})"
            )
        if corpus is not None:
            if len(corpus) != len(self):
                raise ManifestMismatchError(
                    f"{where} holds {len(self)} sequences, the data has {len(corpus)}"
                )
            if corpus.sha256() != m.get("tokens_sha256"):
                raise ManifestMismatchError(
                    f"{where} was scored on other tokens than this data (token hashes differ)"
                )
        if model is not None:
            weights = model_fingerprint(model)["weights_sha256"]
            if weights != m["model"]["weights_sha256"]:
                raise ManifestMismatchError(
                    f"{where} was scored by another model ({m['model'].get('name') or 'unnamed'}, "
                    "weight hashes differ)"
                )

    def _shard(self, index: int) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        if self._cache is None or self._cache[0] != index:
            s = self.manifest["shards"][index]
            tensors = load_file(str(self.path / s["file"]))
            ids, losses = tensors.get("input_ids"), tensors.get("ref_losses")
            shape = (s["count"], self.seq_len)
            if (
                ids is None
                or losses is None
                or tuple(ids.shape) != shape
                or tuple(losses.shape) != shape
            ):
                raise ScoresFormatError(
                    f"{self.path / s['file']}: expected input_ids and ref_losses of shape {shape}"
                )
            if tokens_sha256(ids) != s["tokens_sha256"]:
                raise ScoresFormatError(
                    f"{self.path / s['file']}: tokens do not match the manifest"
                )
            self._cache = (index, {"input_ids": ids.long(), "ref_losses": losses.float()})
        return self._cache[1]

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``(input_ids, ref_losses)`` as ``[sequences, seq_len]`` int64 / float32."""
        parts = [self._shard(i) for i in range(len(self.manifest["shards"]))]
        return (
            torch.cat([p["input_ids"] for p in parts]),
            torch.cat([p["ref_losses"] for p in parts]),
        )

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        shard = min(i // int(self.manifest["shard_size"]), len(self.manifest["shards"]) - 1)
        row = i - self.manifest["shards"][shard]["start"]
        part = self._shard(shard)
        ids = part["input_ids"][row]
        return {"input_ids": ids, "labels": ids.clone(), "ref_losses": part["ref_losses"][row]}

    def dataset(self) -> torch.utils.data.Dataset:
        """A map-style dataset of ``{"input_ids", "labels", "ref_losses"}`` rows (the scored
        tokens themselves, so scores and tokens cannot drift apart)."""
        return _ScoresDataset(self)


class _ScoresDataset(torch.utils.data.Dataset):
    def __init__(self, scores: ReferenceScores):
        self.scores = scores

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.scores[i]
