"""Errors with one-line messages: the CLI prints ``expo-merge: error: <message>`` and exits 1.

Checkpoint problems found by tensor-utils (missing, truncated or unsafe files, full disk...) are
``tensor_utils.checkpoint.CheckpointError``; the ones below are about the *pair* of models or
the request. Everything is a ``ValueError``.
"""

from __future__ import annotations


class ExpoMergeError(ValueError):
    """Base class of expo-merge's own errors."""


class MismatchError(ExpoMergeError):
    """SFT and ALIGNED do not hold the same tensors (names, shapes or dtypes differ)."""


class VocabSizeMismatchError(MismatchError):
    """The two models have different vocabulary sizes (the message names both)."""


class QuantizedCheckpointError(ExpoMergeError):
    """A quantized checkpoint: ExPO deltas are far below quantization error, so it is refused."""


class OutputError(ExpoMergeError):
    """The output path cannot be used (exists without --force, wrong kind, no space...)."""


class StepOverflowError(ExpoMergeError):
    """The extrapolated value does not fit the output dtype (fp16/bf16 overflow to inf)."""


class PatternError(ExpoMergeError):
    """An ``--include``/``--exclude`` pattern matches no tensor (the filter would do nothing)."""
