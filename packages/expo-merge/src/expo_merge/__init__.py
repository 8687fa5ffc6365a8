"""expo-merge: ExPO model extrapolation, theta = aligned + alpha * (aligned - sft).

- ``extrapolate_state_dict(sft, aligned, alpha)``: in-memory state dicts.
- ``extrapolate_checkpoints(sft_path, aligned_path, alpha, out)``: streams checkpoints from disk.
- ``expo_merge.ops.extrapolate``: the per-tensor op (Triton on CUDA, the PyTorch reference
  otherwise).
"""

from typing import TYPE_CHECKING

from tensor_utils.version import package_version

__version__ = package_version("expo-merge", __file__)

from .errors import (
    ExpoMergeError,
    MismatchError,
    OutputError,
    PatternError,
    QuantizedCheckpointError,
    StepOverflowError,
    VocabSizeMismatchError,
)

if TYPE_CHECKING:
    from .merge import MergeReport, extrapolate_checkpoints, extrapolate_state_dict


def __getattr__(name: str):
    # The torch-based API loads on first use, so the CLI can start reading inputs first.
    if name in ("MergeReport", "extrapolate_checkpoints", "extrapolate_state_dict"):
        from . import merge

        return getattr(merge, name)
    raise AttributeError(f"module 'expo_merge' has no attribute {name!r}")


__all__ = [
    "ExpoMergeError",
    "MergeReport",
    "MismatchError",
    "OutputError",
    "PatternError",
    "QuantizedCheckpointError",
    "StepOverflowError",
    "VocabSizeMismatchError",
    "__version__",
    "extrapolate_checkpoints",
    "extrapolate_state_dict",
]
