"""Ask the kernel to start reading checkpoint files into the page cache (no torch import).

``start_readahead(paths)`` issues ``POSIX_FADV_WILLNEED`` hints for the first part of every
input, alternating between inputs in 32 MB pieces, from a background thread, so the disk is busy
while the process does something else (importing torch takes 1-5 s of CPU on a small machine,
longer than reading a gigabyte). It is bounded (``per_input`` bytes of each input, at most an
eighth of the available memory in all) and only a hint: nothing is read into process memory and
nothing here can fail the caller. ``willneed`` is the same hint for one byte range.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

DEFAULT_PER_INPUT = 1 << 30
PIECE = 32 << 20


def willneed(fd: int, offset: int, length: int) -> None:
    """Hint that ``[offset, offset + length)`` of ``fd`` will be read soon (asynchronous)."""
    if length > 0 and hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)


def checkpoint_files(path: str | os.PathLike) -> list[Path]:
    """The data files of a checkpoint path: the file itself, or a directory's weight shards."""
    path = Path(path)
    if path.is_dir():
        shards = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
        return [f for f in shards if f.is_file()]
    return [path] if path.is_file() else []


def available_memory() -> int:
    """``MemAvailable`` from /proc/meminfo in bytes (0 where unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def plan_readahead(paths, per_input: int = DEFAULT_PER_INPUT) -> list[tuple[Path, int, int]]:
    """``(file, offset, length)`` hints, alternating between inputs."""
    if per_input < 0:
        raise ValueError(f"per_input must be >= 0 bytes, got {per_input}")
    budget = min(per_input, available_memory() // (8 * max(1, len(paths))))
    queues = []
    for p in paths:
        left, pieces = budget, []
        for f in checkpoint_files(p):
            size = f.stat().st_size
            for off in range(0, min(size, left), PIECE):
                pieces.append((f, off, min(PIECE, size - off, left - off)))
            left -= min(size, left)
            if left <= 0:
                break
        queues.append(pieces)
    out = []
    for i in range(max((len(q) for q in queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return out


def _run(hints: list[tuple[Path, int, int]]) -> None:
    fds: dict[Path, int] = {}
    try:
        for f, off, length in hints:
            if f not in fds:
                fds[f] = os.open(f, os.O_RDONLY)
            willneed(fds[f], off, length)
    except OSError:
        pass  # only a hint: the reader itself reports unreadable files
    finally:
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)


def start_readahead(paths, per_input: int = DEFAULT_PER_INPUT) -> threading.Thread | None:
    """Start the hints on a daemon thread; ``None`` when there is nothing to do."""
    if not hasattr(os, "posix_fadvise") or per_input <= 0:
        return None
    try:
        hints = plan_readahead(paths, per_input)
    except OSError:
        return None
    if not hints:
        return None
    thread = threading.Thread(target=_run, args=(hints,), name="checkpoint-readahead", daemon=True)
    thread.start()
    return thread
