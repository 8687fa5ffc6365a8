"""Output sinks: stream tensors in one at a time, commit atomically, or leave nothing behind.

- ``SafetensorsSink``: a ``.safetensors`` file or a Hugging Face directory, through
  ``tensor_utils.checkpoint.SafetensorsWriter`` (hidden temporary sibling, renamed at commit).
- ``TorchFileSink``: a ``.pt``/``.bin`` state dict. tensor-utils has no streaming ``.pt`` writer,
  so each output tensor goes into a memory-mapped scratch file (page cache, not process memory)
  and ``torch.save`` writes them from there to a temporary name that tensor-utils'
  ``atomic.replace`` moves into place. Tied names are saved as one shared tensor, as in the input.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from tensor_utils.checkpoint import SafetensorsWriter, TensorSpec
from tensor_utils.checkpoint.atomic import remove, replace, temp_sibling

from .errors import OutputError
from .plan import TensorPlan

_ALIGN = 64


class SafetensorsSink:
    def __init__(
        self,
        out: Path,
        plans: Sequence[TensorPlan],
        *,
        shard_names: Mapping[str, str] | None,
        max_shard_size: int | str | None,
        metadata: Mapping[str, str],
        index_metadata: Mapping[str, object],
        write_index: bool | None,
        overwrite: bool,
        side_files: Sequence[Path] = (),
    ) -> None:
        specs = [TensorSpec(p.name, p.out_dtype, p.shape) for p in plans]
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
        self.writer = SafetensorsWriter(
            out,
            specs,
            shard_names=shard_names,
            metadata=metadata,
            index_metadata=index_metadata,
            write_index=write_index,
            overwrite=overwrite,
            **kwargs,
        )
        self.path = out
        try:
            for f in side_files:
                self.writer.add_file(f)
        except OSError as err:
            self.writer.abort()
            raise OutputError(f"{out}: could not copy {f.name} ({err.strerror})") from None

    @property
    def shard_of(self) -> dict[str, str]:
        return dict(self.writer.shard_of)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        self.writer.write(name, tensor)

    def write_chunk(self, name: str, chunk: torch.Tensor) -> None:
        """Append the next flattened elements of ``name`` (see ``SafetensorsWriter.write_chunk``)."""
        self.writer.write_chunk(name, chunk)

    def commit(self) -> None:
        self.writer.commit()

    def abort(self) -> None:
        self.writer.abort()


class TorchFileSink:
    def __init__(self, out: Path, plans: Sequence[TensorPlan], *, overwrite: bool) -> None:
        if out.exists() and not overwrite:
            raise OutputError(f"{out}: already exists (pass --force to replace it)")
        if out.is_dir():
            raise OutputError(f"{out}: is a directory; a .pt/.bin output must be a file")
        self.path = out
        self.plans = list(plans)
        self.by_name = {p.name: p for p in self.plans}
        self.scratch = temp_sibling(out, "scratch")
        self.tmp = temp_sibling(out)
        self.slots: dict[str, tuple[int, int]] = {}
        cursor = 0
        for p in self.plans:
            self.slots[p.name] = (cursor, p.out_nbytes)
            cursor += -(-p.out_nbytes // _ALIGN) * _ALIGN
        self.tensors: dict[str, torch.Tensor] = {}
        self.progress: dict[str, int] = {}  # elements written so far, for chunked writes
        self._mm = None
        try:
            if cursor:
                self._mm = np.memmap(self.scratch, dtype=np.uint8, mode="w+", shape=(cursor,))
        except OSError as err:
            self.abort()
            raise _write_error(out, err) from None

    def _slot(self, plan: TensorPlan) -> torch.Tensor:
        offset, nbytes = self.slots[plan.name]
        if nbytes == 0 or self._mm is None:
            return torch.empty(plan.shape, dtype=plan.out_dtype)
        raw = torch.from_numpy(self._mm[offset : offset + nbytes])
        return raw.view(plan.out_dtype).reshape(plan.shape)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        plan = self.by_name.get(name)
        if plan is None or name in self.tensors:
            raise OutputError(f"{self.path}: tensor {name!r} not declared or written twice")
        slot = self._slot(plan)
        try:
            slot.copy_(tensor)
        except RuntimeError as err:  # SIGBUS-free failure paths of a full disk surface here
            self.abort()
            raise OutputError(f"{self.path}: writing {name!r} failed ({err})") from None
        self.tensors[name] = slot

    def write_chunk(self, name: str, chunk: torch.Tensor) -> None:
        """Append the next flattened elements of ``name``; it counts as written when complete."""
        plan = self.by_name.get(name)
        if plan is None or name in self.tensors:
            raise OutputError(f"{self.path}: tensor {name!r} not declared or written twice")
        done = self.progress.get(name, 0)
        if done + chunk.numel() > plan.numel:
            raise OutputError(f"{self.path}: chunks of {name!r} exceed its {plan.numel} elements")
        slot = self._slot(plan)
        try:
            slot.reshape(-1)[done : done + chunk.numel()].copy_(chunk.reshape(-1))
        except RuntimeError as err:
            self.abort()
            raise OutputError(f"{self.path}: writing {name!r} failed ({err})") from None
        self.progress[name] = done + chunk.numel()
        if self.progress[name] == plan.numel:
            self.tensors[name] = slot

    def commit(self) -> None:
        missing = [p.name for p in self.plans if p.name not in self.tensors]
        if missing:
            self.abort()
            raise OutputError(
                f"{self.path}: {len(missing)} tensors never written (first: {missing[0]!r})"
            )
        state: dict[str, torch.Tensor] = {}
        for p in self.plans:
            state[p.name] = self.tensors[p.name]
            for alias in p.aliases:
                state[alias] = self.tensors[p.name]
        try:
            with open(self.tmp, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            replace(self.tmp, self.path)
        except (OSError, RuntimeError) as err:
            self.abort()
            raise _write_error(self.path, err) from None
        finally:
            self._drop_scratch()

    def _drop_scratch(self) -> None:
        self.tensors.clear()
        self._mm = None
        remove(self.scratch)

    def abort(self) -> None:
        self._drop_scratch()
        remove(self.tmp)


def _write_error(out: Path, err: BaseException) -> OutputError:
    full = getattr(err, "errno", None) == errno.ENOSPC or "No space left" in str(err)
    if full:
        return OutputError(f"{out}: no space left on device; nothing was written")
    detail = getattr(err, "strerror", None) or str(err).splitlines()[0]
    return OutputError(f"{out}: write failed ({detail}); nothing was written")
