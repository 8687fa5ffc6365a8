"""The public API: ExPO on two state dicts (in memory) or two checkpoints (streamed).

    theta = theta_aligned + alpha * (theta_aligned - theta_sft)

alpha is any real number: 0 gives ALIGNED back bit for bit, -1 gives SFT, 0.1-0.5 is the usual
range for public models. Arithmetic is float32 (float64 for float32 outputs) and the result is
rounded once to the output dtype. Non-float tensors, and tensors left out by ``include`` /
``exclude``, are copied from ALIGNED.

Modules: ``plan`` (headers -> what happens to each tensor), ``compute`` (the op per tensor or
chunk), ``engine_cpu`` / ``engine_device`` (streaming), ``outputs`` (sinks), ``report``.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from tensor_utils.checkpoint import Checkpoint, open_checkpoint, parse_size
from tensor_utils.checkpoint.atomic import remove, replace, temp_sibling
from tensor_utils.checkpoint.reader import SAFETENSORS_INDEX, TORCH_INDEX, TORCH_SUFFIXES
from tensor_utils.version import package_version

from .compute import compute_tensor
from .engine_cpu import run_cpu
from .engine_device import run_device
from .errors import ExpoMergeError, OutputError, QuantizedCheckpointError
from .outputs import SafetensorsSink, TorchFileSink
from .plan import TensorPlan, TensorTable, build_plan, parse_dtype, side_files
from .report import MergeReport, build_report
from .spec import RunSpec, Sink
from .stats import StepStats

DEFAULT_CHUNK_ELEMENTS = 1 << 20  # the CPU engine streams 1M-element chunks (2 MB in bf16)
# --output-format values -> output kinds
OUTPUT_FORMATS = {
    "safetensors": "safetensors",
    "pt": "torch",
    "torch": "torch",
    "directory": "directory",
    "dir": "directory",
}

__all__ = [
    "DEFAULT_CHUNK_ELEMENTS",
    "OUTPUT_FORMATS",
    "MergeReport",
    "extrapolate_checkpoints",
    "extrapolate_state_dict",
    "normalize_alphas",
    "output_paths",
]


def normalize_alphas(alpha: float | Iterable[float]) -> list[float]:
    values = [alpha] if isinstance(alpha, (int, float)) else list(alpha)
    if not values:
        raise ExpoMergeError("no alpha given")
    out: list[float] = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ExpoMergeError(f"alpha {v!r} is not a number") from None
        if not math.isfinite(f):
            raise ExpoMergeError(f"alpha must be finite, got {v!r}")
        if f in out:
            raise ExpoMergeError(f"alpha {f:g} is given twice")
        out.append(f)
    return out


def _device(device: str | torch.device | None) -> torch.device:
    try:
        dev = torch.device(device or "cpu")
    except RuntimeError:
        raise ExpoMergeError(f"unsupported device {device!r} (use cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ExpoMergeError("--device cuda requested but no CUDA device is available")
    if dev.type not in ("cpu", "cuda"):
        raise ExpoMergeError(f"unsupported device {device!r} (use cpu or cuda)")
    return dev


# --------------------------------------------------------------------------------------------
# Python API 1: two state dicts in, one state dict out
# --------------------------------------------------------------------------------------------
def extrapolate_state_dict(
    sft: Mapping[str, torch.Tensor],
    aligned: Mapping[str, torch.Tensor],
    alpha: float,
    *,
    dtype: str | torch.dtype | None = None,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    device: str | torch.device | None = None,
    backend: str | None = None,
    allow_overflow: bool = False,
) -> dict[str, torch.Tensor]:
    """ExPO on in-memory state dicts: ``aligned + alpha * (aligned - sft)`` for every float tensor.

    Returns a new dict with ALIGNED's names and order; tied names share one output tensor.
    Non-float tensors and those filtered out by ``include``/``exclude`` (glob patterns, each of
    which must match a tensor) are copied from ALIGNED. ``dtype`` is the output dtype
    (``None``/``"keep"``: ALIGNED's). ``device`` moves the math (e.g. to ``"cuda"``); outputs
    live where ALIGNED's tensors are. A value that overflows the output dtype (fp16/bf16) raises
    ``StepOverflowError`` naming the tensor unless ``allow_overflow``.
    """
    (alpha_value,) = normalize_alphas(alpha)
    out_dtype = parse_dtype(None if dtype == "keep" else dtype)
    dev = _device(device) if device is not None else None
    sft_table = TensorTable.from_state_dict("SFT", sft)
    aligned_table = TensorTable.from_state_dict("ALIGNED", aligned)
    plans = build_plan(
        sft_table, aligned_table, out_dtype=out_dtype, include=include, exclude=exclude
    )
    computed: dict[str, torch.Tensor] = {}
    for plan in plans:
        a = aligned[plan.name]
        if plan.sft_name is not None:
            (out,) = compute_tensor(
                plan.name,
                sft[plan.sft_name],
                a,
                [alpha_value],
                plan.out_dtype,
                [StepStats(alpha_value)],
                device=dev,
                chunk=DEFAULT_CHUNK_ELEMENTS,
                backend=backend,
                exact_stats=True,
                allow_overflow=allow_overflow,
            )
        else:
            out = a.to(plan.out_dtype) if a.dtype != plan.out_dtype else a.clone()
        computed[plan.name] = out
    return {name: computed[aligned_table.canonical(name)] for name in aligned}


# --------------------------------------------------------------------------------------------
# Python API 2: two checkpoint paths in, one checkpoint per alpha out, streamed
# --------------------------------------------------------------------------------------------
def _input_kind(path: Path) -> str:
    if path.suffix == ".gguf":
        raise QuantizedCheckpointError(
            f"{path}: GGUF files are (mostly block-)quantized and not supported; ExPO needs F32/F16/BF16 "
            "safetensors, .pt/.bin or a Hugging Face directory"
        )
    if path.is_dir():
        return "directory"
    if path.suffix == ".safetensors":
        return "safetensors"
    if path.suffix in TORCH_SUFFIXES:
        return "torch"
    return "unknown"  # open_checkpoint gives the precise error


def _output_kind(output_format: str | None, in_kind: str) -> str:
    if output_format is None:
        return in_kind
    kind = OUTPUT_FORMATS.get(str(output_format).lower())
    if kind is None:
        raise OutputError(
            f"unknown output format {output_format!r} (choose from safetensors, pt, directory)"
        )
    return kind


def _fmt_alpha(alpha: float) -> str:
    return f"{alpha:g}"


def output_paths(
    aligned: Path,
    kind: str,
    alphas: Sequence[float],
    out: str | os.PathLike | None,
    *,
    out_kind: str | None = None,
) -> tuple[Path, list[Path]]:
    """(the path the run creates, one output path per alpha). ``kind`` is ALIGNED's,
    ``out_kind`` the output's (default: ALIGNED's)."""
    out_kind = out_kind or kind
    converted = out_kind != kind
    if out_kind == "directory":
        suffix = ""
    elif out_kind == "safetensors":
        suffix = ".safetensors"
    else:
        suffix = aligned.suffix if aligned.suffix in TORCH_SUFFIXES else ".pt"
    stem = aligned.name if kind == "directory" else aligned.stem
    if out is None:
        tail = f"-expo-{_fmt_alpha(alphas[0])}{suffix}" if len(alphas) == 1 else "-expo"
        root = aligned.parent / f"{stem}{tail}"
    else:
        root = Path(out)
    why = "--output-format is" if converted else "ALIGNED is"
    if len(alphas) == 1:
        if out_kind == "safetensors" and root.suffix != ".safetensors":
            what = "safetensors" if converted else "a .safetensors file"
            raise OutputError(f"{root}: {why} {what}, so OUT must end in .safetensors")
        if out_kind == "torch" and root.suffix not in TORCH_SUFFIXES:
            what = "pt" if converted else f"a {aligned.suffix} file"
            raise OutputError(
                f"{root}: {why} {what}, so OUT must end in one of {'/'.join(TORCH_SUFFIXES)}"
            )
        if out_kind == "directory" and root.suffix in (".safetensors", *TORCH_SUFFIXES):
            what = "directory" if converted else "a model directory"
            raise OutputError(f"{root}: {why} {what}, so OUT must be a directory name")
        return root, [root]
    if root.suffix in (".safetensors", *TORCH_SUFFIXES):
        raise OutputError(
            f"{root}: with several alphas OUT is a directory (one output per alpha inside)"
        )
    return root, [root / f"alpha-{_fmt_alpha(a)}{suffix}" for a in alphas]


def _shard_names(ckpt: Checkpoint) -> dict[str, str]:
    names = {}
    for name, shard in ckpt.shard_of.items():
        if shard.endswith(".bin"):
            shard = shard.removesuffix(".bin").replace("pytorch_model", "model", 1) + ".safetensors"
        names[name] = shard
    return names


def extrapolate_checkpoints(
    sft: str | os.PathLike,
    aligned: str | os.PathLike,
    alpha: float | Sequence[float],
    out: str | os.PathLike | None = None,
    *,
    dtype: str | torch.dtype | None = "keep",
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    shard_size: int | str | None = None,
    device: str | torch.device = "cpu",
    force: bool = False,
    dry_run: bool = False,
    allow_unsafe_pickle: bool = False,
    progress: bool | None = False,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    backend: str | None = None,
    exact_stats: bool = False,
    workers: int | None = None,
    output_format: str | None = None,
    allow_overflow: bool = False,
) -> MergeReport:
    """Stream ExPO over two checkpoints, one tensor at a time, writing one output per alpha.

    SFT and ALIGNED may each be a ``.safetensors`` file, a ``.pt``/``.bin`` state dict or a
    Hugging Face model directory (sharded or not). Outputs have ALIGNED's kind unless
    ``output_format`` (``"safetensors"``, ``"pt"`` or ``"directory"``) says otherwise, and keep
    ALIGNED's tensor names, shard layout (unless ``shard_size``) and metadata; a directory output
    of a directory ALIGNED also gets its config, generation config, tokenizer and chat template
    files. With several alphas, ``out`` is a directory holding ``alpha-<a>`` outputs, all
    written in one read pass. Every output is written under a temporary name and appears only
    when complete; an error or interrupt (``KeyboardInterrupt``, or any exception) removes it.

    On the CPU, tensors stream in chunks of ``chunk_elements`` through ``workers`` threads
    (default: one per core, at most 4), so memory stays O(workers x chunk) for any tensor size.
    A value that overflows the output dtype raises ``StepOverflowError`` (nothing is written)
    unless ``allow_overflow``, which writes inf and counts the elements in the report.
    """
    t0 = time.perf_counter()
    alphas = normalize_alphas(alpha)
    out_dtype = parse_dtype(None if dtype in (None, "keep") else dtype)
    dev = _device(device)
    if workers is not None and workers < 1:
        raise ExpoMergeError(f"workers (--threads) must be at least 1, got {workers}")
    sft_path, aligned_path = Path(sft), Path(aligned)
    in_kind = _input_kind(aligned_path)
    _input_kind(sft_path)
    if in_kind == "unknown":
        in_kind = "safetensors"  # let open_checkpoint below explain what is wrong
    kind = _output_kind(output_format, in_kind)
    root, paths = output_paths(aligned_path, in_kind, alphas, out, out_kind=kind)
    if shard_size is not None:
        if kind != "directory":
            raise OutputError(
                "--shard-size applies to directory outputs only (the output is a single file)"
            )
        shard_size = parse_size(shard_size)
    for p in (sft_path, aligned_path):
        if root.exists() and p.exists() and root.resolve() == p.resolve():
            raise OutputError(f"{root}: OUT is one of the inputs; choose another output path")
    if root.exists() and not force:
        raise OutputError(f"{root}: already exists (pass --force to replace it)")
    if not root.parent.is_dir():
        raise OutputError(f"{root.parent}: output folder does not exist")

    with contextlib.ExitStack() as stack:
        s_ckpt = stack.enter_context(
            open_checkpoint(sft_path, allow_unsafe_pickle=allow_unsafe_pickle)
        )
        a_ckpt = stack.enter_context(
            open_checkpoint(aligned_path, allow_unsafe_pickle=allow_unsafe_pickle)
        )
        s_table = TensorTable.from_checkpoint("SFT", s_ckpt)
        a_table = TensorTable.from_checkpoint("ALIGNED", a_ckpt)
        if not a_table.entries:
            raise ExpoMergeError(f"ALIGNED {a_ckpt.path}: holds no tensors")
        plans = build_plan(s_table, a_table, out_dtype=out_dtype, include=include, exclude=exclude)
        # Stream in ALIGNED's on-disk order so reads are sequential.
        order = {
            n: i
            for i, (n, _) in enumerate(
                sorted(
                    ((n, a_ckpt.tensors[n]) for n in a_ckpt.tensors),
                    key=lambda item: (str(item[1].file), item[1].start or 0),
                )
            )
        }
        plans.sort(key=lambda p: order[p.name])
        extras = side_files(aligned_path) if kind == in_kind == "directory" else []

        report = build_report(
            s_ckpt, a_ckpt, alphas, paths, kind, out_dtype, dev, dry_run, plans, extras
        )
        need = report.bytes_written * (2 if kind == "torch" else 1) + sum(
            f.stat().st_size for f in extras
        ) * len(alphas)
        free = shutil.disk_usage(root.parent).free
        if need > free:
            raise OutputError(
                f"{root.parent}: needs {need / 1e9:.2f} GB for the output but only {free / 1e9:.2f} GB are free"
            )
        if dry_run:
            return report

        staging = None
        if len(alphas) > 1:
            staging = temp_sibling(root)
            staging.mkdir()
            sink_paths = [staging / p.name for p in paths]
        else:
            sink_paths = paths
        sinks: list[Sink] = []
        try:
            for a_value, path in zip(alphas, sink_paths, strict=True):
                sinks.append(
                    _make_sink(
                        kind,
                        path,
                        plans,
                        a_ckpt,
                        s_ckpt,
                        a_value,
                        shard_size,
                        extras,
                        overwrite=force and staging is None,
                    )
                )
            first = sinks[0]
            if isinstance(first, SafetensorsSink) and kind == "directory":
                report.shards = len(set(first.shard_of.values()))
            spec = RunSpec(
                plans=plans,
                sft=s_ckpt,
                aligned=a_ckpt,
                alphas=alphas,
                sinks=sinks,
                stats=report.stats,
                device=dev,
                chunk_elements=chunk_elements,
                progress=progress,
                backend=backend,
                exact_stats=exact_stats,
                workers=workers,
                allow_overflow=allow_overflow,
            )
            (run_cpu if dev.type == "cpu" else run_device)(spec)
            for sink in sinks:
                sink.commit()
            if staging is not None:
                replace(staging, root)
                staging = None
        except BaseException:
            for sink in sinks:
                with contextlib.suppress(Exception):
                    sink.abort()
            if staging is not None:
                remove(staging)
            raise
    report.seconds = time.perf_counter() - t0
    return report


def _make_sink(
    kind: str,
    path: Path,
    plans: Sequence[TensorPlan],
    a_ckpt: Checkpoint,
    s_ckpt: Checkpoint,
    alpha: float,
    shard_size: int | None,
    extras: Sequence[Path],
    *,
    overwrite: bool,
) -> Sink:
    if kind == "torch":
        return TorchFileSink(path, plans, overwrite=overwrite)
    provenance = {
        "expo_merge.alpha": repr(alpha),
        "expo_merge.sft": s_ckpt.path.name,
        "expo_merge.aligned": a_ckpt.path.name,
        "expo_merge.version": package_version("expo-merge", __file__),
    }
    metadata = {**a_ckpt.metadata, **provenance}
    if kind == "safetensors":
        return SafetensorsSink(
            path,
            plans,
            shard_names=None,
            max_shard_size=None,
            metadata=metadata,
            index_metadata={},
            write_index=False,
            overwrite=overwrite,
        )
    if not a_ckpt.is_directory:  # a file converted to a directory: default shards
        return SafetensorsSink(
            path,
            plans,
            shard_names=None,
            max_shard_size=shard_size,
            metadata=metadata,
            index_metadata={},
            write_index=None,
            overwrite=overwrite,
        )
    index_metadata = {k: v for k, v in a_ckpt.index_metadata.items() if k != "total_size"}
    has_index = (a_ckpt.path / SAFETENSORS_INDEX).exists() or (a_ckpt.path / TORCH_INDEX).exists()
    return SafetensorsSink(
        path,
        plans,
        shard_names=None if shard_size else _shard_names(a_ckpt),
        max_shard_size=shard_size,
        metadata=metadata,
        index_metadata=index_metadata,
        write_index=None if shard_size else (True if has_index else None),
        overwrite=overwrite,
        side_files=extras,
    )
