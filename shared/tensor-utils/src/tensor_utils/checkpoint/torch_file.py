"""Read PyTorch ``.pt``/``.bin`` state dicts without unpickling arbitrary code.

``torch.load(mmap=True, weights_only=True)`` maps the storages instead of reading them, so
iterating the tensors touches one tensor's pages at a time. Training-loop checkpoints often
wrap the weights (``{"state_dict": ..., "epoch": 3}``); we unwrap the usual keys.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from .errors import CheckpointNotFoundError, CorruptCheckpointError, UnsafeCheckpointError

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights")


def load_state_dict(
    path: str | Path, *, allow_unsafe_pickle: bool = False
) -> dict[str, torch.Tensor]:
    """Load a (possibly wrapped) state dict, memory-mapped where the file format allows."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise CorruptCheckpointError(f"{path}: is a directory, expected a .pt/.bin file")
    # Only zip-format files can be memory-mapped; legacy (pre-1.6) pickles are read whole.
    mmap = zipfile.is_zipfile(path)
    try:
        obj = torch.load(path, map_location="cpu", mmap=mmap, weights_only=not allow_unsafe_pickle)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err):
            lines = str(err).splitlines()
            detail = next(
                (ln.strip().rstrip(".") for ln in lines if "unsupported" in ln.lower()), ""
            )
            raise UnsafeCheckpointError(
                f"{path}: refusing to unpickle objects other than tensors"
                f"{' (' + detail + ')' if detail else ''}; "
                "pass allow_unsafe_pickle=True only if you trust this file"
            ) from None
        raise CorruptCheckpointError(
            f"{path}: not a readable PyTorch file ({_first_line(err)})"
        ) from None
    except Exception as err:  # a damaged pickle can fail in any way inside the unpickler
        raise CorruptCheckpointError(
            f"{path}: not a readable PyTorch file ({_first_line(err)})"
        ) from None
    return unwrap_state_dict(obj, where=str(path))


def unwrap_state_dict(obj: object, *, where: str) -> dict[str, torch.Tensor]:
    """Find the name-to-tensor mapping inside common training-checkpoint wrappers."""
    for _ in range(4):  # wrappers nest at most a few levels deep in practice
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            bad = [k for k in obj if not isinstance(k, str)]
            if bad:
                raise CorruptCheckpointError(f"{where}: tensor key {bad[0]!r} is not a string")
            return dict(obj)
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            odd = next((k for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
            if odd is not None and any(isinstance(v, torch.Tensor) for v in obj.values()):
                raise CorruptCheckpointError(
                    f"{where}: entry {odd!r} is a {type(obj[odd]).__name__}, not a tensor"
                )
            break
        obj = inner
    if isinstance(obj, dict) and not obj:
        return {}
    raise CorruptCheckpointError(
        f"{where}: no state dict found (expected a dict of tensors, or one under "
        f"{'/'.join(WRAPPER_KEYS)}); got {type(obj).__name__}"
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
