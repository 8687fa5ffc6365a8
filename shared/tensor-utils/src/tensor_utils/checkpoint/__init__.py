"""Streaming checkpoint I/O: read any common layout one tensor (or one chunk) at a time, write
atomically.

- ``open_checkpoint`` / ``Checkpoint``: safetensors files, ``.pt``/``.bin`` state dicts and
  Hugging Face directories (sharded or not); headers validated, data read on demand.
- ``ChunkReader``: positional element-range reads (memory-mapped or ``preadv``) with
  ``POSIX_FADV_WILLNEED`` prefetch, safe from several threads.
- ``SafetensorsWriter``: stream tensors or chunks into a file or sharded directory.
- ``atomic``: hidden temporary siblings and the atomic replace every writer uses.
- ``readahead``: page-cache hints for whole inputs (imports no torch, so a CLI can start them
  before importing torch).

Names load on first use, so ``tensor_utils.checkpoint.readahead`` and ``.atomic`` import without
torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .chunks import ChunkReader
    from .errors import (
        CheckpointError,
        CheckpointNotFoundError,
        CheckpointWriteError,
        CorruptCheckpointError,
        DuplicateTensorError,
        UnsafeCheckpointError,
        UnsupportedDtypeError,
    )
    from .reader import Checkpoint, open_checkpoint
    from .safetensors_file import TensorInfo, read_header
    from .torch_file import load_state_dict, unwrap_state_dict
    from .writer import SafetensorsWriter, TensorSpec, parse_size, plan_shards, save_safetensors

_WHERE = {
    "ChunkReader": "chunks",
    "CheckpointError": "errors",
    "CheckpointNotFoundError": "errors",
    "CheckpointWriteError": "errors",
    "CorruptCheckpointError": "errors",
    "DuplicateTensorError": "errors",
    "UnsafeCheckpointError": "errors",
    "UnsupportedDtypeError": "errors",
    "Checkpoint": "reader",
    "open_checkpoint": "reader",
    "TensorInfo": "safetensors_file",
    "read_header": "safetensors_file",
    "load_state_dict": "torch_file",
    "unwrap_state_dict": "torch_file",
    "SafetensorsWriter": "writer",
    "TensorSpec": "writer",
    "parse_size": "writer",
    "plan_shards": "writer",
    "save_safetensors": "writer",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'tensor_utils.checkpoint' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CheckpointWriteError",
    "ChunkReader",
    "CorruptCheckpointError",
    "DuplicateTensorError",
    "SafetensorsWriter",
    "TensorInfo",
    "TensorSpec",
    "UnsafeCheckpointError",
    "UnsupportedDtypeError",
    "load_state_dict",
    "open_checkpoint",
    "parse_size",
    "plan_shards",
    "read_header",
    "save_safetensors",
    "unwrap_state_dict",
]
