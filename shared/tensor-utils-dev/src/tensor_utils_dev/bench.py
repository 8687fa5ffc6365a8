"""Benchmark helpers: median timing, peak memory, and CSV rows tagged with the environment.

On CUDA, timing uses ``triton.testing.do_bench`` (L2 flushed between runs, CUDA events);
on the CPU a wall-clock loop. Rows are long-format (one measured value per row) so runs from
different machines and library versions can be concatenated and plotted together.
"""

from __future__ import annotations

import csv
import datetime as _dt
import importlib
import importlib.metadata
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

QUANTILES = (0.5, 0.2, 0.8)


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call: the median and the 20th/80th percentiles."""

    median_ms: float
    p20_ms: float
    p80_ms: float


def time_fn(
    fn: Callable[[], object], *, warmup: int = 25, rep: int = 100, device: str | None = None
) -> Timing:
    """Time ``fn()``. ``warmup``/``rep`` are milliseconds on CUDA (do_bench), call counts on CPU."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        from triton.testing import do_bench

        q = do_bench(fn, warmup=warmup, rep=rep, quantiles=list(QUANTILES))
        if not isinstance(q, list):  # one value per quantile whenever quantiles are given
            raise TypeError(
                f"triton.testing.do_bench returned {q!r}, expected {len(QUANTILES)} values"
            )
        return Timing(*q)
    for _ in range(max(1, min(warmup, 3))):
        fn()
    samples = []
    for _ in range(max(3, rep)):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    qs = statistics.quantiles(samples, n=10, method="inclusive")
    return Timing(statistics.median(samples), qs[1], qs[7])


def interleaved_medians(
    fns: Mapping[str, Callable[[], object]], rounds: int, *, rotate: bool = False
) -> dict[str, float]:
    """Median milliseconds per call of each function (CPU wall time), the functions called in
    turn once per round (A, B, A, B, ...) after one warm-up call each, so that drifting load
    hits all alike; ``rotate`` starts each round one function later (A, B, C, B, C, A, ...)."""
    for f in fns.values():
        f()
    times: dict[str, list[float]] = {n: [] for n in fns}
    names = list(fns)
    for r in range(rounds):
        shift = r % len(names) if rotate else 0
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {n: statistics.median(v) for n, v in times.items()}


def _proc_status(pid: int | str = "self") -> dict[str, int]:
    """Memory lines of /proc/<pid>/status in bytes (Linux only; empty elsewhere)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if value.strip().endswith("kB"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


class PeakMemory:
    """Peak memory of a block.

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset (``.cuda_bytes``; the part above
    the allocation at entry is ``.cuda_increase_bytes``).
    CPU: a sampling thread polls the anonymous resident memory of a process (``.anon_bytes``,
    memory outside the page cache: heap and tensors, not memory-mapped file pages;
    ``.anon_increase_bytes`` is the part above the level at entry), plus the
    kernel's own high-water mark of the whole RSS (``.rss_hwm_bytes``, file pages included).
    Pass ``pid`` to watch a child process (e.g. a peer tool run with subprocess).
    """

    def __init__(
        self, *, pid: int | None = None, interval_s: float = 0.005, cuda: bool | None = None
    ):
        self.pid = pid or os.getpid()
        self.interval_s = interval_s
        self.cuda = torch.cuda.is_available() if cuda is None else cuda
        self.anon_bytes = 0
        self.baseline_anon_bytes = 0
        self.rss_hwm_bytes = 0
        self.cuda_bytes = 0
        self.baseline_cuda_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        status = _proc_status(self.pid)
        anon = status.get("RssAnon", 0) + status.get("RssShmem", 0)
        self.anon_bytes = max(self.anon_bytes, anon)
        self.rss_hwm_bytes = max(self.rss_hwm_bytes, status.get("VmHWM", 0))

    @property
    def cuda_increase_bytes(self) -> int:
        """Peak CUDA allocation above what was allocated when the block started."""
        return max(0, self.cuda_bytes - self.baseline_cuda_bytes)

    @property
    def anon_increase_bytes(self) -> int:
        """Peak anonymous memory above what the process held when the block started."""
        return max(0, self.anon_bytes - self.baseline_anon_bytes)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> PeakMemory:
        if self.pid == os.getpid():
            # Writing 5 to clear_refs resets VmHWM, so the high-water mark is this block's.
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline_cuda_bytes = torch.cuda.memory_allocated()
        self._sample()
        self.baseline_anon_bytes = self.anon_bytes
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._sample()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.cuda:
            torch.cuda.synchronize()
            self.cuda_bytes = torch.cuda.max_memory_allocated()


def _version(dist: str, module_name: str | None = None) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        pass
    # Not installed (e.g. run from a checkout via PYTHONPATH): ask the module itself.
    try:
        module = importlib.import_module(module_name or dist.replace("-", "_"))
    except Exception:
        return ""
    return str(getattr(module, "__version__", ""))


def device_name(device: str | None = None) -> str:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} x{os.cpu_count()} cpu"


def environment_tags(device: str | None = None, packages: Iterable[str] = ()) -> dict[str, str]:
    """Columns that say where a number came from: device, library versions, time."""
    tags = {
        "device": device_name(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "transformers": _version("transformers"),
        "tensor_utils": _version("llm-efficiency-tensor-utils", "tensor_utils"),
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    for dist in packages:
        tags[dist.replace("-", "_")] = _version(dist)
    return tags


def results_dir(script: str | os.PathLike) -> Path:
    """The folder a benchmark script writes its CSVs to: ``$BENCH_RESULTS`` when set (the bench
    session and ``tools/run_gpu.py`` set it, so their runs never append to the committed
    results), else the ``results/`` folder beside the script (``results_dir(__file__)``)."""
    env = os.environ.get("BENCH_RESULTS")
    return Path(env) if env else Path(script).resolve().parent / "results"


def write_csv(
    path: str | os.PathLike,
    rows: Iterable[Mapping[str, object]],
    *,
    tags: Mapping[str, str] | None = None,
) -> Path:
    """Append rows to a CSV (header from the union of keys), each tagged with ``tags``
    (default: ``environment_tags()``). A missing file is created with a header."""
    path = Path(path)
    tags = environment_tags() if tags is None else tags
    rows = [{**row, **tags} for row in rows]
    if not rows:
        return path
    fields: list[str] = []
    existing: list[dict[str, str]] = []
    if path.exists():
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            existing = list(reader)
    for row in rows:
        fields += [k for k in row if k not in fields]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(existing)
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def evict_page_cache(*paths: str | os.PathLike) -> int:
    """Ask the kernel to drop these files' (or directories' files') pages from the page cache,
    for cold-cache I/O benchmarks without root. Dirty pages are synced first. Returns the bytes
    covered. A no-op where ``posix_fadvise`` is missing."""
    covered = 0
    files = []
    for p in map(Path, paths):
        files += [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            covered += os.fstat(fd).st_size
        finally:
            os.close(fd)
    return covered


def fsdp_train_bench(
    build: Callable[[int], torch.nn.Module],
    forward: Callable[[torch.nn.Module, torch.Tensor], Any] | None = None,
    *,
    script: str | os.PathLike,
    package: str,
    model_name: str,
    layers: int,
    seq: int = 2048,
    seq_help: str = "tokens per sequence",
    shard: Callable[..., torch.nn.Module] | None = None,
    argv: list[str] | None = None,
) -> int:
    """The body of a ``bench_fsdp_gpu.py``: training-step time, tokens/s and per-GPU peak memory
    of a model under FSDP2 on the GPUs ``torchrun`` starts (weak scaling: every rank runs the
    same per-GPU batch), or of the plain model on one GPU (``--no-fsdp``).

    ``build(num_layers)`` returns the model (on the CPU, with ``.config.vocab_size``);
    ``forward(model, ids)`` runs one training forward and returns an output with ``.loss``
    (default ``model(ids, labels=ids)``); ``shard`` is the package's ``shard_model`` (default
    ``tensor_utils.distributed.shard_model``). bf16 compute through ``MixedPrecisionPolicy``
    (float32 shards and reduction) and activation checkpointing are on by default; AdamW steps
    every iteration. Rank 0 appends one row (median step time over the slowest rank, global
    tokens/s, the largest per-GPU peak) to ``results_dir(script)/fsdp_gpu.csv`` (``--csv``).
    Returns the exit status.
    """
    import argparse
    import json
    import sys

    import torch.distributed as dist

    from tensor_utils.distributed import enable_checkpointing, mixed_precision
    from tensor_utils.distributed import shard_model as default_shard

    name = Path(script).name
    p = argparse.ArgumentParser(prog=name, description=f"FSDP2 training step of {model_name}")
    p.add_argument("--batch", type=int, default=4, help="sequences per GPU per step")
    p.add_argument("--seq", type=int, default=seq, help=seq_help)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--layers", type=int, default=layers)
    p.add_argument("--fp32", action="store_true", help="no mixed precision (float32 compute)")
    p.add_argument("--no-checkpointing", action="store_true")
    p.add_argument("--no-reshard", action="store_true", help="reshard_after_forward=False")
    p.add_argument("--no-fsdp", action="store_true", help="plain model (one GPU), bf16 autocast")
    p.add_argument("--csv", type=Path, default=results_dir(script) / "fsdp_gpu.csv")
    p.add_argument("--json", action="store_true", help="print the row as JSON")
    args = p.parse_args(argv)
    if "RANK" not in os.environ or not torch.cuda.is_available():
        print(f"{name}: needs CUDA and torchrun --nproc-per-node N", file=sys.stderr)
        return 2
    run_forward = forward or (lambda m, ids: m(ids, labels=ids))
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    dist.init_process_group("nccl")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        if args.no_fsdp and world != 1:
            print(f"{name}: --no-fsdp is the one-GPU baseline (nproc 1)", file=sys.stderr)
            return 2
        torch.manual_seed(0)
        model: Any = build(args.layers).to(device).train()  # a transformers model: has .config
        vocab = int(model.config.vocab_size)
        n_params = sum(t.numel() for t in model.parameters())
        bf16 = not args.fp32
        if args.no_fsdp:
            if not args.no_checkpointing:
                enable_checkpointing(model)
        else:
            (shard or default_shard)(
                model,
                mp_policy=mixed_precision(torch.bfloat16) if bf16 else None,
                reshard_after_forward=not args.no_reshard,
                gradient_checkpointing=not args.no_checkpointing,
            )
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        gen = torch.Generator(device=device).manual_seed(1 + rank)
        times = []
        for i in range(args.warmup + args.steps):
            if i == args.warmup:
                torch.cuda.reset_peak_memory_stats(device)
            ids = torch.randint(0, vocab, (args.batch, args.seq), device=device, generator=gen)
            torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            with torch.autocast("cuda", torch.bfloat16, enabled=args.no_fsdp and bf16):
                out = run_forward(model, ids)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        peak = torch.tensor([torch.cuda.max_memory_allocated(device)], device=device)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        step_s = torch.tensor([statistics.median(times)], device=device)
        dist.all_reduce(step_s, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
        if rank == 0:
            row = {
                "package": package,
                "model": model_name,
                "params": n_params,
                "mode": "plain" if args.no_fsdp else "fsdp2",
                "gpus": world,
                "batch_per_gpu": args.batch,
                "seq": args.seq,
                "bf16": bf16,
                "checkpointing": not args.no_checkpointing,
                "reshard_after_forward": not args.no_reshard,
                "step_ms": round(step_s.item() * 1e3, 2),
                "tokens_per_s": round(world * args.batch * args.seq / step_s.item(), 1),
                "peak_mem_gib": round(peak.item() / 2**30, 3),
            }
            print(json.dumps(row) if args.json else row)
            write_csv(args.csv, [row], tags=environment_tags(str(device)))
    finally:
        dist.destroy_process_group()
    return 0
