"""Errors rho-select raises on bad input: each carries one line that names the problem."""

from __future__ import annotations


class RhoSelectError(ValueError):
    """Base class: bad input to rho-select (the message is one line, printed as is by the CLI)."""


class ManifestMismatchError(RhoSelectError):
    """Stored reference scores do not belong to the data they are used with (another tokenizer,
    sequence length, packing or token stream): using them would silently misalign scores."""


class ScoresFormatError(RhoSelectError):
    """A scores directory is missing files or holds files of an unexpected shape or dtype."""
