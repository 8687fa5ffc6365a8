"""One reader for every checkpoint layout we accept, streaming one tensor at a time.

Layouts: a ``.safetensors`` file; a PyTorch ``.pt``/``.bin`` state dict; a Hugging Face model
directory holding ``model.safetensors`` or sharded ``model-0000x-of-0000y.safetensors`` with
``model.safetensors.index.json`` (or the ``pytorch_model*.bin`` equivalents).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import torch

from .errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    DuplicateTensorError,
)
from .safetensors_file import TensorInfo, read_header, read_tensor
from .torch_file import load_state_dict

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
TORCH_INDEX = "pytorch_model.bin.index.json"
TORCH_SINGLE = "pytorch_model.bin"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


@dataclass
class Checkpoint:
    """An opened checkpoint: names, dtypes and shapes known; tensor data read on demand.

    ``kind`` is ``"safetensors"``, ``"torch"`` or ``"directory"``. For directories,
    ``shard_of`` maps each tensor to its shard file name (relative to ``path``) and
    ``index_metadata`` holds the index file's ``metadata`` object.
    """

    path: Path
    kind: str
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)
    shard_of: dict[str, str] = field(default_factory=dict)
    index_metadata: dict = field(default_factory=dict)
    _state_dicts: dict[Path, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)
    _handle: tuple[Path, BinaryIO] | None = field(default=None, repr=False)

    # -- mapping-like access -------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self.tensors)

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def __len__(self) -> int:
        return len(self.tensors)

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None

    @property
    def total_bytes(self) -> int:
        return sum(info.nbytes for info in self.tensors.values())

    @property
    def is_directory(self) -> bool:
        return self.kind == "directory"

    @property
    def is_sharded(self) -> bool:
        return len(set(self.shard_of.values())) > 1 or (
            self.is_directory and (self.path / SAFETENSORS_INDEX).exists()
        )

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor (a fresh CPU tensor for safetensors, a memory-mapped one for pickles)."""
        info = self.info(name)
        if info.start is None:
            return self._state_dicts[info.file][name]
        return read_tensor(info, self._file_handle(info.file))

    def iter_chunks(self, name: str, chunk_elements: int) -> Iterator[torch.Tensor]:
        """Yield a tensor's elements in flattened order, ``chunk_elements`` at a time.

        Peak memory is one chunk, not the tensor: streaming code can read, transform and write
        (``SafetensorsWriter.write_chunk``) a tensor of any size in bounded memory. Reads go
        through ``ChunkReader`` (positional reads, usable from several threads).
        """
        if chunk_elements <= 0:
            raise ValueError(f"chunk_elements must be positive, got {chunk_elements}")
        from .chunks import ChunkReader  # imported on use: it needs mmap/threading machinery

        numel = self.info(name).numel
        with ChunkReader(self, use_mmap=False) as reader:  # a fresh buffer per chunk
            for begin in range(0, numel, chunk_elements):
                yield reader.read(name, begin, min(chunk_elements, numel - begin))

    def iter_tensors(
        self, names: Iterable[str] | None = None
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(name, tensor)`` in on-disk order, so reads are sequential."""
        wanted = self.tensors if names is None else {n: self.info(n) for n in names}
        for name in sorted(wanted, key=self._disk_order):
            yield name, self.get(name)

    def _disk_order(self, name: str):
        info = self.tensors[name]
        return (str(info.file), info.start if info.start is not None else 0)

    def _file_handle(self, path: Path):
        # Keep one file open: streaming reads walk the shards in order.
        if self._handle is None or self._handle[0] != path:
            self.close()
            self._handle = (path, open(path, "rb"))  # noqa: SIM115 - closed in close()
        return self._handle[1]

    def close(self) -> None:
        if self._handle is not None:
            self._handle[1].close()
            self._handle = None

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_checkpoint(path: str | os.PathLike, *, allow_unsafe_pickle: bool = False) -> Checkpoint:
    """Open any supported checkpoint; headers are validated, no tensor data is read.

    ``allow_unsafe_pickle`` lets a ``.pt``/``.bin`` file unpickle arbitrary objects; leave it off
    unless you trust the file's source.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"{path}: no such file or directory")
    if path.is_dir():
        return _open_directory(path, allow_unsafe_pickle)
    if path.suffix == ".safetensors":
        tensors, metadata = read_header(path)
        return Checkpoint(path, "safetensors", tensors, metadata)
    if path.suffix in TORCH_SUFFIXES:
        state = load_state_dict(path, allow_unsafe_pickle=allow_unsafe_pickle)
        return Checkpoint(
            path, "torch", _infos_from_state_dict(path, state), _state_dicts={path: state}
        )
    raise CheckpointError(
        f"{path}: unknown checkpoint type (expected .safetensors, {'/'.join(TORCH_SUFFIXES)}, "
        "or a model directory)"
    )


def _infos_from_state_dict(path: Path, state: dict[str, torch.Tensor]) -> dict[str, TensorInfo]:
    return {name: TensorInfo(name, t.dtype, tuple(t.shape), path) for name, t in state.items()}


def _open_directory(path: Path, allow_unsafe_pickle: bool) -> Checkpoint:
    if (path / SAFETENSORS_INDEX).exists():
        return _open_index(path, path / SAFETENSORS_INDEX, allow_unsafe_pickle)
    if (path / SAFETENSORS_SINGLE).exists():
        shards = [SAFETENSORS_SINGLE]
    elif (path / TORCH_INDEX).exists():
        return _open_index(path, path / TORCH_INDEX, allow_unsafe_pickle)
    elif (path / TORCH_SINGLE).exists():
        shards = [TORCH_SINGLE]
    else:
        # A directory of safetensors files without an index: take their union.
        shards = sorted(p.name for p in path.glob("*.safetensors"))
        if not shards:
            raise CheckpointNotFoundError(
                f"{path}: no {SAFETENSORS_SINGLE}, {SAFETENSORS_INDEX}, {TORCH_SINGLE} or "
                "*.safetensors files in this directory"
            )
    return _open_shards(path, {}, shards, allow_unsafe_pickle, {})


def _open_index(path: Path, index_path: Path, allow_unsafe_pickle: bool) -> Checkpoint:
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptCheckpointError(f"{index_path}: not valid JSON ({err})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CorruptCheckpointError(f"{index_path}: missing or malformed 'weight_map'")
    shards = list(dict.fromkeys(weight_map.values()))
    for shard in shards:
        if Path(shard).name != shard:
            raise CorruptCheckpointError(f"{index_path}: shard {shard!r} is not a plain file name")
    index_metadata = index.get("metadata") or {}
    return _open_shards(path, weight_map, shards, allow_unsafe_pickle, index_metadata)


def _open_shards(
    path: Path,
    weight_map: dict[str, str],
    shards: list[str],
    allow_unsafe_pickle: bool,
    index_metadata: dict,
) -> Checkpoint:
    tensors: dict[str, TensorInfo] = {}
    shard_of: dict[str, str] = {}
    metadata: dict[str, str] = {}
    state_dicts: dict[Path, dict[str, torch.Tensor]] = {}
    for shard in shards:
        shard_path = path / shard
        if not shard_path.exists():
            raise CheckpointNotFoundError(f"{path}: shard {shard} named by the index is missing")
        if shard_path.suffix == ".safetensors":
            infos, shard_meta = read_header(shard_path)
            metadata.update(shard_meta)
        else:
            state = load_state_dict(shard_path, allow_unsafe_pickle=allow_unsafe_pickle)
            state_dicts[shard_path] = state
            infos = _infos_from_state_dict(shard_path, state)
        for name, info in infos.items():
            if name in tensors:
                raise DuplicateTensorError(
                    f"{path}: tensor {name!r} is in both {shard_of[name]} and {shard}"
                )
            if weight_map and weight_map.get(name) != shard:
                raise CorruptCheckpointError(
                    f"{path}: tensor {name!r} is stored in {shard} but the index maps it to "
                    f"{weight_map.get(name, 'nothing')}"
                )
            tensors[name] = info
            shard_of[name] = shard
    missing = [name for name in weight_map if name not in tensors]
    if missing:
        raise CorruptCheckpointError(
            f"{path}: {len(missing)} tensors in the index are in no shard (first: {missing[0]!r})"
        )
    return Checkpoint(path, "directory", tensors, metadata, shard_of, index_metadata, state_dicts)
