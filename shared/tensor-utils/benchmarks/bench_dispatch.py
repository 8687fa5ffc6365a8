"""Eager dispatch overhead of ``tensor_utils.ops``: a registered op's call against calling the
backend it resolves to directly, for a trivial op and one real op of each package (CPU tensors,
so the chosen backend is the reference; the dispatch work is the same on CUDA).

    python shared/tensor-utils/benchmarks/bench_dispatch.py [--number 200 --repeat 200]

Each op is timed with ``timeit`` as rounds of ``number`` calls, the op and the direct call
interleaved round by round (A, B, A, B, ...) so drift and other load hit both; per call, the
minimum over the rounds. ``overhead_us`` = op - direct with the real backend;
``dispatch_us`` = the same difference with the cached backend swapped for an empty function of
the same call (the dispatch alone, free of the body's own noise; goal: at most 1 us). Short
rounds and many of them: the minimum then comes from a round no other process interrupted.
CSV: ``results/dispatch_overhead.csv`` (``BENCH_RESULTS`` when set).
"""

from __future__ import annotations

import argparse
import timeit
from typing import Any

import torch

from tensor_utils.ops import Op
from tensor_utils_dev.bench import results_dir, write_csv


def scale(x: torch.Tensor, s: float) -> torch.Tensor:
    """The trivial op: one multiply."""
    return x * s


Case = tuple[str, Op, tuple[Any, ...], dict[str, Any]]


def cases() -> list[Case]:
    """``(label, op, args, kwargs)``: the trivial op, then one op of each package."""
    trivial = Op("bench_dispatch::scale", reference=scale)
    found: list[Case] = [("trivial (x * s)", trivial, (torch.ones(4), 2.0), {})]
    try:
        from expo_merge.ops import extrapolate

        found.append(
            ("expo_merge::extrapolate", extrapolate, (torch.ones(64), torch.zeros(64), 0.5), {})
        )
    except ImportError:
        pass
    try:
        from galore_optim.ops import quantize_blockwise

        found.append(
            (
                "galore_optim::quantize_blockwise",
                quantize_blockwise,
                (torch.rand(256), "unsigned"),
                {},
            )
        )
    except ImportError:
        pass
    try:
        from kvprune.ops.ragged_decode import ragged_decode_attention
        from kvprune.ops.ragged_decode.cases import random_ragged_case

        q, k, v, off, lens = random_ragged_case(0, [7, 3], [1, 0], 2, 8, torch.float32)
        args = (q, k, v, off, lens, 8**-0.5)
        found.append(
            ("kvprune::ragged_decode_attention", ragged_decode_attention, args, {"max_len": 7})
        )
    except ImportError:
        pass
    try:
        from jetmoe_model.ops.experts import expert_linear
        from jetmoe_model.routing import sort_by_expert

        r = sort_by_expert(torch.tensor([[0, 1], [1, 2], [2, 0]]), 3)
        args = (torch.randn(3, 8), torch.randn(3, 8, 8), r.sorted_pair, r.expert_offsets)
        found.append(("jetmoe_model::expert_linear", expert_linear, args, {}))
    except ImportError:
        pass
    return found


def measure(op: Op, args, kwargs, number: int, repeat: int) -> dict[str, Any]:
    t = next(a for a in args if isinstance(a, torch.Tensor))
    chosen = op.select(t.device.type, t.dtype)
    direct = op.implementation(chosen)
    op(*args, **kwargs)  # resolve and cache once, as any first call does
    key = (t.dtype, t.is_cuda, t.is_cpu)
    assert op._cache[key] is direct

    def stub(*_args, **_kwargs):
        return None

    def with_body(body):
        op._cache[key] = body  # the cached resolution, as a real call finds it

    # The full call against the backend, and the same call with the backend replaced by an empty
    # function: the second pair isolates the dispatch from a body whose own run-to-run noise
    # (tens of us for a 150 us op) would hide a difference of 1 us.
    timers = {
        "op": (timeit.Timer(lambda: op(*args, **kwargs)), direct),
        "direct": (timeit.Timer(lambda: direct(*args, **kwargs)), direct),
        "op_empty": (timeit.Timer(lambda: op(*args, **kwargs)), stub),
        "empty": (timeit.Timer(lambda: stub(*args, **kwargs)), stub),
    }
    best = dict.fromkeys(timers, float("inf"))
    try:
        for _ in range(repeat):
            for name, (timer, body) in timers.items():  # interleaved rounds
                with_body(body)
                best[name] = min(best[name], timer.timeit(number) / number * 1e6)
    finally:
        with_body(direct)
    return {
        "backend": chosen,
        "op_us": best["op"],
        "direct_us": best["direct"],
        "overhead_us": best["op"] - best["direct"],
        "dispatch_us": best["op_empty"] - best["empty"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "\n").splitlines()[0])
    parser.add_argument("--number", type=int, default=200, help="calls per timed round")
    parser.add_argument("--repeat", type=int, default=200, help="rounds per timer")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for label, op, op_args, kwargs in cases():
        row = {"op": label, **measure(op, op_args, kwargs, args.number, args.repeat)}
        row.update(number=args.number, repeat=args.repeat, device="cpu")
        rows.append(row)
        print(
            f"{label:36s} {row['backend']:10s} op {row['op_us']:8.2f} us  direct "
            f"{row['direct_us']:8.2f} us  overhead {row['overhead_us']:+.2f} us  dispatch "
            f"{row['dispatch_us']:+.2f} us",
            flush=True,
        )
    write_csv(results_dir(__file__) / "dispatch_overhead.csv", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
