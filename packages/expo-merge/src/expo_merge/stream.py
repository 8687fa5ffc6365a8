"""The CPU streaming engine: tensors in fixed-size chunks, a few worker threads, ordered writes.

Every tensor is cut into chunks of ``chunk_elements`` flattened elements. A small pool of worker
threads takes chunks in order. Each worker gets its chunk of SFT and ALIGNED, by default as a
slice of a read-only shared memory mapping of the file (the page cache itself, no copy; measured
~25% less CPU than reading into buffers), or with ``EXPO_MERGE_READ=pread`` by ``os.preadv`` into
its own reusable buffers (one shared descriptor per file, so the kernel's readahead sees
sequential reads). ``POSIX_FADV_WILLNEED`` hints run a few chunks ahead so the disk reads before
the math needs the data. The worker computes every output into its own buffers and, when its turn
comes, appends them to the outputs with ``write_chunk``. File reads, file writes and torch ops
release the GIL, so reading, math and writing overlap across the workers. Process memory is
O(workers x chunk), whatever the largest tensor; mapped input pages are page cache (RssFile).
File sizes are checked against the headers before mapping; a file truncated by another process
*during* the run would raise SIGBUS (``EXPO_MERGE_READ=pread`` avoids mappings).

tensor-utils' ``Checkpoint.iter_chunks`` does the same reads but is a per-tensor generator that
allocates a new buffer per chunk; positional reads into reused buffers from several threads are
implemented here (pickled ``.pt`` inputs are memory-mapped: chunks are slices of the mapping).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from tensor_utils.checkpoint import Checkpoint
from tensor_utils.checkpoint.errors import CorruptCheckpointError

STATS_SLICE = 1 << 24  # statistics sample the first STATS_SAMPLE elements of every 16M-element
STATS_SAMPLE = 1 << 16  # slice of each tensor (tensors under 64K elements: every element)
PREFETCH_CHUNKS = 8  # WILLNEED hints this many chunks per worker (16 MB in bf16) ahead


def sample_ranges(begin: int, end: int, exact: bool) -> list[tuple[int, int]]:
    """Chunk-relative ranges of the elements ``[begin, end)`` that the statistics look at."""
    if exact:
        return [(0, end - begin)] if end > begin else []
    out = []
    for k in range(begin // STATS_SLICE, (max(end, 1) - 1) // STATS_SLICE + 1):
        lo, hi = max(begin, k * STATS_SLICE), min(end, k * STATS_SLICE + STATS_SAMPLE)
        if lo < hi:
            out.append((lo - begin, hi - begin))
    return out


class ChunkReader:
    """Positional reads of tensor chunks from one checkpoint; safe to use from several threads."""

    def __init__(self, ckpt: Checkpoint, *, use_mmap: bool = False) -> None:
        self.ckpt = ckpt
        self.use_mmap = use_mmap
        self._fds: dict[str, int] = {}
        self._maps: dict[str, tuple[mmap.mmap, torch.Tensor]] = {}
        self._flat: tuple[str, torch.Tensor] | None = None
        self._lock = threading.Lock()

    def _fd(self, path) -> int:
        key = str(path)
        with self._lock:
            fd = self._fds.get(key)
            if fd is None:
                fd = os.open(key, os.O_RDONLY)
                self._fds[key] = fd
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            return fd

    def read(self, name: str, begin: int, count: int, buf: torch.Tensor) -> torch.Tensor:
        """Elements ``[begin, begin + count)`` of ``name`` (flattened), read into ``buf``
        (a uint8 tensor) for safetensors data, or a slice of the mapping for pickles."""
        info = self.ckpt.info(name)
        if info.start is None:  # memory-mapped pickle
            with self._lock:
                if self._flat is None or self._flat[0] != name:
                    self._flat = (name, self.ckpt.get(name).reshape(-1))
                flat = self._flat[1]
            return flat[begin : begin + count]
        size = info.dtype.itemsize
        nbytes = count * size
        if self.use_mmap and (info.start + begin * size) % size == 0:
            raw = self._map(info)
            if raw is not None:
                offset = info.start + begin * size
                return raw[offset : offset + nbytes].view(info.dtype)
        view = buf[:nbytes]
        if nbytes:
            fd = self._fd(info.file)
            mv = memoryview(view.numpy())
            got, offset = 0, info.start + begin * size
            while got < nbytes:
                n = os.preadv(fd, [mv[got:]], offset + got)
                if n <= 0:
                    raise CorruptCheckpointError(
                        f"{info.file}: tensor {info.name!r} is cut short "
                        f"({begin * size + got} of {info.nbytes} bytes; truncated)"
                    )
                got += n
        return view.view(info.dtype)

    def _map(self, info) -> torch.Tensor | None:
        """The whole file as a read-only uint8 tensor over a shared mapping (page cache pages,
        not process memory); None for an empty file."""
        key = str(info.file)
        with self._lock:
            entry = self._maps.get(key)
        if entry is None:
            fd = self._fd(info.file)
            size = os.fstat(fd).st_size
            if size < info.end:  # never map past the end: touching that would be SIGBUS
                raise CorruptCheckpointError(
                    f"{info.file}: tensor {info.name!r} is cut short (file is {size} bytes; truncated)"
                )
            if size == 0:
                return None
            mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
            if hasattr(mmap, "MADV_SEQUENTIAL"):
                mm.madvise(mmap.MADV_SEQUENTIAL)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # read-only buffer: we never write through it
                raw = torch.frombuffer(mm, dtype=torch.uint8)
            with self._lock:
                entry = self._maps.setdefault(key, (mm, raw))
        return entry[1]

    def prefetch(self, name: str, begin: int, count: int) -> None:
        """Ask the kernel to start reading a chunk that will be needed soon (asynchronous)."""
        info = self.ckpt.info(name)
        if info.start is None or not count or not hasattr(os, "posix_fadvise"):
            return
        size = info.dtype.itemsize
        with contextlib.suppress(OSError):
            os.posix_fadvise(
                self._fd(info.file),
                info.start + begin * size,
                count * size,
                os.POSIX_FADV_WILLNEED,
            )

    def close(self) -> None:
        with self._lock:
            self._maps.clear()  # the mappings close when the last tensor viewing them goes
            for fd in self._fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._fds.clear()
            self._flat = None


@dataclass(frozen=True)
class Job:
    plan_index: int
    begin: int
    count: int


def make_jobs(numels: Sequence[int], chunk: int) -> list[Job]:
    jobs = []
    for i, n in enumerate(numels):
        if n == 0:
            jobs.append(Job(i, 0, 0))  # still has to be declared written
        for b in range(0, n, chunk):
            jobs.append(Job(i, b, min(chunk, n - b)))
    return jobs


def run_pipeline(
    jobs: Sequence[Job],
    workers: int,
    make_state: Callable[[], object],
    process: Callable[[object, int, Job], object],
    emit: Callable[[int, Job, object], None],
    prefetch: Callable[[Job], None] | None = None,
) -> None:
    """Process ``jobs`` on ``workers`` threads (the caller's thread is one of them).

    ``process(state, index, job)`` runs concurrently (``state`` is per worker, from
    ``make_state``); ``emit(index, job, result)`` runs strictly in job order, one at a time, and
    before the worker takes its next job (so the worker's buffers are free again). The first
    exception stops all workers and is re-raised in the caller's thread.
    """
    cond = threading.Condition()
    status = {"next": 0, "turn": 0, "error": None}

    def work() -> None:
        state = make_state()
        while True:
            with cond:
                if status["error"] is not None or status["next"] >= len(jobs):
                    return
                index = status["next"]
                status["next"] += 1
            try:
                ahead = index + PREFETCH_CHUNKS * workers
                if prefetch is not None and ahead < len(jobs):
                    prefetch(jobs[ahead])
                result = process(state, index, jobs[index])
                with cond:
                    while status["turn"] != index and status["error"] is None:
                        cond.wait()
                    if status["error"] is not None:
                        return
                emit(index, jobs[index], result)
                with cond:
                    status["turn"] += 1
                    cond.notify_all()
            except BaseException as err:
                with cond:
                    if status["error"] is None:
                        status["error"] = err
                    cond.notify_all()
                return

    threads = [
        threading.Thread(target=work, name=f"expo-merge-{i}", daemon=True)
        for i in range(max(0, workers - 1))
    ]
    for t in threads:
        t.start()
    try:
        work()
    except BaseException:  # e.g. KeyboardInterrupt outside a job: stop the other workers
        with cond:
            if status["error"] is None:
                status["error"] = _Stopped()
            cond.notify_all()
        raise
    finally:
        for t in threads:
            t.join()
    err = status["error"]
    if err is not None and not isinstance(err, _Stopped):
        raise err


class _Stopped(Exception):
    """Placeholder error: the caller's thread left early (its own exception propagates)."""
