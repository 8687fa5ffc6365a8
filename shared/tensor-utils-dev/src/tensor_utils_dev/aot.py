"""Compile Triton kernels ahead of time for the H100 on a machine without a GPU.

``TRITON_INTERPRET=1`` runs kernels on the CPU but never compiles them, so compile errors and
shared-memory overflows would first show up on the GPU. ``triton.compile`` with an ``sm_90``
target runs the whole pipeline to a cubin (ptxas ships inside the triton wheel) and reports the
shared memory each launch configuration needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tensor_utils.ops import KernelLaunch, Op, load

H100_CAPABILITY = 90
WARP_SIZE = 32
# Largest dynamic shared memory one block may opt into on the H100 (227 KiB).
H100_MAX_SHARED_BYTES = 232_448


@dataclass(frozen=True)
class Compiled:
    label: str
    kernel: str
    shared_bytes: int
    num_warps: int
    num_stages: int
    cubin_bytes: int


def compile_for_h100(launch: KernelLaunch) -> Compiled:
    """Compile one launch configuration to an sm_90 cubin; raises on a compile error."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = dict(launch.signature)
    for name in launch.constexprs:
        signature[name] = "constexpr"
    source = ASTSource(fn=launch.kernel, signature=signature, constexprs=dict(launch.constexprs))
    compiled = triton.compile(
        source,
        target=GPUTarget("cuda", H100_CAPABILITY, WARP_SIZE),
        options={"num_warps": launch.num_warps, "num_stages": launch.num_stages},
    )
    return Compiled(
        label=launch.label,
        kernel=getattr(launch.kernel, "__name__", str(launch.kernel)),
        shared_bytes=int(compiled.metadata.shared),
        num_warps=launch.num_warps,
        num_stages=launch.num_stages,
        cubin_bytes=len(compiled.asm["cubin"]),
    )


def launches(op: Op) -> list[tuple[str, KernelLaunch]]:
    """Every ``(backend name, launch)`` an op's backends declare through ``Backend.aot``."""
    found: list[tuple[str, KernelLaunch]] = []
    for backend in op.backends.values():
        if backend.aot is not None:
            specs: Iterable[KernelLaunch] = load(backend.aot)()
            found.extend((backend.name, spec) for spec in specs)
    return found


def check_fits_h100(compiled: Compiled) -> None:
    """Fail when a configuration needs more shared memory than one H100 block may have."""
    if compiled.shared_bytes > H100_MAX_SHARED_BYTES:
        raise AssertionError(
            f"{compiled.kernel} [{compiled.label}]: {compiled.shared_bytes} bytes of shared "
            f"memory, over the H100's {H100_MAX_SHARED_BYTES} per block"
        )
