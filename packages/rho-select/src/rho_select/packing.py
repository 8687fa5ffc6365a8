"""Packing documents into fixed-length sequences, the layout reference scores are aligned to.

Reference losses depend on context, so they are valid only for the exact packed sequences they
were computed on. A :class:`PackedCorpus` records how it was made (``packing``) and hashes its
tokens; the scores manifest stores both, and loading scores for other data fails loudly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from .errors import RhoSelectError


def tokens_sha256(input_ids: torch.Tensor) -> str:
    """Hash of a ``[sequences, seq_len]`` id tensor (as int32, shape included)."""
    ids = input_ids.to(torch.int32).contiguous().cpu()
    h = hashlib.sha256(repr(tuple(ids.shape)).encode())
    h.update(ids.numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class PackedCorpus:
    """``input_ids [sequences, seq_len]`` (int64) and the ``packing`` record that made them."""

    input_ids: torch.Tensor
    packing: dict = field(default_factory=dict)

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def sha256(self) -> str:
        return tokens_sha256(self.input_ids)


def pack_documents(
    documents: Iterable[Sequence[int]], seq_len: int, separator: int | None
) -> PackedCorpus:
    """Concatenate tokenized documents, each followed by ``separator`` (e.g. the EOS id; None:
    nothing between documents), and cut the stream into ``seq_len``-token sequences; the tail
    shorter than ``seq_len`` is dropped."""
    if seq_len < 2:
        raise RhoSelectError(f"seq_len must be at least 2, got {seq_len}")
    stream: list[int] = []
    count = 0
    for doc in documents:
        stream.extend(int(t) for t in doc)
        if separator is not None:
            stream.append(int(separator))
        count += 1
    n = len(stream) // seq_len
    if n == 0:
        raise RhoSelectError(
            f"{len(stream)} tokens in {count} document(s) do not fill one sequence of {seq_len}"
        )
    ids = torch.tensor(stream[: n * seq_len], dtype=torch.int64).view(n, seq_len)
    packing = {
        "method": "concat",
        "seq_len": seq_len,
        "separator": separator,
        "documents": count,
        "dropped_tail_tokens": len(stream) - n * seq_len,
    }
    return PackedCorpus(ids, packing)


def tokenize_and_pack(tokenizer, texts: Iterable[str], seq_len: int) -> PackedCorpus:
    """Tokenize texts (no special tokens added) and pack them, separated by the EOS id."""
    separator = getattr(tokenizer, "eos_token_id", None)
    docs = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts if t.strip())
    return pack_documents(docs, seq_len, separator)
