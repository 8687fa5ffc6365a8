"""Atomic replace: build an output under a hidden temporary sibling, then move it into place.

A run that fails, is interrupted or is killed before ``replace`` leaves only the temporary
sibling, which the caller removes (``remove``) in its error path; the real name either keeps its
old content or gets the complete new one, never a partial write.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def temp_sibling(path: str | os.PathLike, tag: str = "tmp") -> Path:
    """A fresh hidden name next to ``path`` (same filesystem, so renames are atomic)."""
    path = Path(path)
    return path.parent / f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}"


def remove(path: str | os.PathLike) -> None:
    """Delete a file or a directory tree; a missing path is fine."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def replace(staging: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Move ``staging`` (a file or a directory) to ``target``, replacing what is there.

    A file over a file is one ``os.replace``. Otherwise the old ``target`` is renamed to a hidden
    sibling first and deleted after the new one is in place, so ``target`` is never half-written.
    """
    staging, target = Path(staging), Path(target)
    if not staging.is_dir() and not target.is_dir():
        os.replace(staging, target)
        return target
    old = None
    if target.exists() or target.is_symlink():
        old = temp_sibling(target, "old")
        os.rename(target, old)
    os.rename(staging, target)
    if old is not None:
        remove(old)
    return target
