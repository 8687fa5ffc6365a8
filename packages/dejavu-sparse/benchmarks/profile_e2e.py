"""Where a decoded token's time goes on SmolLM2 (CPU): ``torch.profiler`` tables of greedy
``generate``, dense against TEAL 30% with uniform allocation, then a short timing. Needs the
SmolLM2 calibration that ``bench_quality.py`` caches. Run by hand.

    python benchmarks/profile_e2e.py
"""

from __future__ import annotations

import statistics
import time
from typing import Any, cast

import torch
from torch.profiler import ProfilerActivity, profile

NEW_TOKENS = 16


def main() -> None:
    from dejavu_sparse import Calibration, sparse_state, sparsify

    from tensor_utils_dev.models import cache_root, load_smollm2

    torch.set_num_threads(1)
    model, tok = load_smollm2()
    model = cast(Any, model)
    calib = Calibration.load(cache_root() / "dejavu-sparse" / "smollm2", model)
    sparsify(model, "teal", 0.3, calib, greedy=False, track=False)
    state = sparse_state(model)
    prompt = "Explain what a Python decorator is, with an example."
    ids = tok(prompt, return_tensors="pt")["input_ids"]

    def gen(on: bool) -> float:
        for s in state.states:
            s.enabled = on
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
        return time.perf_counter() - t0

    gen(False)
    gen(True)
    for on in (False, True):
        for s in state.states:
            s.enabled = on
        with profile(activities=[ProfilerActivity.CPU]) as p:
            model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                           do_sample=False)  # fmt: skip
        events = p.key_averages()
        total = sum(e.self_cpu_time_total for e in events) / 1e3
        calls = sum(e.count for e in events)
        print(f"=== {'sparse' if on else 'dense'}: {total / NEW_TOKENS:.1f} ms self CPU per token, "
              f"{calls / NEW_TOKENS:.0f} operator calls per token")  # fmt: skip
        print(events.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40))
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(3):
        for on in (False, True):
            times[on].append(gen(on))
    dense, sparse = statistics.median(times[False]), statistics.median(times[True])
    print(f"generate {NEW_TOKENS} tokens: dense {dense:.2f} s, sparse {sparse:.2f} s, "
          f"speed-up {dense / sparse:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
