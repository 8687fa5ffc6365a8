"""Checkpoint errors: each carries a one-line message that names the file and the problem.

Every class subclasses ``CheckpointError`` (a ``ValueError``) so a CLI can catch one type and
print ``str(err)`` instead of a traceback.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """Base class: something about a checkpoint on disk is wrong or unsupported."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The path, a shard named by an index, or an index itself does not exist."""


class CorruptCheckpointError(CheckpointError):
    """The file exists but its bytes do not form a valid checkpoint (truncated, bad header...)."""


class UnsupportedDtypeError(CheckpointError):
    """A tensor's dtype is unknown to the format or to torch."""


class DuplicateTensorError(CheckpointError):
    """The same tensor name appears twice (in one header, or in two shards)."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle needs arbitrary code to load and the caller did not allow it."""


class CheckpointWriteError(CheckpointError, OSError):
    """Writing failed (existing output, disk full, incomplete writer); nothing was left behind."""
