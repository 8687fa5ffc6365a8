"""Positional chunk reads: element ranges of any tensor of a checkpoint, from several threads.

``ChunkReader(ckpt).read(name, begin, count, buf)`` returns elements ``[begin, begin + count)``
of the flattened tensor ``name``:

- safetensors data, by default (``use_mmap=True``): a slice of a read-only shared memory mapping
  of the file (the page cache itself, no copy; input pages count as file-backed RSS, not process
  memory). File sizes are checked against the header before mapping; a file truncated by another
  process *during* the run would raise SIGBUS, so ``use_mmap=False`` reads with ``os.preadv``
  into the caller's reusable ``buf`` instead (one shared descriptor per file, so the kernel's
  readahead sees sequential reads);
- pickled ``.pt``/``.bin`` tensors (memory-mapped by ``torch.load``): a slice of the tensor.

``prefetch(name, begin, count)`` hints the kernel (``POSIX_FADV_WILLNEED``) to start reading a
range that will be needed soon, so the disk works while the caller computes. All methods are
thread-safe; ``close()`` releases descriptors and mappings.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .errors import CorruptCheckpointError
from .readahead import willneed
from .safetensors_file import TensorInfo

if TYPE_CHECKING:  # reader imports this module lazily; no cycle at run time
    from .reader import Checkpoint


class ChunkReader:
    """Positional reads of tensor chunks from one checkpoint; safe to use from several threads."""

    def __init__(self, ckpt: Checkpoint, *, use_mmap: bool = True) -> None:
        self.ckpt = ckpt
        self.use_mmap = use_mmap
        self._fds: dict[str, int] = {}
        self._maps: dict[str, tuple[mmap.mmap, torch.Tensor]] = {}
        self._flat: tuple[str, torch.Tensor] | None = None
        self._lock = threading.Lock()

    def _fd(self, path: Path) -> int:
        key = str(path)
        with self._lock:
            fd = self._fds.get(key)
            if fd is None:
                fd = os.open(key, os.O_RDONLY)
                self._fds[key] = fd
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            return fd

    def read(
        self, name: str, begin: int, count: int, buf: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Elements ``[begin, begin + count)`` of ``name`` (flattened) as a flat tensor of its
        dtype. ``buf`` (a uint8 tensor of at least ``count`` elements' bytes) is used by the
        ``preadv`` path; without it a fresh buffer is allocated. Do not write to the result."""
        info = self.ckpt.info(name)
        if begin < 0 or count < 0 or begin + count > info.numel:
            raise ValueError(
                f"{info.file}: elements [{begin}, {begin + count}) are outside tensor "
                f"{name!r} of {info.numel} elements"
            )
        if info.start is None:  # memory-mapped pickle
            with self._lock:
                if self._flat is None or self._flat[0] != name:
                    self._flat = (name, self.ckpt.get(name).reshape(-1))
                flat = self._flat[1]
            return flat[begin : begin + count]
        size = info.dtype.itemsize
        nbytes = count * size
        start = info.byte_range[0]
        if self.use_mmap and (start + begin * size) % size == 0:
            raw = self._map(info)
            if raw is not None:
                offset = start + begin * size
                return raw[offset : offset + nbytes].view(info.dtype)
        if buf is None or buf.numel() < nbytes:
            buf = torch.empty(nbytes, dtype=torch.uint8)
        view = buf[:nbytes]
        if nbytes:
            fd = self._fd(info.file)
            mv = view.numpy().data
            got, offset = 0, start + begin * size
            while got < nbytes:
                n = os.preadv(fd, [mv[got:]], offset + got)
                if n <= 0:
                    raise CorruptCheckpointError(
                        f"{info.file}: tensor {info.name!r} is cut short "
                        f"({begin * size + got} of {info.nbytes} bytes; truncated)"
                    )
                got += n
        return view.view(info.dtype)

    def _map(self, info: TensorInfo) -> torch.Tensor | None:
        """The whole file as a read-only uint8 tensor over a shared mapping (page cache pages,
        not process memory); None for an empty file."""
        key = str(info.file)
        with self._lock:
            entry = self._maps.get(key)
        if entry is None:
            fd = self._fd(info.file)
            size = os.fstat(fd).st_size
            if size < info.byte_range[1]:  # never map past the end: touching that is SIGBUS
                raise CorruptCheckpointError(
                    f"{info.file}: tensor {info.name!r} is cut short (file is {size} bytes; truncated)"
                )
            if size == 0:
                return None
            mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
            if hasattr(mmap, "MADV_SEQUENTIAL"):
                mm.madvise(mmap.MADV_SEQUENTIAL)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # read-only buffer: never written through
                raw = torch.frombuffer(mm, dtype=torch.uint8)
            with self._lock:
                entry = self._maps.setdefault(key, (mm, raw))
        return entry[1]

    def prefetch(self, name: str, begin: int, count: int) -> None:
        """Ask the kernel to start reading a chunk that will be needed soon (asynchronous)."""
        info = self.ckpt.info(name)
        if info.start is None or not count:
            return
        size = info.dtype.itemsize
        with contextlib.suppress(OSError):
            willneed(self._fd(info.file), info.start + begin * size, count * size)

    def close(self) -> None:
        with self._lock:
            self._maps.clear()  # the mappings close when the last tensor viewing them goes
            for fd in self._fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._fds.clear()
            self._flat = None

    def __enter__(self) -> ChunkReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
