#!/usr/bin/env bash
# One device call (run from the repo root). Order: a quick kernel smoke test, the GPU tests
# (before any benchmark, so a benchmark timeout cannot starve them), then the full kernel
# benchmark and/or the kernel-variant sweep and/or the memory benchmark. Everything is written
# under $OUT as it goes, so a timeout still returns what finished.
#   bash packages/kvprune/benchmarks/run_gpu.sh [tests_s sweep_s kernel_s memory_s]   (0 = skip)
# (the arguments keep this order; the kernel benchmark runs before the sweep)
set -o pipefail
export PYTHONUNBUFFERED=1
export PYTHONPATH=shared/tensor-utils/src:packages/kvprune/src${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/kvprune_out}
mkdir -p "$OUT"
B="packages/kvprune/benchmarks/bench_decode_gpu.py ${KVPRUNE_BENCH_ARGS:-}"  # --smoke to test on CPU
T_TESTS=${1:-100}
T_SWEEP=${2:-0}
T_KERNEL=${3:-0}
T_MEMORY=${4:-0}
{
  date -u
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,power.limit --format=csv
  python -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/log.txt"
echo "== smoke ($(date -u +%T))" | tee -a "$OUT/log.txt"
timeout 90 python - <<'PY' 2>&1 | tee -a "$OUT/log.txt"
import torch
from kvprune.ops.ragged_decode import naive, random_ragged_case
from kvprune.ops.ragged_decode import triton as tm
dev = "cuda" if torch.cuda.is_available() else "cpu"
bad = 0
for lengths in ([4096, 1, 0, 2049], [300, 5000, 97]):
    for dt in (torch.float16, torch.bfloat16):
        q, k, v, o, n = random_ragged_case(0, lengths, [3] * len(lengths), 4, 128, dt, dev)
        ref, ref_w = naive.ragged_decode_attention(q.float(), k.float(), v.float(), o, n, 0.088)
        for kw in ({}, {"pdl": False}, {"block_n": 64, "num_stages": 3}, {"merge_block_d": 128}):
            for w in (False, True):
                out, ww = tm.ragged_decode_attention(q, k, v, o, n, 0.088, need_weights=w, **kw)
                err = float((out.float() - ref).norm() / ref.norm())
                if w:
                    err = max(err, float((ww - ref_w).norm() / ref_w.norm()))
                bad += err > 1e-2
                print("smoke", lengths, str(dt)[6:], kw, "weights" if w else "", f"rel err {err:.2e}", "OK" if err < 1e-2 else "BAD")
if dev == "cuda":  # the PDL launch inside a captured CUDA graph, replayed
    q, k, v, o, n = random_ragged_case(1, [3000, 17, 9000], [0, 0, 0], 4, 128, torch.float16, dev)
    ref, _ = naive.ragged_decode_attention(q.float(), k.float(), v.float(), o, n, 0.088)
    for w in (False, True):
        f = lambda: tm.ragged_decode_attention(q, k, v, o, n, 0.088, 9000, w, pdl=True)[0]
        f()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            res = f()
        res.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        err = float((res.float() - ref).norm() / ref.norm())
        bad += not err < 1e-2
        print("graph+pdl", "weights" if w else "", f"rel err {err:.2e}", "OK" if err < 1e-2 else "BAD")
print("SMOKE", "FAILED" if bad else "PASSED")
PY
if ! grep -q "SMOKE PASSED" "$OUT/log.txt"; then
  echo "smoke failed: PDL forced off for the rest of this run" | tee -a "$OUT/log.txt"
  export KVPRUNE_PDL=0
fi
if [ "$T_TESTS" -gt 0 ]; then
  echo "== tests ($(date -u +%T))" | tee -a "$OUT/log.txt"
  timeout "$T_TESTS" python -m pytest -m "gpu or triton" packages/kvprune/tests -q -rA \
    -p no:cacheprovider --durations=8 > "$OUT/gpu_tests.log" 2>&1
  echo "pytest exit: $?" | tee -a "$OUT/gpu_tests.log" "$OUT/log.txt"
  grep -E "passed|failed|PASSED|FAILED|ERROR" "$OUT/gpu_tests.log" | tail -30 | tee -a "$OUT/log.txt"
fi
if [ "$T_KERNEL" -gt 0 ]; then
  echo "== kernel ($(date -u +%T))" | tee -a "$OUT/log.txt"
  timeout "$T_KERNEL" python $B --only kernel --out "$OUT/decode_kernel.csv" 2>&1 | tee -a "$OUT/log.txt"
fi
if [ "$T_SWEEP" -gt 0 ]; then
  echo "== sweep ($(date -u +%T))" | tee -a "$OUT/log.txt"
  timeout "$T_SWEEP" python $B --sweep --only none --out "$OUT/sweep.csv" 2>&1 | tee -a "$OUT/log.txt"
fi
if [ "$T_MEMORY" -gt 0 ]; then
  echo "== memory ($(date -u +%T))" | tee -a "$OUT/log.txt"
  timeout "$T_MEMORY" python $B --only memory --out "$OUT/decode_memory.csv" 2>&1 | tee -a "$OUT/log.txt"
fi
echo "== done ($(date -u +%T))" | tee -a "$OUT/log.txt"
