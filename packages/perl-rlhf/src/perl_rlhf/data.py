"""Datasets in the formats TRL users already have, from JSONL, a ``datasets.Dataset`` or a
list of dicts.

* pairwise preferences: ``prompt`` / ``chosen`` / ``rejected`` (``prompt`` optional);
* binary thumbs-up/down: ``prompt`` / ``completion`` / ``label`` (bool or 0/1);
* RL prompts: ``prompt``.

A prompt is a string (used as is) or a conversation (a list of ``{"role", "content"}``
messages, rendered by the tokenizer's chat template with the generation prompt). A completion is
a string or a list of assistant messages; it is followed by the end-of-sequence token, as a
sampled response is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import PerlError

PAIRWISE = ("prompt", "chosen", "rejected")
BINARY = ("prompt", "completion", "label")


def load_rows(source) -> list[dict]:
    """Rows from a JSONL path, a ``datasets.Dataset`` or an iterable of dicts."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise PerlError(f"{path}: no such data file")
        rows = []
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise PerlError(f"{path}:{i}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise PerlError(f"{path}:{i}: each line must be a JSON object")
                rows.append(row)
        if not rows:
            raise PerlError(f"{path}: no rows")
        return rows
    rows = [dict(r) for r in source]
    if not rows:
        raise PerlError("the dataset has no rows")
    return rows


def prompt_text(tokenizer, prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(m, dict) and "content" in m for m in prompt):
        if getattr(tokenizer, "chat_template", None) is None:
            raise PerlError("conversational prompts need a tokenizer with a chat template")
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    raise PerlError(f"a prompt must be a string or a list of messages, got {type(prompt).__name__}")


def completion_text(completion) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and all(
        isinstance(m, dict) and "content" in m for m in completion
    ):
        return "".join(str(m["content"]) for m in completion)
    raise PerlError(
        f"a completion must be a string or a list of messages, got {type(completion).__name__}"
    )


def context_limit(model_or_config) -> int | None:
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "max_position_embeddings", None)


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise PerlError("the tokenizer has no end-of-sequence token")
    return int(tokenizer.eos_token_id)


def encode_pair(tokenizer, prompt, completion, where: str) -> tuple[list[int], int]:
    """Token ids of prompt + completion + EOS, and the prompt's length."""
    text = completion_text(completion)
    if not text.strip():
        raise PerlError(f"{where}: empty response")
    p = tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    c = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [*p, *c, _eos_id(tokenizer)], len(p)


def _check_length(n: int, max_length: int | None, where: str) -> None:
    if max_length is not None and n > max_length:
        raise PerlError(
            f"{where}: {n} tokens, over the context limit of {max_length} "
            "(shorten or drop the row, or pass skip_long=True / --skip-long)"
        )


def _require(row: dict, columns: Sequence[str], where: str, kind: str) -> None:
    missing = [c for c in columns if c not in row]
    if missing:
        raise PerlError(
            f"{where}: no {', '.join(repr(m) for m in missing)} column "
            f"({kind} data needs {', '.join(columns)})"
        )


@dataclass
class Encoded:
    """Token id lists with their labels; ``skipped`` rows were over the length limit."""

    ids: list[list[int]]
    labels: list[float]
    skipped: int = 0


def encode_pairwise(
    rows: Iterable[dict], tokenizer, *, max_length: int | None, skip_long: bool = False
) -> tuple[list[list[int]], list[list[int]], int]:
    """``(chosen_ids, rejected_ids, skipped)`` from prompt/chosen/rejected rows."""
    chosen, rejected, skipped = [], [], 0
    for i, row in enumerate(rows):
        where = f"row {i}"
        _require(row, ("chosen", "rejected"), where, "pairwise")
        prompt = row.get("prompt", "")
        c, _ = encode_pair(tokenizer, prompt, row["chosen"], f"{where} (chosen)")
        r, _ = encode_pair(tokenizer, prompt, row["rejected"], f"{where} (rejected)")
        if skip_long and max_length is not None and max(len(c), len(r)) > max_length:
            skipped += 1
            continue
        _check_length(len(c), max_length, f"{where} (prompt + chosen)")
        _check_length(len(r), max_length, f"{where} (prompt + rejected)")
        chosen.append(c)
        rejected.append(r)
    if not chosen:
        raise PerlError("no usable rows (all over the length limit)")
    return chosen, rejected, skipped


def _label(value, where: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and float(value) in (0.0, 1.0):
        return float(value)
    raise PerlError(f"{where}: label must be true/false or 0/1, got {value!r}")


def encode_binary(
    rows: Iterable[dict], tokenizer, *, max_length: int | None, skip_long: bool = False
) -> Encoded:
    """Prompt + completion ids and 0/1 labels from prompt/completion/label rows."""
    out = Encoded([], [])
    for i, row in enumerate(rows):
        where = f"row {i}"
        _require(row, ("completion", "label"), where, "binary")
        ids, _ = encode_pair(tokenizer, row.get("prompt", ""), row["completion"], where)
        label = _label(row["label"], where)
        if skip_long and max_length is not None and len(ids) > max_length:
            out.skipped += 1
            continue
        _check_length(len(ids), max_length, f"{where} (prompt + completion)")
        out.ids.append(ids)
        out.labels.append(label)
    if not out.ids:
        raise PerlError("no usable rows (all over the length limit)")
    return out


def encode_prompts(
    rows: Iterable[dict | str], tokenizer, *, max_length: int | None, max_new_tokens: int
) -> tuple[list[list[int]], list[str]]:
    """Prompt ids for RL (room left for ``max_new_tokens``) and their texts."""
    ids, texts = [], []
    for i, row in enumerate(rows):
        where = f"row {i}"
        prompt = (
            row if isinstance(row, str) else row.get("prompt") if isinstance(row, dict) else None
        )
        if prompt is None:
            raise PerlError(f"{where}: no 'prompt' column")
        text = prompt_text(tokenizer, prompt)
        if not text.strip():
            raise PerlError(f"{where}: empty prompt")
        p = tokenizer(text, add_special_tokens=False)["input_ids"]
        _check_length(len(p) + max_new_tokens, max_length, f"{where} (prompt + max_new_tokens)")
        ids.append(p)
        texts.append(text)
    if not ids:
        raise PerlError("no prompts")
    return ids, texts


def pad(
    seqs: Sequence[Sequence[int]], pad_id: int, *, left: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention_mask)`` of a batch padded on the right (or left)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, sl] = torch.tensor(list(s), dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def pad_id(tokenizer) -> int:
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else _eos_id(tokenizer))
