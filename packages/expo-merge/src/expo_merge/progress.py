"""The tqdm progress bar both engines show (bytes read)."""

from __future__ import annotations

from collections.abc import Sequence

from tqdm.auto import tqdm

from .plan import TensorPlan


def progress_bar(plans: Sequence[TensorPlan], progress: bool | None) -> tqdm:
    total = sum(p.nbytes * (2 if p.action == "extrapolate" else 1) for p in plans)
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc="expo-merge",
        disable=(None if progress is None else not progress),
        leave=False,
    )
