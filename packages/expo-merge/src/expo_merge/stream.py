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

The reads, the ``WILLNEED`` prefetch and the mappings are tensor-utils'
``tensor_utils.checkpoint.ChunkReader``; this module holds the job list and the ordered
pipeline, ``engine_cpu.py`` puts them together.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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
    make_state: Callable[[], Any],
    process: Callable[[Any, int, Job], Any],
    emit: Callable[[int, Job, Any], None],
    prefetch: Callable[[Job], None] | None = None,
) -> None:
    """Process ``jobs`` on ``workers`` threads (the caller's thread is one of them).

    ``process(state, index, job)`` runs concurrently (``state`` is per worker, from
    ``make_state``); ``emit(index, job, result)`` runs strictly in job order, one at a time, and
    before the worker takes its next job (so the worker's buffers are free again). The first
    exception stops all workers and is re-raised in the caller's thread.
    """
    cond = threading.Condition()
    status: dict[str, Any] = {"next": 0, "turn": 0, "error": None}

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

    def stop() -> None:
        with cond:
            if status["error"] is None:
                status["error"] = _Stopped()
            cond.notify_all()

    for t in threads:
        t.start()
    interrupted: BaseException | None = None
    try:
        work()
    except BaseException:  # e.g. KeyboardInterrupt outside a job: stop the other workers
        stop()
        raise
    finally:
        # Never return while a worker still runs (it would write into outputs being removed):
        # an interrupt that arrives while waiting stops the others, then waits on.
        for t in threads:
            while t.is_alive():
                try:
                    t.join()
                except BaseException as err:
                    stop()
                    interrupted = interrupted or err
    if interrupted is not None:
        raise interrupted
    err = status["error"]
    if err is not None and not isinstance(err, _Stopped):
        raise err


class _Stopped(Exception):
    """Placeholder error: the caller's thread left early (its own exception propagates)."""
