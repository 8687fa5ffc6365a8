"""Tuning knobs of the Triton expert kernels, as one immutable options object.

The launchers in ``ops/experts/triton.py`` and ``ops/expert_mlp/triton.py`` read the options in
force once per call (``kernel_options()``); nothing else about a launch is configurable at run
time. The defaults come from H100 sweeps (``benchmarks/results``, ``docs/benchmarks/
jetmoe-model.md``); change them for the process, or for a block, explicitly::

    from jetmoe_model.ops.options import KernelOptions, set_kernel_options, use_kernel_options

    with use_kernel_options(tma_min_pairs=0):          # TMA at every size, inside the block
        model(input_ids)
    set_kernel_options(KernelOptions(use_tma=False))   # pointer loads only, for the process
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

KINDS = ("gemm", "gemm_t", "glu", "glu_bwd", "xty", "gemv")


def _frozen(table: Mapping[str, Mapping[str, int]]) -> Mapping[str, Mapping[str, int]]:
    return MappingProxyType({k: MappingProxyType(dict(v)) for k, v in table.items()})


def _persistent_default() -> Mapping[str, Mapping[str, int]]:
    # Persistent grid (and Triton's loop flattening) per kernel kind above 4,096 pairs, from the
    # persistent-grid probe (persistent_probe.csv). Warp specialization ("WARP_SPECIALIZE": 1)
    # stays opt-in: it measured within noise of flattening alone, and Triton 3.6's Hopper
    # warp-specialization pass crashes on some tile configs (4 warps, pointer-gathered rows).
    return _frozen(
        {
            "gemm": {"PERSISTENT": 1},
            "gemm_t": {"PERSISTENT": 1},
            "glu": {"PERSISTENT": 1, "FLATTEN": 1},
            "glu_bwd": {"PERSISTENT": 1, "FLATTEN": 1},
        }
    )


@dataclass(frozen=True)
class KernelOptions:
    """How the expert kernels launch (every field has the measured default).

    - ``decode_max_pairs``: at or below this many pairs the forward GEMMs take the GEMV path.
    - ``use_tma``: load contiguous, 16-byte aligned operands through Hopper TMA descriptors.
    - ``tma_min_pairs``: ... only above this many pairs (below it the host-side descriptor
      encoding per launch costs more than TMA saves; H100, 1,024 tokens: kernel_sweep.csv).
    - ``dh_h_early``: the dh GEMM's ``glu_bwd`` epilogue issues its ``h`` loads before the K
      loop (a ``glu_bwd`` entry of ``config_overrides`` with ``H_EARLY`` wins).
    - ``persistent_large``: launch options per kernel kind above 4,096 pairs (persistent grid,
      loop flattening).
    - ``config_overrides``: tile/launch overrides per kernel kind (``gemm``, ``gemm_t``,
      ``glu``, ``glu_bwd``, ``xty``, ``gemv``), for tuning sweeps; applied last.
    - ``dh_split_min_pairs``: above this many pairs dh is a plain ``d(act)`` GEMM + one
      elementwise pass instead of the GEMM's ``glu_bwd`` epilogue (persistent_probe.csv).
    - ``gather_x_min_pairs``: above this many pairs the MoE layer gathers ``x`` into sorted
      order once before the GLU GEMM (TMA loads) and keeps it for ``dW_in`` (kernel_sweep.csv).
    """

    decode_max_pairs: int = 8
    use_tma: bool = True
    tma_min_pairs: int = 4096
    dh_h_early: bool = True
    persistent_large: Mapping[str, Mapping[str, int]] = field(default_factory=_persistent_default)
    config_overrides: Mapping[str, Mapping[str, int]] = field(default_factory=lambda: _frozen({}))
    dh_split_min_pairs: int = 4096
    gather_x_min_pairs: int = 4096

    def __post_init__(self) -> None:
        for name in ("persistent_large", "config_overrides"):
            table = getattr(self, name)
            unknown = set(table) - set(KINDS)
            if unknown:
                raise ValueError(
                    f"KernelOptions.{name}: unknown kernel kind(s) {', '.join(sorted(unknown))} "
                    f"(choose from {', '.join(KINDS)})"
                )
            object.__setattr__(self, name, _frozen(table))

    def replace(self, **changes) -> KernelOptions:
        """A copy with ``changes`` applied (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def with_override(self, kind: str, config: Mapping[str, int] | None) -> KernelOptions:
        """A copy whose ``config_overrides[kind]`` is ``config`` (``None``: removed)."""
        table = {k: dict(v) for k, v in self.config_overrides.items()}
        if config is None:
            table.pop(kind, None)
        else:
            table[kind] = dict(config)
        return self.replace(config_overrides=table)


DEFAULT_OPTIONS = KernelOptions()

_lock = threading.Lock()
_current = DEFAULT_OPTIONS


def kernel_options() -> KernelOptions:
    """The options the kernels launch with now."""
    return _current


def set_kernel_options(options: KernelOptions | None) -> KernelOptions:
    """Use ``options`` (``None``: the defaults) for the process; returns the previous ones."""
    global _current
    if options is not None and not isinstance(options, KernelOptions):
        raise TypeError(f"expected KernelOptions, got {type(options).__name__}")
    with _lock:
        previous, _current = _current, options or DEFAULT_OPTIONS
    return previous


@contextlib.contextmanager
def use_kernel_options(options: KernelOptions | None = None, **changes) -> Iterator[KernelOptions]:
    """Inside the block the kernels use ``options`` (default: the current ones) with
    ``changes`` applied; the previous options come back on exit."""
    chosen = (options or kernel_options()).replace(**changes)
    previous = set_kernel_options(chosen)
    try:
        yield chosen
    finally:
        set_kernel_options(previous)


__all__ = [
    "DEFAULT_OPTIONS",
    "KINDS",
    "KernelOptions",
    "kernel_options",
    "set_kernel_options",
    "use_kernel_options",
]
