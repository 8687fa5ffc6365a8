"""Token classes for FastGen's C_special and C_punct: a lookup table over the vocabulary.

Special: the tokenizer's special tokens (BOS/EOS/PAD/UNK and added special tokens such as the
chat-template markers ``<|im_start|>``/``<|im_end|>``), plus any ``extra_special`` ids. The
policies additionally treat the first real token of a row as special (the paper's ``<s>``).
Punctuation: tokens whose text, stripped of whitespace, is non-empty and made only of
``punct_chars`` (default ``.,:;!?``, the paper's ".", ":", "?" family).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch

from .rules import CLS_NORMAL, CLS_PUNCT, CLS_SPECIAL

DEFAULT_PUNCT = ".,:;!?"


def token_classes(
    tokenizer=None,
    *,
    vocab_size: int | None = None,
    punct_chars: str = DEFAULT_PUNCT,
    extra_special: Iterable[int] = (),
    config=None,
) -> torch.Tensor:
    """``[vocab]`` int8 table of ``rules.CLS_*``.

    Without a tokenizer, only ``extra_special`` and the special ids of ``config`` (bos, eos,
    pad) are special and nothing is punctuation.
    """
    key = (vocab_size, punct_chars, tuple(sorted(int(i) for i in extra_special)), _ids(config))
    if tokenizer is not None:
        try:
            memo = _MEMO.setdefault(tokenizer, {})
        except TypeError:  # not weak-referenceable: no memo
            memo = {}
        if key not in memo:
            memo[key] = _table(tokenizer, vocab_size, punct_chars, extra_special, config)
        return memo[key].clone()
    return _table(tokenizer, vocab_size, punct_chars, extra_special, config)


# Decoding every vocabulary entry takes seconds: one table per tokenizer and arguments.
_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _ids(config) -> tuple:
    if config is None:
        return ()
    return tuple(
        repr(getattr(config, n, None)) for n in ("bos_token_id", "eos_token_id", "pad_token_id")
    )


def _table(tokenizer, vocab_size, punct_chars, extra_special, config) -> torch.Tensor:
    if tokenizer is not None:
        size = max(len(tokenizer), vocab_size or 0)
    elif vocab_size is not None:
        size = vocab_size
    else:
        raise ValueError("token_classes needs a tokenizer or a vocab_size")
    table = torch.full((size,), CLS_NORMAL, dtype=torch.int8)
    specials = set(int(i) for i in extra_special)
    if config is not None:
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            v = getattr(config, name, None)
            if isinstance(v, int):
                specials.add(v)
            elif isinstance(v, (list, tuple)):
                specials.update(int(x) for x in v)
    if tokenizer is not None:
        specials.update(int(i) for i in tokenizer.all_special_ids)
        decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        specials.update(int(i) for i, tok in decoder.items() if getattr(tok, "special", False))
        allowed = set(punct_chars)
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        punct = [
            i
            for i, text in enumerate(texts)
            if (s := text.strip()) and all(ch in allowed for ch in s)
        ]
        if punct:
            table[torch.tensor(punct)] = CLS_PUNCT
    specials = [i for i in specials if 0 <= i < size]
    if specials:
        table[torch.tensor(specials)] = CLS_SPECIAL
    return table
