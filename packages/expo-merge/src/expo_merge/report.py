"""What a run did (or, with ``dry_run``, would do): ``MergeReport`` (``--json`` is its
``to_dict()``) and the report built from the plan before any data is read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tensor_utils.checkpoint import Checkpoint

from .plan import TensorPlan
from .stats import StepStats


def dtype_name(dtype: torch.dtype) -> str:
    return {
        torch.bfloat16: "bf16",
        torch.float16: "fp16",
        torch.float32: "fp32",
        torch.float64: "fp64",
    }.get(dtype, str(dtype).removeprefix("torch."))


@dataclass
class MergeReport:
    """What a run did (or, with ``dry_run``, would do). ``to_dict()`` is the ``--json`` report."""

    sft: str
    aligned: str
    alphas: list[float]
    outputs: list[str]
    output_kind: str
    out_dtype: str
    device: str
    dry_run: bool
    tensors: int
    tensors_extrapolated: int
    tensors_copied: dict[str, int]
    tied: dict[str, str]
    elements_extrapolated: int
    bytes_read: int
    bytes_written: int
    side_files: list[str]
    shards: int
    seconds: float = 0.0
    stats: list[StepStats] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    rounding_dtype: str = ""  # the dtype(s) extrapolated tensors are stored in

    @property
    def identical_inputs(self) -> bool:
        """True when SFT and ALIGNED did not differ in any element compared (every output is then
        ALIGNED, converted to the output dtype): a no-op the report warns about."""
        looked = sum(st.elements for st in self.stats[:1])
        return bool(self.tensors_extrapolated and looked and not self.stats[0].nonzero_delta)

    @property
    def warnings(self) -> list[str]:
        out = [w for st in self.stats if (w := st.warning(self.rounding_dtype))]
        if self.identical_inputs:
            out.insert(
                0,
                "SFT and ALIGNED are identical in every compared element, so every output equals "
                "ALIGNED (did you pass the same model twice?)",
            )
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "sft": self.sft,
            "aligned": self.aligned,
            "alphas": self.alphas,
            "outputs": self.outputs,
            "output_kind": self.output_kind,
            "out_dtype": self.out_dtype,
            "rounding_dtype": self.rounding_dtype,
            "device": self.device,
            "dry_run": self.dry_run,
            "tensors": self.tensors,
            "tensors_extrapolated": self.tensors_extrapolated,
            "tensors_copied": self.tensors_copied,
            "tied": self.tied,
            "elements_extrapolated": self.elements_extrapolated,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "shards_per_output": self.shards,
            "side_files": self.side_files,
            "seconds": self.seconds,
            "throughput_gb_s": (self.bytes_read + self.bytes_written) / self.seconds / 1e9
            if self.seconds
            else None,
            "per_alpha": [] if self.dry_run else [st.to_dict() for st in self.stats],
            "warnings": [] if self.dry_run else self.warnings,
            "notes": self.notes,
        }

    def lines(self) -> list[str]:
        copied = ", ".join(f"{n} {why}" for why, n in self.tensors_copied.items()) or "none"
        head = "dry run: would write" if self.dry_run else "wrote"
        out = [
            f"{head} {len(self.outputs)} output(s) ({self.output_kind}, {self.out_dtype}): "
            + ", ".join(self.outputs),
            f"tensors: {self.tensors} ({self.tensors_extrapolated} extrapolated, copied from ALIGNED: "
            f"{copied}); {self.elements_extrapolated:,} elements extrapolated",
            f"bytes: {_size(self.bytes_read)} read, {_size(self.bytes_written)} written"
            + (f" in {self.seconds:.1f} s" if self.seconds else ""),
        ]
        if self.tied:
            out.append(
                "tied: "
                + ", ".join(f"{k} -> {v}" for k, v in self.tied.items())
                + " (computed once)"
            )
        if self.side_files:
            out.append("copied from ALIGNED: " + ", ".join(self.side_files))
        if not self.dry_run:
            for st in self.stats:
                ratio = st.step_ratio
                out.append(
                    f"alpha={st.alpha:g}: {st.fraction_changed:.2%} of elements changed; realized/intended "
                    f"step {'n/a' if ratio is None else f'{ratio:.3f}'}"
                )
            out += [f"warning: {w}" for w in self.warnings]
        out += [f"note: {n}" for n in self.notes]
        return out


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def build_report(
    s_ckpt: Checkpoint,
    a_ckpt: Checkpoint,
    alphas: Sequence[float],
    paths: Sequence[Path],
    kind: str,
    out_dtype: torch.dtype | None,
    dev: torch.device,
    dry_run: bool,
    plans: Sequence[TensorPlan],
    extras: Sequence[Path],
) -> MergeReport:
    """The report of a run before it starts (statistics are filled in by the engine);
    ``kind`` is the output's: ``directory``, ``safetensors`` or ``torch``."""
    copied: dict[str, int] = {}
    for p in plans:
        if p.action == "copy":
            copied[p.reason] = copied.get(p.reason, 0) + 1
    tied = {alias: p.name for p in plans for alias in p.aliases}
    notes = []
    if tied and kind != "torch":
        notes.append(
            "safetensors stores tied tensors once: "
            + ", ".join(tied)
            + " not written (the config ties them)"
        )
    ext = [p for p in plans if p.action == "extrapolate"]
    kinds = {
        "directory": "safetensors directory",
        "safetensors": "safetensors file",
        "torch": "torch file",
    }
    return MergeReport(
        sft=str(s_ckpt.path),
        aligned=str(a_ckpt.path),
        alphas=list(alphas),
        outputs=[str(p) for p in paths],
        output_kind=kinds[kind],
        out_dtype=dtype_name(out_dtype) if out_dtype else "keep",
        device=str(dev),
        dry_run=dry_run,
        tensors=len(plans),
        tensors_extrapolated=len(ext),
        tensors_copied=copied,
        tied=tied,
        elements_extrapolated=sum(p.numel for p in ext),
        bytes_read=sum(p.nbytes for p in plans) + sum(p.nbytes for p in ext),
        bytes_written=sum(p.out_nbytes for p in plans) * len(alphas),
        side_files=[f.name for f in extras],
        shards=len(set(a_ckpt.shard_of.values())) if kind == "directory" == a_ckpt.kind else 1,
        stats=[StepStats(a) for a in alphas],
        notes=notes,
        rounding_dtype="/".join(sorted({dtype_name(p.out_dtype) for p in ext})),
    )
