"""NaN-poison fresh allocations so a kernel that forgets to write an element is caught."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .tolerances import nan_like


@contextlib.contextmanager
def poison_allocations() -> Iterator[None]:
    """Inside the block, ``torch.empty``/``empty_like``/``Tensor.new_empty`` return NaN-filled
    (float) or max-filled (int) tensors instead of uninitialized memory."""
    originals = (torch.empty, torch.empty_like, torch.Tensor.new_empty)

    def empty(*args, **kwargs):
        return nan_like(originals[0](*args, **kwargs))

    def empty_like(*args, **kwargs):
        return nan_like(originals[1](*args, **kwargs))

    def new_empty(self, *args, **kwargs):
        return nan_like(originals[2](self, *args, **kwargs))

    torch.empty, torch.empty_like, torch.Tensor.new_empty = empty, empty_like, new_empty
    try:
        yield
    finally:
        torch.empty, torch.empty_like, torch.Tensor.new_empty = originals
