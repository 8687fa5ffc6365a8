"""Write safetensors checkpoints (one file, or size-limited shards with an index) atomically.

Everything goes to a hidden temporary sibling of the output; it is renamed into place only
after every tensor was written and synced, so a crash, an error or a full disk never leaves a
half-written checkpoint under the real name. The header of each shard is known before any data
(from the ``TensorSpec`` list), so tensors can be streamed in, in any order, one at a time.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import remove, replace, temp_sibling
from .dtypes import safetensors_dtype
from .errors import CheckpointError, CheckpointWriteError
from .reader import SAFETENSORS_INDEX, SAFETENSORS_SINGLE

DEFAULT_MAX_SHARD_SIZE = 5 * 10**9  # transformers' long-standing default, "5GB"
_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


@dataclass(frozen=True)
class TensorSpec:
    """What will be written under ``name``: known before the data exists."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @classmethod
    def of(cls, name: str, tensor: torch.Tensor) -> TensorSpec:
        return cls(name, tensor.dtype, tuple(tensor.shape))


def parse_size(size: int | str) -> int:
    """``5000000``, ``"5GB"``, ``"512MiB"`` -> bytes."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?I?B?)\s*", str(size).upper())
        if not match or match.group(2) not in _UNITS:
            raise ValueError(
                f"cannot read size {size!r} (use e.g. 5GB, 500MB, 2GiB or a byte count)"
            )
        value = int(float(match.group(1)) * _UNITS[match.group(2)])
    if value <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return value


def plan_shards(specs: Iterable[TensorSpec], max_shard_size: int | str) -> dict[str, str]:
    """Greedy in-order split into shards no larger than ``max_shard_size`` (a bigger tensor gets its own)."""
    limit = parse_size(max_shard_size)
    groups: list[list[str]] = [[]]
    used = 0
    for spec in specs:
        if groups[-1] and used + spec.nbytes > limit:
            groups.append([])
            used = 0
        groups[-1].append(spec.name)
        used += spec.nbytes
    if len(groups) == 1:
        return dict.fromkeys(groups[0], SAFETENSORS_SINGLE)
    n = len(groups)
    return {
        name: f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        for i, group in enumerate(groups)
        for name in group
    }


def _header_bytes(
    specs: list[TensorSpec], metadata: Mapping[str, str]
) -> tuple[bytes, dict[str, int]]:
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offsets: dict[str, int] = {}
    cursor = 0
    for spec in specs:
        dtype = safetensors_dtype(spec.dtype, where=f"tensor {spec.name!r}")
        header[spec.name] = {
            "dtype": dtype,
            "shape": list(spec.shape),
            "data_offsets": [cursor, cursor + spec.nbytes],
        }
        offsets[spec.name] = cursor
        cursor += spec.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # keep the data section 8-byte aligned, as safetensors does
    return struct.pack("<Q", len(raw)) + raw, offsets


class SafetensorsWriter:
    """Stream tensors into a new safetensors checkpoint.

    ``out`` ending in ``.safetensors`` gives one file; anything else a Hugging Face style
    directory (``model.safetensors``, or shards plus ``model.safetensors.index.json``).
    ``shard_names`` fixes each tensor's shard file (to mirror an input's layout); otherwise
    shards are cut at ``max_shard_size``. Use as a context manager: a clean exit commits,
    an exception removes everything written.

        specs = [TensorSpec.of(n, t) for n, t in state.items()]
        with SafetensorsWriter("out/", specs, max_shard_size="2GB") as w:
            for n, t in state.items():
                w.write(n, t)
    """

    def __init__(
        self,
        out: str | os.PathLike,
        specs: Iterable[TensorSpec],
        *,
        max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
        shard_names: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        index_metadata: Mapping[str, object] | None = None,
        write_index: bool | None = None,
        overwrite: bool = False,
    ) -> None:
        self.out = Path(out)
        self.specs = {}
        for spec in specs:
            if spec.name in self.specs:
                raise CheckpointError(f"{self.out}: tensor {spec.name!r} is listed twice")
            self.specs[spec.name] = spec
        self.single_file = self.out.suffix == ".safetensors"
        self.metadata = {"format": "pt", **(metadata or {})}
        self.index_metadata = dict(index_metadata or {})
        self._check_destination(overwrite)

        if self.single_file:
            shard_of = dict.fromkeys(self.specs, self.out.name)
        elif shard_names is not None:
            unmapped = [n for n in self.specs if n not in shard_names]
            if unmapped:
                raise CheckpointError(f"{self.out}: no shard given for tensor {unmapped[0]!r}")
            shard_of = {n: shard_names[n] for n in self.specs}
        else:
            shard_of = plan_shards(self.specs.values(), max_shard_size)
        self.shard_of = shard_of
        # An empty checkpoint is still one (header-only) file.
        shards = list(dict.fromkeys(shard_of.values())) or [
            self.out.name if self.single_file else SAFETENSORS_SINGLE
        ]
        self.write_index = (len(shards) > 1) if write_index is None else write_index
        if self.single_file and self.write_index:
            raise CheckpointError(f"{self.out}: a single .safetensors file cannot have an index")

        self.tmp = temp_sibling(self.out)
        self._fds: dict[str, int] = {}
        self._offsets: dict[str, tuple[str, int]] = {}
        self._written: set[str] = set()
        self._progress: dict[str, int] = {}  # elements written so far, for chunked writes
        self._closed = False
        try:
            self._allocate(shards)
        except BaseException:
            self.abort()
            raise

    # -- setup ---------------------------------------------------------------------------
    def _check_destination(self, overwrite: bool) -> None:
        if not self.out.parent.is_dir():
            raise CheckpointWriteError(f"{self.out.parent}: output folder does not exist")
        if self.out.exists() and not overwrite:
            raise CheckpointWriteError(
                f"{self.out}: already exists (overwrite it explicitly, e.g. --force)"
            )
        if self.out.exists() and self.out.is_dir() != (not self.single_file):
            kind = "directory" if self.out.is_dir() else "file"
            raise CheckpointWriteError(
                f"{self.out}: exists as a {kind}; refusing to replace it with the other kind"
            )
        need = sum(s.nbytes for s in self.specs.values())
        free = shutil.disk_usage(self.out.parent).free
        if need > free:
            raise CheckpointWriteError(
                f"{self.out.parent}: needs {need / 1e9:.2f} GB but only {free / 1e9:.2f} GB are free"
            )

    def _allocate(self, shards: list[str]) -> None:
        if not self.single_file:
            self.tmp.mkdir()
        for shard in shards:
            members = [s for s in self.specs.values() if self.shard_of[s.name] == shard]
            header, offsets = _header_bytes(members, self.metadata)
            path = self.tmp if self.single_file else self.tmp / shard
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            self._fds[shard] = fd
            size = len(header) + sum(s.nbytes for s in members)
            self._reserve(fd, size)
            self._pwrite_all(fd, header, 0)
            for name, offset in offsets.items():
                self._offsets[name] = (shard, len(header) + offset)

    def _reserve(self, fd: int, size: int) -> None:
        # Reserve real blocks now so a full disk fails here, before hours of work.
        try:
            os.posix_fallocate(fd, 0, size) if size else None
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise self._disk_full() from None
            os.ftruncate(fd, size)  # filesystem without fallocate: sparse file instead

    def _disk_full(self) -> CheckpointWriteError:
        return CheckpointWriteError(f"{self.out}: no space left on device; nothing was written")

    # -- writing -------------------------------------------------------------------------
    @property
    def staging_dir(self) -> Path:
        """Folder that becomes ``out`` on commit: put config/tokenizer files here."""
        if self.single_file:
            raise CheckpointError(f"{self.out}: a single-file output has no folder for extra files")
        return self.tmp

    def add_file(self, src: str | os.PathLike, name: str | None = None) -> None:
        """Copy a side file (config.json, tokenizer...) into the output directory."""
        shutil.copy2(src, self.staging_dir / (name or Path(src).name))

    def _spec(self, name: str) -> TensorSpec:
        spec = self.specs.get(name)
        if spec is None:
            raise CheckpointError(f"{self.out}: tensor {name!r} was not declared")
        if name in self._written:
            raise CheckpointError(f"{self.out}: tensor {name!r} written twice")
        return spec

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write a whole tensor (dtype and shape as declared)."""
        spec = self._spec(name)
        if self._progress.get(name):
            raise CheckpointError(f"{self.out}: tensor {name!r} was partly written in chunks")
        if tensor.dtype != spec.dtype or tuple(tensor.shape) != spec.shape:
            raise CheckpointError(
                f"{self.out}: tensor {name!r} is {tensor.dtype} {list(tensor.shape)}, "
                f"declared {spec.dtype} {list(spec.shape)}"
            )
        self._write_bytes(name, tensor, 0)
        self._written.add(name)

    def write_chunk(self, name: str, chunk: torch.Tensor) -> None:
        """Append the next elements of a tensor in flattened (row-major) order.

        Lets a tensor be produced slice by slice so that no full copy of it is ever held; the
        tensor counts as written once its chunks cover all of its elements.
        """
        spec = self._spec(name)
        if chunk.dtype != spec.dtype:
            raise CheckpointError(
                f"{self.out}: chunk of {name!r} is {chunk.dtype}, declared {spec.dtype}"
            )
        done = self._progress.get(name, 0)
        total = math.prod(spec.shape)
        if done + chunk.numel() > total:
            raise CheckpointError(
                f"{self.out}: chunks of {name!r} exceed its {total} elements ({done + chunk.numel()})"
            )
        self._write_bytes(name, chunk, done * spec.dtype.itemsize)
        self._progress[name] = done + chunk.numel()
        if self._progress[name] == total:
            self._written.add(name)

    def _write_bytes(self, name: str, tensor: torch.Tensor, byte_offset: int) -> None:
        shard, offset = self._offsets[name]
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        try:
            self._pwrite_all(self._fds[shard], data.data, offset + byte_offset)
        except OSError as err:
            self.abort()
            if err.errno == errno.ENOSPC:
                raise self._disk_full() from None
            raise CheckpointWriteError(f"{self.out}: write failed ({err.strerror})") from None

    @staticmethod
    def _pwrite_all(fd: int, data, offset: int) -> None:
        view = memoryview(data).cast("B")
        while view:
            n = os.pwrite(fd, view, offset)
            view = view[n:]
            offset += n

    # -- finishing -----------------------------------------------------------------------
    def commit(self) -> Path:
        """Check completeness, sync, write the index and move into place. Returns ``out``."""
        missing = [n for n in self.specs if n not in self._written]
        if missing:
            self.abort()
            raise CheckpointWriteError(
                f"{self.out}: {len(missing)} declared tensors were never written (first: {missing[0]!r})"
            )
        try:
            for fd in self._fds.values():
                os.fsync(fd)
            self._close_fds()
            if self.write_index:
                total = sum(s.nbytes for s in self.specs.values())
                index = {
                    "metadata": {**self.index_metadata, "total_size": total},
                    "weight_map": dict(sorted(self.shard_of.items())),
                }
                (self.tmp / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
            self._move_into_place()
        except OSError as err:
            self.abort()
            if err.errno == errno.ENOSPC:
                raise self._disk_full() from None
            raise CheckpointWriteError(f"{self.out}: could not finish ({err.strerror})") from None
        self._closed = True
        return self.out

    def _move_into_place(self) -> None:
        replace(self.tmp, self.out)

    def abort(self) -> None:
        """Remove everything written so far; safe to call more than once."""
        self._close_fds()
        remove(self.tmp)
        self._closed = True

    def _close_fds(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._closed:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def save_safetensors(
    state_dict: Mapping[str, torch.Tensor], out: str | os.PathLike, **kwargs
) -> Path:
    """Write a whole state dict (file or sharded directory) atomically; see ``SafetensorsWriter``."""
    specs = [TensorSpec.of(name, t) for name, t in state_dict.items()]
    with SafetensorsWriter(out, specs, **kwargs) as writer:
        for name, tensor in state_dict.items():
            writer.write(name, tensor)
    return Path(out)
