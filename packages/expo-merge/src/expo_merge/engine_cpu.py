"""The CPU engine (see ``stream.py``): tensors in chunks through a few threads, ordered writes.

Inputs are read with tensor-utils' ``ChunkReader`` (memory-mapped by default: the op reads the
page cache directly, measured ~25% less CPU than ``os.preadv`` into buffers;
``EXPO_MERGE_READ=pread`` reads into per-worker buffers instead) and prefetched a few chunks
ahead with its ``prefetch`` hint.
"""

from __future__ import annotations

import os
import threading

import torch

from tensor_utils.checkpoint import ChunkReader

from . import compute
from .errors import ExpoMergeError
from .progress import progress_bar
from .spec import RunSpec
from .stats import StepStats
from .stream import Job, make_jobs, run_pipeline, sample_ranges

MAX_WORKERS = 4  # CPU engine threads (at most one per core)

State = tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[StepStats]]


def default_workers() -> int:
    return min(MAX_WORKERS, os.cpu_count() or 1)


def run_cpu(spec: RunSpec) -> None:
    chunk = spec.chunk_elements
    if chunk <= 0:
        raise ExpoMergeError(f"chunk_elements must be positive, got {chunk}")
    workers = spec.workers or default_workers()
    forced = os.environ.get("TENSOR_UTILS_BACKEND", "")
    if spec.backend == "triton" or forced == "triton":
        workers = 1  # Triton on CPU tensors means its interpreter, which is not thread-safe
    plans, alphas = spec.plans, spec.alphas
    jobs = make_jobs([p.numel for p in plans], chunk)
    in_bytes = chunk * max((p.dtype.itemsize for p in plans), default=1)
    out_bytes = chunk * max((p.out_dtype.itemsize for p in plans), default=1)
    use_mmap = os.environ.get("EXPO_MERGE_READ", "mmap") != "pread"
    s_read = ChunkReader(spec.sft, use_mmap=use_mmap)
    a_read = ChunkReader(spec.aligned, use_mmap=use_mmap)
    local_stats: list[list[StepStats]] = []
    lock = threading.Lock()
    bar = progress_bar(plans, spec.progress)

    def make_state() -> State:
        st = [StepStats(a) for a in alphas]
        with lock:
            local_stats.append(st)
        return (
            torch.empty(in_bytes, dtype=torch.uint8),
            torch.empty(in_bytes, dtype=torch.uint8),
            [torch.empty(out_bytes, dtype=torch.uint8) for _ in alphas],
            st,
        )

    def prefetch(job: Job) -> None:
        plan = plans[job.plan_index]
        a_read.prefetch(plan.name, job.begin, job.count)
        if plan.sft_name is not None:
            s_read.prefetch(plan.sft_name, job.begin, job.count)

    def process(state: State, index: int, job: Job) -> list[torch.Tensor]:
        s_buf, a_buf, o_bufs, st = state
        plan = plans[job.plan_index]
        a = a_read.read(plan.name, job.begin, job.count, a_buf)
        n = job.count * plan.out_dtype.itemsize
        if plan.sft_name is None:  # copied from ALIGNED
            if a.dtype == plan.out_dtype:
                return [a] * len(alphas)
            out = o_bufs[0][:n].view(plan.out_dtype)
            out.copy_(a)
            return [out] * len(alphas)
        s = s_read.read(plan.sft_name, job.begin, job.count, s_buf)
        return compute.compute_chunk(
            plan.name,
            s,
            a,
            alphas,
            st,
            [b[:n].view(plan.out_dtype) for b in o_bufs],
            sample_ranges(job.begin, job.begin + job.count, spec.exact_stats),
            backend=spec.backend,
            allow_overflow=spec.allow_overflow,
        )

    def emit(index: int, job: Job, outs: list[torch.Tensor]) -> None:
        plan = plans[job.plan_index]
        for sink, out in zip(spec.sinks, outs, strict=True):
            sink.write_chunk(plan.name, out)
        bar.update(job.count * plan.dtype.itemsize * (2 if plan.sft_name is not None else 1))

    # Parallelism comes from the workers: one intra-op thread each avoids oversubscription.
    threads = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(1)
    try:
        run_pipeline(jobs, workers, make_state, process, emit, prefetch)
    finally:
        if workers > 1:
            torch.set_num_threads(threads)
        s_read.close()
        a_read.close()
        bar.close()
    for st in local_stats:
        for total, part in zip(spec.stats, st, strict=True):
            total.merge(part)
