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


def missing_aot(ops: Iterable[Op]) -> list[str]:
    """``"op[backend]"`` for every Triton backend that declares no ``aot`` function."""
    return [
        f"{op.name}[{b.name}]"
        for op in ops
        for b in op.backends.values()
        if "triton" in b.requires and b.aot is None
    ]


def representative(launches: Iterable[tuple[str, KernelLaunch]]) -> list[tuple[str, KernelLaunch]]:
    """The first launch of each kernel (per backend): the quick subset of a full sweep."""
    seen: set[tuple[str, str]] = set()
    chosen = []
    for backend, launch in launches:
        key = (backend, getattr(launch.kernel, "__name__", str(launch.kernel)))
        if key not in seen:
            seen.add(key)
            chosen.append((backend, launch))
    return chosen


def compile_ops(
    modules: Iterable[str], *, full: bool, shard: tuple[int, int] = (0, 1)
) -> list[dict]:
    """Import ``modules`` (registering their ops) and compile every launch of their ops' Triton
    backends (``full``) or the first per kernel; one record per launch, errors included.
    ``shard=(i, n)`` compiles only the launches whose position (in the registry's fixed order)
    is ``i`` modulo ``n``, so ``n`` processes share a sweep.

    Must run without ``TRITON_INTERPRET=1`` (the interpreter replaces ``triton.jit`` kernels by
    Python functions): use :func:`compile_ops_in_subprocess` from an interpreted process."""
    import importlib

    from tensor_utils.ops import registry

    modules = list(modules)
    for module in modules:
        importlib.import_module(module)
    namespaces = {module.split(".")[0] for module in modules}
    index, count = shard
    position = 0
    records = []
    compiled_by_spec: dict[str, list[dict]] = {}  # backends sharing one aot function: once
    for op in registry().values():
        if op.namespace not in namespaces:
            continue
        for backend in op.backends.values():
            if backend.aot is None:
                continue
            if backend.aot not in compiled_by_spec:
                found = [(backend.name, launch) for launch in load(backend.aot)()]
                chosen = found if full else representative(found)
                mine = [i for i in range(len(chosen)) if (position + i) % count == index]
                position += len(chosen)
                compiled_by_spec[backend.aot] = [_compile_record(chosen[i][1]) for i in mine]
            records += [
                {"op": op.name, "backend": backend.name, **r} for r in compiled_by_spec[backend.aot]
            ]
    return records


def _compile_record(launch: KernelLaunch) -> dict:
    record = {
        "label": launch.label,
        "kernel": getattr(launch.kernel, "__name__", str(launch.kernel)),
    }
    try:
        compiled = compile_for_h100(launch)
        record["shared_bytes"] = compiled.shared_bytes
        check_fits_h100(compiled)
    except Exception as exc:  # reported per launch by the caller
        record["error"] = f"{type(exc).__name__}: {str(exc).strip()[:2000]}"
    return record


def compile_ops_in_subprocess(
    modules: Iterable[str], *, full: bool, timeout: float = 3600, jobs: int | None = None
):
    """:func:`compile_ops` in fresh interpreters without ``TRITON_INTERPRET`` (``PYTHONPATH``
    and the rest of the environment are inherited), ``jobs`` of them in parallel (default: one
    per CPU core), each compiling its share of the launches."""
    import json
    import os
    import subprocess
    import sys

    modules = list(modules)
    jobs = max(1, jobs or os.cpu_count() or 1)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    base = [sys.executable, "-m", "tensor_utils_dev.aot", *(["--full"] if full else [])]
    procs = [
        subprocess.Popen(
            [*base, "--shard", f"{i}/{jobs}", *modules],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(jobs)
    ]
    records = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            if proc.returncode != 0:
                raise RuntimeError(
                    f"AOT compile process failed ({proc.returncode}):\n{err[-4000:]}"
                )
            records += json.loads(out.strip().splitlines()[-1])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return records


def main(argv: list[str] | None = None) -> int:
    """``python -m tensor_utils_dev.aot [--full] MODULE...``: JSON list of compile records."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--full", action="store_true", help="every launch, not one per kernel")
    parser.add_argument(
        "--shard", default="0/1", help="I/N: compile every N-th launch from the I-th"
    )
    parser.add_argument("modules", nargs="+", help="op modules to import, e.g. expo_merge.ops")
    args = parser.parse_args(argv)
    index, count = (int(v) for v in args.shard.split("/"))
    print(json.dumps(compile_ops(args.modules, full=args.full, shard=(index, count))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
