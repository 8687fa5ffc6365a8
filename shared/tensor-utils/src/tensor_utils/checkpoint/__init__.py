"""Streaming checkpoint I/O: read any common layout one tensor at a time; write atomically."""

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

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CheckpointWriteError",
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
