"""The device engine: one whole tensor at a time, the math on ``spec.device`` (CUDA)."""

from __future__ import annotations

from .compute import compute_tensor
from .progress import progress_bar
from .spec import RunSpec


def run_device(spec: RunSpec) -> None:
    bar = progress_bar(spec.plans, spec.progress)
    try:
        for plan in spec.plans:
            a = spec.aligned.get(plan.name)
            if plan.action == "extrapolate":
                assert plan.sft_name is not None
                s = spec.sft.get(plan.sft_name)
                outs = compute_tensor(
                    plan.name,
                    s,
                    a,
                    spec.alphas,
                    plan.out_dtype,
                    spec.stats,
                    device=spec.device,
                    chunk=spec.chunk_elements,
                    backend=spec.backend,
                    exact_stats=spec.exact_stats,
                    allow_overflow=spec.allow_overflow,
                )
                del s
            else:
                out = a.to(plan.out_dtype) if a.dtype != plan.out_dtype else a
                outs = [out] * len(spec.alphas)
            for sink, out in zip(spec.sinks, outs, strict=True):
                sink.write(plan.name, out)
            del a, outs
            bar.update(plan.nbytes * (2 if plan.action == "extrapolate" else 1))
    finally:
        bar.close()
