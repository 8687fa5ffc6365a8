"""Rule-based rewards a user can read, for building preference data and checking RL."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .errors import PerlError

_NUMBER = re.compile(r"\d")


def contains_number(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """1.0 for a response that contains a digit, else 0.0 (``reward_fn`` signature)."""
    return [1.0 if _NUMBER.search(r) else 0.0 for r in responses]


class WordBand:
    """A length band: 1.0 for a response of ``min_words`` to ``max_words`` words (split on
    whitespace), else 0.0 (``reward_fn`` signature). An empty response scores 0 unless
    ``min_words`` is 0."""

    def __init__(self, min_words: int, max_words: int):
        if not 0 <= min_words <= max_words:
            raise PerlError(f"need 0 <= min_words <= max_words, got {min_words}, {max_words}")
        self.min_words, self.max_words = min_words, max_words

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        lo, hi = self.min_words, self.max_words
        return [1.0 if lo <= len(r.split()) <= hi else 0.0 for r in responses]

    def __repr__(self) -> str:
        return f"WordBand({self.min_words}, {self.max_words})"
