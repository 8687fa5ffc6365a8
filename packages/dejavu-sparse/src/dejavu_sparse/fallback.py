"""When a gathered GEMV would not pay: the selected fraction above which the dense product runs.

A gathered product reads only the selected weight rows but pays for the gather (index loads, a
copy through a cache-sized buffer on the CPU); the dense product streams every row at full
bandwidth. Above a measured density the dense product plus a cheap index is faster, so every
backend falls back to it there. The table is per device type and batch size (the gathered path
serves a batch from the union of its rows' selections); ``benchmarks/bench_kernels.py``
measures the crossover, and :func:`set_dense_fallback` replaces it.
"""

from __future__ import annotations

# Selected fraction of rows above which the dense product runs, by device type, then batch size
# (the entry of the largest batch not above the call's batch applies).
_DEFAULTS: dict[str, dict[int, float]] = {
    "cpu": {1: 0.80, 4: 0.70, 8: 0.60, 16: 0.50},
    "cuda": {1: 0.85, 4: 0.80, 8: 0.70, 16: 0.60},
}
_table: dict[str, dict[int, float]] = {k: dict(v) for k, v in _DEFAULTS.items()}


def dense_fallback_density(device_type: str, batch: int) -> float:
    """The selected fraction above which ops on ``device_type`` at ``batch`` run densely."""
    table = _table.get(device_type) or _table["cuda"]
    chosen = table[min(table)]
    for b in sorted(table):
        if b <= batch:
            chosen = table[b]
    return chosen


def use_dense(device_type: str, batch: int, selected: int, total: int) -> bool:
    """True when a selection of ``selected`` of ``total`` rows is cheaper done densely."""
    return total > 0 and selected > dense_fallback_density(device_type, batch) * total


def set_dense_fallback(device_type: str, table: dict[int, float] | None) -> None:
    """Replace the crossover table of a device type (``None``: back to the defaults). A density
    of 1.0 never falls back; 0.0 always does."""
    if table is None:
        _table[device_type] = dict(_DEFAULTS.get(device_type, _DEFAULTS["cuda"]))
        return
    if not table or any(not 0.0 <= v <= 1.0 or b < 1 for b, v in table.items()):
        raise ValueError("dense fallback table: batch sizes >= 1 mapping to densities in [0, 1]")
    _table[device_type] = {int(b): float(v) for b, v in table.items()}
