"""Check a SFT/ALIGNED pair from headers alone and decide what happens to every tensor.

Nothing here reads tensor data: ``--dry-run`` is exactly ``build_plan`` plus a report.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tensor_utils.checkpoint import Checkpoint

from .errors import (
    MismatchError,
    PatternError,
    QuantizedCheckpointError,
    VocabSizeMismatchError,
)

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
OUT_DTYPES = {"keep": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# Tensor-name endings written by GPTQ/AWQ/bitsandbytes/fp8 quantizers.
QUANT_SUFFIXES = (
    ".qweight",
    ".qzeros",
    ".scales",
    ".g_idx",
    ".weight_scale",
    ".weight_scale_inv",
    ".input_scale",
    ".SCB",
    ".weight_format",
    ".absmax",
    ".quant_map",
    ".nested_absmax",
    ".quant_state",
    ".weight_zero_point",
)
QUANT_DTYPES = (
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.qint8,
    torch.quint8,
    torch.qint32,
    torch.quint4x2,
)
VOCAB_HINTS = ("embed", "lm_head", "wte", "word_embeddings", "output.weight", "tok_embeddings")


@dataclass
class TensorTable:
    """What one side of the pair holds: name -> (dtype, shape), alias groups, config.json."""

    label: str  # "SFT" or "ALIGNED"
    path: str
    entries: dict[str, tuple[torch.dtype, tuple[int, ...]]]
    # name -> canonical name, for names sharing storage with an earlier tensor (tied weights).
    alias_of: dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def canonical(self, name: str) -> str:
        return self.alias_of.get(name, name)

    @classmethod
    def from_state_dict(cls, label: str, state: Mapping[str, torch.Tensor]) -> TensorTable:
        entries, alias_of, seen = {}, {}, {}
        for name, t in state.items():
            if not isinstance(t, torch.Tensor):
                raise MismatchError(
                    f"{label}: entry {name!r} is a {type(t).__name__}, not a tensor"
                )
            entries[name] = (t.dtype, tuple(t.shape))
            key = _storage_key(t)
            if key is not None and key in seen:
                alias_of[name] = seen[key]
            elif key is not None:
                seen[key] = name
        return cls(label, "state dict", entries, alias_of)

    @classmethod
    def from_checkpoint(cls, label: str, ckpt: Checkpoint) -> TensorTable:
        entries = {n: (info.dtype, tuple(info.shape)) for n, info in ckpt.tensors.items()}
        alias_of: dict[str, str] = {}
        seen: dict = {}
        for name, info in ckpt.tensors.items():
            if info.start is None:  # pickled: memory-mapped, so looking at storage reads nothing
                key = _storage_key(ckpt.get(name))
                if key is not None and key in seen:
                    alias_of[name] = seen[key]
                elif key is not None:
                    seen[key] = name
        config = {}
        if ckpt.is_directory and (ckpt.path / "config.json").is_file():
            try:
                config = json.loads((ckpt.path / "config.json").read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise MismatchError(f"{ckpt.path / 'config.json'}: unreadable ({err})") from None
            if not isinstance(config, dict):
                config = {}
        return cls(label, str(ckpt.path), entries, alias_of, config)


def _storage_key(t: torch.Tensor):
    if t.numel() == 0:
        return None
    storage = t.untyped_storage()
    return (storage.data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


@dataclass(frozen=True)
class TensorPlan:
    name: str  # ALIGNED's (canonical) name
    sft_name: str | None  # SFT tensor read for it (None when copied from ALIGNED)
    action: str  # "extrapolate" or "copy"
    reason: str  # why copied: "non-float", "excluded", "not included"
    dtype: torch.dtype  # ALIGNED's dtype
    shape: tuple[int, ...]
    out_dtype: torch.dtype
    aliases: tuple[str, ...] = ()  # other ALIGNED names tied to this tensor

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    @property
    def out_nbytes(self) -> int:
        return self.numel * self.out_dtype.itemsize


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``keep``/None -> None (keep ALIGNED's), ``bf16``/``fp16``/``fp32`` or a torch float dtype."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype is not None and dtype not in FLOAT_DTYPES:
            raise ValueError(f"output dtype must be a float dtype, got {dtype}")
        return dtype
    key = str(dtype).lower()
    aliases = {
        "bfloat16": "bf16",
        "float16": "fp16",
        "half": "fp16",
        "float32": "fp32",
        "float": "fp32",
    }
    key = aliases.get(key, key)
    if key not in OUT_DTYPES:
        raise ValueError(f"unknown output dtype {dtype!r} (choose from {', '.join(OUT_DTYPES)})")
    return OUT_DTYPES[key]


def check_not_quantized(table: TensorTable) -> None:
    qc = table.config.get("quantization_config")
    if qc:
        method = qc.get("quant_method", "unknown") if isinstance(qc, dict) else "unknown"
        raise QuantizedCheckpointError(
            f"{table.label} {table.path}: quantized model (config.json quantization_config, "
            f"method {method}); ExPO needs float weights (F32/F16/BF16)"
        )
    for name, (dtype, _) in table.entries.items():
        if dtype in QUANT_DTYPES or name.endswith(QUANT_SUFFIXES):
            what = f"dtype {dtype}" if dtype in QUANT_DTYPES else "a quantization tensor name"
            raise QuantizedCheckpointError(
                f"{table.label} {table.path}: tensor {name!r} has {what}: quantized checkpoints are "
                "not supported (ExPO needs float weights: F32/F16/BF16)"
            )


def _groups(table: TensorTable) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name in table.entries:
        groups.setdefault(table.canonical(name), []).append(name)
    return groups


def _vocab_sizes(sft: TensorTable, aligned: TensorTable) -> None:
    vs, va = sft.config.get("vocab_size"), aligned.config.get("vocab_size")
    if isinstance(vs, int) and isinstance(va, int) and vs != va:
        raise VocabSizeMismatchError(
            f"vocabulary size mismatch: SFT has {vs} tokens, ALIGNED has {va} (config.json "
            "vocab_size); resize SFT's embeddings to ALIGNED's tokenizer first"
        )


def _selected(name: str, include: Sequence[str], exclude: Sequence[str]) -> str | None:
    """None if the tensor is extrapolated, else why it is copied."""
    if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
        return "not included"
    if any(fnmatch.fnmatchcase(name, p) for p in exclude):
        return "excluded"
    return None


def _check_patterns(aligned: TensorTable, include: Sequence[str], exclude: Sequence[str]) -> None:
    """A filter that matches nothing would silently change nothing: refuse it."""
    floats = [n for n, (dtype, _) in aligned.entries.items() if dtype in FLOAT_DTYPES]
    for pattern in include:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in floats):
            raise PatternError(
                f"--include {pattern!r} matches no float tensor of ALIGNED, so it would "
                f"extrapolate nothing (names look like {floats[0]!r})"
                if floats
                else f"--include {pattern!r}: ALIGNED has no float tensors"
            )
    for pattern in exclude:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in aligned.entries):
            raise PatternError(
                f"--exclude {pattern!r} matches no tensor of ALIGNED"
                + (f" (names look like {next(iter(aligned.entries))!r})" if aligned.entries else "")
            )


def build_plan(
    sft: TensorTable,
    aligned: TensorTable,
    *,
    out_dtype: torch.dtype | None = None,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> list[TensorPlan]:
    """One ``TensorPlan`` per distinct ALIGNED tensor, in ALIGNED's order; raises on any mismatch."""
    include, exclude = list(include), list(exclude)
    check_not_quantized(sft)
    check_not_quantized(aligned)
    _vocab_sizes(sft, aligned)

    a_groups, s_groups = _groups(aligned), _groups(sft)
    missing = [n for n in a_groups if n not in sft.entries]
    if missing:
        raise MismatchError(
            f"{len(missing)} tensor(s) of ALIGNED are missing from SFT (first: {missing[0]!r})"
        )
    extra = [c for c, names in s_groups.items() if not any(n in aligned.entries for n in names)]
    if extra:
        raise MismatchError(
            f"{len(extra)} tensor(s) of SFT are not in ALIGNED (first: {extra[0]!r})"
        )
    for canon, names in a_groups.items():
        for alias in names[1:]:
            if alias in sft.entries and sft.canonical(alias) != sft.canonical(canon):
                raise MismatchError(
                    f"ALIGNED ties {alias!r} to {canon!r} but SFT stores them separately; "
                    "ExPO would have to untie them"
                )

    _check_patterns(aligned, include, exclude)
    plans = []
    for canon, names in a_groups.items():
        a_dtype, a_shape = aligned.entries[canon]
        s_dtype, s_shape = sft.entries[canon]
        if a_shape != s_shape:
            if (
                len(a_shape) == len(s_shape)
                and a_shape[1:] == s_shape[1:]
                and (
                    any(h in canon for h in VOCAB_HINTS)
                    or a_shape[0] == aligned.config.get("vocab_size")
                )
            ):
                raise VocabSizeMismatchError(
                    f"vocabulary size mismatch in {canon!r}: SFT has {s_shape[0]} tokens, ALIGNED has "
                    f"{a_shape[0]}; resize SFT's embeddings to ALIGNED's tokenizer first"
                )
            raise MismatchError(
                f"shape mismatch for {canon!r}: SFT {list(s_shape)} vs ALIGNED {list(a_shape)}"
            )
        if a_dtype != s_dtype:
            raise MismatchError(
                f"dtype mismatch for {canon!r}: SFT {_dt(s_dtype)} vs ALIGNED {_dt(a_dtype)} "
                "(convert one model first)"
            )
        is_float = a_dtype in FLOAT_DTYPES
        reason = "non-float" if not is_float else _selected(canon, include, exclude)
        plans.append(
            TensorPlan(
                name=canon,
                sft_name=canon if reason is None else None,
                action="extrapolate" if reason is None else "copy",
                reason=reason or "",
                dtype=a_dtype,
                shape=a_shape,
                out_dtype=(out_dtype or a_dtype) if is_float else a_dtype,
                aliases=tuple(names[1:]),
            )
        )
    return plans


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def side_files(directory: Path) -> list[Path]:
    """ALIGNED's non-weight files to copy next to the output weights (config, tokenizer...)."""
    weight_suffixes = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")
    out = []
    for p in sorted(directory.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix in weight_suffixes or p.name.endswith(
            (".safetensors.index.json", ".bin.index.json")
        ):
            continue
        out.append(p)
    return out
