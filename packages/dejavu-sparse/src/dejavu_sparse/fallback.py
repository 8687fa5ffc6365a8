"""When a gathered GEMV would not pay: the selected fraction above which the dense product runs.

A gathered product reads only the selected weight rows but pays for the gather (index loads, a
copy through a cache-sized buffer on the CPU); the dense product streams every row at full
bandwidth. Above a measured density the dense product plus a cheap index is faster, so every
backend falls back to it there. The table is per device type and batch size (the gathered path
serves a batch from the union of its rows' selections); ``benchmarks/bench_decode_cpu.py``
(its kernel rows) measures the crossover, and :func:`set_dense_fallback` replaces it.
"""

from __future__ import annotations

import functools
import math

# Selected fraction of rows above which the dense product runs, by device type (with ":rows" /
# ":cols" for one op), then batch size (the entry of the largest batch not above the call's
# batch applies). CPU, measured with benchmarks/bench_decode_cpu.py (float32, one thread,
# 14336 x 4096): gathered rows (a copy through a cache-sized buffer) beat dense at 30% of the
# rows (1.37x) but not at 50% (0.78x); batch-1 gathered columns (embedding_bag, no copy) at 30%
# (2.3x) and 50% (1.42x); the copying column path (batch > 1) at 30% (1.2x) but not at 50%.
# Batch-1 gathered columns at 70% / 80% of the rows: 1.08x / 0.83x (14336 x 4096), and 1.02-1.4x
# at 70% on the row lengths of 135M-0.5B models (576-9728 outputs).
# Batch-1 rows read in place (``sampled_addmm``, the ``inplace`` backend): 1.44x at 50%, 1.07x
# at 70%, 0.91x at 80% of the rows.
# Batch-1 gathered columns through the C kernel (``native``): 1.9-2.0x at 50%, 0.99-1.00x with
# every row selected (14336 x 4096 and 4096 x 28672, float32, one thread); with bfloat16 weights
# 1.65-1.69x at 50%, 0.82-0.84x with every row (the conversion to float32 costs compute).
# Gathered rows through the C kernel (``native``): 1.9-2.0x at 50%, 0.97-1.03x with every row
# (14336 x 4096, float32, one thread).
# Channel blocks of 16 read as contiguous runs (``gather_blocks``' ``runs`` backend, 14336 x 4096
# and 4096 x 28672): 1.21-1.34x at 70% of the blocks (benchmarks/probe_blocks_cpu.py).
_DEFAULTS: dict[str, dict[int, float]] = {
    "cpu:rows": {1: 0.40},
    "cpu:rows_inplace": {1: 0.75},
    "cpu:cols": {1: 0.75, 2: 0.40},
    "cpu:cols_native": {1: 0.90},
    "cpu:cols_native_bf16": {1: 0.80},
    "cpu:rows_native": {1: 0.90},
    "cpu:rows_native_bf16": {1: 0.80},
    "cpu:blocks": {1: 0.85},
    "cuda": {1: 0.85, 4: 0.80, 8: 0.70, 16: 0.60},
}
_table: dict[str, dict[int, float]] = {k: dict(v) for k, v in _DEFAULTS.items()}
_version = 0  # bumped by every change of the table (kernels cache what they derive from it)


def version() -> int:
    """A number that changes whenever the table does."""
    return _version


def _key(device_type: str, op: str | None) -> str:
    if op is not None and f"{device_type}:{op}" in _table:
        return f"{device_type}:{op}"
    if device_type in _table:
        return device_type
    for key in _table:
        if key.startswith(device_type + ":"):
            return key
    return "cuda"


def dense_fallback_density(device_type: str, batch: int, op: str | None = None) -> float:
    """The selected fraction above which ``op`` (``"rows"``/``"cols"``) on ``device_type`` at
    ``batch`` runs densely."""
    table = _table[_key(device_type, op)]
    chosen = table[min(table)]
    for b in sorted(table):
        if b <= batch:
            chosen = table[b]
    return chosen


def use_dense(
    device_type: str, batch: int, selected: int, total: int, op: str | None = None
) -> bool:
    """True when a selection of ``selected`` of ``total`` rows is cheaper done densely."""
    return total > 0 and selected > _dense_above(device_type, batch, total, op, _version)


@functools.lru_cache(maxsize=4096)
def _dense_above(device_type: str, batch: int, total: int, op: str | None, _v: int) -> int:
    """The largest selection that still gathers (cached per table version: decode steps ask
    this of every projection, 120 times per token on SmolLM2)."""
    return math.floor(dense_fallback_density(device_type, batch, op) * total)


def set_dense_fallback(device_type: str, table: dict[int, float] | None) -> None:
    """Replace the crossover table of a device type, or of one op there (``"cpu:rows"``);
    a bare device type replaces its per-op tables too. ``None``: back to the defaults. A density
    of 1.0 never falls back; 0.0 always does."""
    global _version
    _version += 1
    if table is None:
        for key in [k for k in _table if k == device_type or k.startswith(device_type + ":")]:
            del _table[key]
        _table.update({k: dict(v) for k, v in _DEFAULTS.items()
                       if k == device_type or k.startswith(device_type + ":")})  # fmt: skip
        return
    if not table or any(not 0.0 <= v <= 1.0 or b < 1 for b, v in table.items()):
        raise ValueError("dense fallback table: batch sizes >= 1 mapping to densities in [0, 1]")
    if ":" not in device_type:
        for key in [k for k in _table if k.startswith(device_type + ":")]:
            del _table[key]
    _table[device_type] = {int(b): float(v) for b, v in table.items()}
