"""One typed description of a streamed run, handed to whichever engine runs it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from tensor_utils.checkpoint import Checkpoint

from .plan import TensorPlan
from .stats import StepStats


class Sink(Protocol):
    """Where one alpha's output goes (``outputs.SafetensorsSink`` / ``outputs.TorchFileSink``)."""

    def write(self, name: str, tensor: torch.Tensor) -> None: ...
    def write_chunk(self, name: str, chunk: torch.Tensor) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


@dataclass
class RunSpec:
    """Everything an engine needs: what to compute, from where, into where, and how.

    ``plans`` are in ALIGNED's on-disk order; ``sinks`` and ``stats`` hold one entry per alpha.
    ``device`` is where the math runs: the CPU engine (``engine_cpu``) streams chunks of
    ``chunk_elements`` through ``workers`` threads; the device engine (``engine_device``) moves
    one whole tensor at a time.
    """

    plans: Sequence[TensorPlan]
    sft: Checkpoint
    aligned: Checkpoint
    alphas: Sequence[float]
    sinks: Sequence[Sink]
    stats: Sequence[StepStats]
    device: torch.device
    chunk_elements: int
    progress: bool | None = False  # None: tqdm decides (on for a terminal)
    backend: str | None = None  # the extrapolate op's backend= (None: automatic)
    exact_stats: bool = False
    workers: int | None = None  # CPU threads (None: one per core, at most MAX_WORKERS)
    allow_overflow: bool = False
