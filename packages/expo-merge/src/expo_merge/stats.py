"""Per-run statistics: how much of the intended ExPO step survived output rounding.

For each extrapolated tensor we accumulate, per alpha,

- ``changed``: elements whose stored value differs from ALIGNED (converted to the output dtype);
- ``nonzero_delta``: elements where ALIGNED != SFT (the only ones ExPO can move);
- ``intended_sq`` = sum((alpha * (aligned - sft))**2) and ``realized_sq`` = sum((out - aligned)**2).

``realized / intended`` (ratio of the two norms) near 1 means the step was applied; well below 1
means the output dtype rounded small steps away (common in bf16 at small alpha).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SWALLOW_WARN = 0.10  # warn when more than this fraction of movable elements did not move
RATIO_WARN = 0.90


def delta_stats(aligned: torch.Tensor, sft: torch.Tensor) -> tuple[int, float]:
    """(count of ALIGNED != SFT, sum((aligned - sft)**2)) for one chunk, alpha-independent."""
    work = torch.float64 if torch.float64 in (aligned.dtype, sft.dtype) else torch.float32
    d = aligned.to(work) - sft.to(work)
    return int(torch.count_nonzero(d)), float(torch.sum(d * d, dtype=torch.float64))


@dataclass
class StepStats:
    alpha: float
    elements: int = 0  # elements the statistics looked at (a sample on the CPU, see merge.py)
    total_elements: int = 0  # elements extrapolated
    changed: int = 0
    nonzero_delta: int = 0
    intended_sq: float = 0.0
    realized_sq: float = 0.0
    overflowed: int = 0  # outputs that overflowed to inf (only with allow_overflow)
    first_overflow: str = ""  # the first tensor that did

    def add_output(
        self, aligned: torch.Tensor, out: torch.Tensor, nonzero: int, delta_sq: float
    ) -> None:
        """Account one output chunk; ``nonzero``/``delta_sq`` come from ``delta_stats``."""
        ref = aligned if aligned.dtype == out.dtype else aligned.to(out.dtype)
        self.elements += out.numel()
        self.changed += int(torch.count_nonzero(out != ref))
        work = torch.float64 if torch.float64 in (out.dtype, aligned.dtype) else torch.float32
        r = out.to(work) - aligned.to(work)
        self.realized_sq += float(torch.sum(r * r, dtype=torch.float64))
        self.intended_sq += self.alpha * self.alpha * delta_sq
        self.nonzero_delta += nonzero

    def merge(self, other: StepStats) -> None:
        self.elements += other.elements
        self.total_elements += other.total_elements
        self.changed += other.changed
        self.nonzero_delta += other.nonzero_delta
        self.intended_sq += other.intended_sq
        self.realized_sq += other.realized_sq
        self.overflowed += other.overflowed
        self.first_overflow = self.first_overflow or other.first_overflow

    @property
    def fraction_changed(self) -> float:
        return self.changed / self.elements if self.elements else 0.0

    @property
    def step_ratio(self) -> float | None:
        """||out - aligned|| / ||alpha * (aligned - sft)||; None when nothing was to move or
        the outputs overflowed (the norm is then not finite)."""
        if self.intended_sq == 0 or self.overflowed or not math.isfinite(self.realized_sq):
            return None
        return math.sqrt(self.realized_sq) / math.sqrt(self.intended_sq)

    @property
    def swallowed_fraction(self) -> float:
        """Fraction of elements with ALIGNED != SFT whose output still equals ALIGNED."""
        if not self.nonzero_delta or self.alpha == 0:
            return 0.0
        return max(0.0, 1.0 - self.changed / self.nonzero_delta)

    def warning(self, out_dtype_name: str) -> str | None:
        if self.overflowed:
            return (
                f"alpha={self.alpha:g}: {self.overflowed} element(s) overflowed {out_dtype_name} "
                f"and were written as inf (first tensor: {self.first_overflow!r})"
            )
        ratio = self.step_ratio
        if self.alpha == 0 or ratio is None:
            return None
        if self.swallowed_fraction > SWALLOW_WARN or ratio < RATIO_WARN:
            return (
                f"alpha={self.alpha:g}: {out_dtype_name} rounding swallowed the step for "
                f"{self.swallowed_fraction:.0%} of the elements that differ between SFT and ALIGNED; "
                f"realized step is {ratio:.2f} of intended (use --dtype fp32 to keep it)"
            )
        return None

    def to_dict(self) -> dict:
        return {
            "alpha": self.alpha,
            "elements": self.total_elements,
            "elements_sampled_for_stats": self.elements,
            "elements_changed": self.changed,
            "fraction_changed": self.fraction_changed,
            "elements_with_delta": self.nonzero_delta,
            "fraction_swallowed": self.swallowed_fraction,
            "intended_step_norm": math.sqrt(self.intended_sq),
            "realized_step_norm": math.sqrt(self.realized_sq),
            "realized_over_intended": self.step_ratio,
            "elements_overflowed": self.overflowed,
        }
