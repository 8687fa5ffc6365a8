"""Rule-based rewards a user can read, for building preference data and checking RL."""

from __future__ import annotations

import re
from collections.abc import Sequence

_NUMBER = re.compile(r"\d")


def contains_number(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """1.0 for a response that contains a digit, else 0.0 (``reward_fn`` signature)."""
    return [1.0 if _NUMBER.search(r) else 0.0 for r in responses]
