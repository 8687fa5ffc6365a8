"""Start reading the inputs from disk while Python imports torch (no torch import here).

Importing torch takes 1-5 s of CPU on a small machine, longer than reading a gigabyte from disk.
``start(paths)`` asks the kernel (``POSIX_FADV_WILLNEED``, asynchronous readahead into the page
cache) for the first part of every input, in the order the merge reads them, from a background
thread, so that the disk is busy during the import. It is bounded (by default 1 GiB per input and
at most an eighth of the available memory in all) and only a hint: the page cache may drop the
pages again, and nothing here reads data into process memory or can fail the run.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

PER_INPUT = 1 << 30
PIECE = 32 << 20  # hint in pieces, alternating inputs, so both get read early


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        shards = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
        return [f for f in shards if f.is_file()]
    return [path] if path.is_file() else []


def _available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def plan(paths, per_input: int = PER_INPUT) -> list[tuple[Path, int, int]]:
    """(file, offset, length) hints, alternating between inputs."""
    budget = min(per_input, _available() // (8 * max(1, len(paths))))
    queues = []
    for p in paths:
        left, pieces = budget, []
        for f in _files(Path(p)):
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


def _run(hints) -> None:
    fds: dict[Path, int] = {}
    try:
        for f, off, length in hints:
            if f not in fds:
                fds[f] = os.open(f, os.O_RDONLY)
            os.posix_fadvise(fds[f], off, length, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass  # only a hint: the merge itself reports unreadable files
    finally:
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)


def start(paths, per_input: int = PER_INPUT) -> threading.Thread | None:
    if not hasattr(os, "posix_fadvise") or per_input <= 0:
        return None
    try:
        hints = plan(paths, per_input)
    except OSError:
        return None
    if not hints:
        return None
    thread = threading.Thread(target=_run, args=(hints,), name="expo-merge-prefetch", daemon=True)
    thread.start()
    return thread
