"""Read a single ``.safetensors`` file one tensor at a time.

We parse and validate the header ourselves (rather than trusting ``safe_open``) so that every
malformed file gets a precise one-line error before any tensor is read, and we read each tensor
with one ``readinto`` into its own buffer: peak memory is the tensor, never the file.

Format: 8-byte little-endian header length N, N bytes of JSON, then the data section. The JSON
maps tensor names to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to
the data section) plus an optional ``"__metadata__"`` string-to-string map.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from .dtypes import torch_dtype
from .errors import CheckpointNotFoundError, CorruptCheckpointError, DuplicateTensorError

# safetensors itself refuses headers above 100 MB; a larger one is corruption, not a model.
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is, known without reading its data."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    file: Path
    # Absolute byte range in ``file`` for safetensors; None for pickled state dicts.
    start: int | None = None
    end: int | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    @property
    def byte_range(self) -> tuple[int, int]:
        """``(start, end)`` in ``file``; only tensors of safetensors files have one."""
        if self.start is None or self.end is None:
            raise ValueError(f"tensor {self.name!r} of {self.file} has no byte range")
        return self.start, self.end


def _reject_duplicate_keys(path: Path):
    def hook(pairs):
        seen: dict = {}
        for key, value in pairs:
            if key in seen:
                raise DuplicateTensorError(f"{path}: tensor {key!r} appears twice in the header")
            seen[key] = value
        return seen

    return hook


def read_header(path: str | os.PathLike) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate a safetensors header; return (tensors in data order, metadata)."""
    path = Path(path)
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CorruptCheckpointError(
                    f"{path}: file is {file_size} bytes, too short for a safetensors header"
                )
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > file_size - 8:
                raise CorruptCheckpointError(
                    f"{path}: header length {header_len} runs past the end of the "
                    f"{file_size}-byte file (truncated or not safetensors)"
                )
            if header_len > MAX_HEADER_BYTES:
                raise CorruptCheckpointError(
                    f"{path}: header length {header_len} is implausibly large"
                )
            raw = f.read(header_len)
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CorruptCheckpointError(
            f"{path}: is a directory, expected a .safetensors file"
        ) from None
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicate_keys(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptCheckpointError(f"{path}: header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise CorruptCheckpointError(
            f"{path}: header is a JSON {type(header).__name__}, not an object"
        )

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CorruptCheckpointError(f"{path}: __metadata__ must map strings to strings")

    data_start = 8 + header_len
    data_size = file_size - data_start
    infos = [_parse_entry(path, name, entry, data_start) for name, entry in header.items()]
    infos.sort(key=lambda info: info.byte_range)
    cursor = data_start
    for info in infos:
        start, end = info.byte_range
        if start < cursor:
            raise CorruptCheckpointError(
                f"{path}: tensor {info.name!r} overlaps the tensor before it"
            )
        if start > cursor:
            raise CorruptCheckpointError(
                f"{path}: {start - cursor} unindexed bytes before tensor {info.name!r}"
            )
        cursor = end
    if cursor - data_start > data_size:
        raise CorruptCheckpointError(
            f"{path}: data section needs {cursor - data_start} bytes but the file holds "
            f"{data_size} (truncated)"
        )
    return {info.name: info for info in infos}, metadata


def _parse_entry(path: Path, name: str, entry: object, data_start: int) -> TensorInfo:
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict):
        raise CorruptCheckpointError(f"{where}: header entry is not an object")
    dtype = torch_dtype(entry.get("dtype"), where=where)
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise CorruptCheckpointError(f"{where}: shape {shape!r} is not a list of non-negative ints")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise CorruptCheckpointError(f"{where}: data_offsets {offsets!r} are not [begin, end]")
    start, end = data_start + offsets[0], data_start + offsets[1]
    info = TensorInfo(name, dtype, tuple(shape), path, start, end)
    if end - start != info.nbytes:
        raise CorruptCheckpointError(
            f"{where}: data_offsets span {end - start} bytes but "
            f"{dtype} {list(shape)} needs {info.nbytes}"
        )
    return info


def read_tensor(info: TensorInfo, handle=None) -> torch.Tensor:
    """Read one tensor's bytes into a fresh CPU tensor (one allocation, one read)."""
    start, end = info.byte_range
    return read_range(info, 0, end - start, handle).reshape(info.shape)


def read_range(info: TensorInfo, byte_start: int, nbytes: int, handle=None) -> torch.Tensor:
    """Read ``nbytes`` of a tensor's data from ``byte_start`` (relative to the tensor) as a flat
    tensor of its dtype; both must be multiples of the element size."""
    buffer = torch.empty(nbytes, dtype=torch.uint8)
    if nbytes:
        own = handle is None
        f = open(info.file, "rb") if own else handle  # noqa: SIM115 - closed below
        try:
            f.seek(info.byte_range[0] + byte_start)
            got = f.readinto(buffer.numpy().data)
        finally:
            if own:
                f.close()
        if got != nbytes:
            raise CorruptCheckpointError(
                f"{info.file}: tensor {info.name!r} is cut short ({got} of {nbytes} bytes; truncated)"
            )
    return buffer.view(info.dtype)
