#!/usr/bin/env bash
# One device call (run from the repo root): kernel timings, GPU tests (in parallel with the
# memory benchmark, which does not time kernels), then the kernel-variant sweep. Everything
# is written under $OUT as it goes, so a timeout still returns what finished.
#   bash packages/kvprune/benchmarks/run_gpu.sh [kernel_s tests_s sweep_s]
set -o pipefail
export PYTHONUNBUFFERED=1
export PYTHONPATH=shared/tensor-utils/src:packages/kvprune/src${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/kvprune_out}
mkdir -p "$OUT"
B="packages/kvprune/benchmarks/bench_decode_gpu.py ${KVPRUNE_BENCH_ARGS:-}"  # --smoke to test on CPU
T_KERNEL=${1:-100}
T_TESTS=${2:-75}
T_SWEEP=${3:-40}
{
  date -u
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,power.limit --format=csv
  python -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/log.txt"
echo "== kernel ($(date -u +%T))" | tee -a "$OUT/log.txt"
timeout "$T_KERNEL" python $B --only kernel --out "$OUT/decode_kernel.csv" 2>&1 | tee -a "$OUT/log.txt"
echo "== tests + memory ($(date -u +%T))" | tee -a "$OUT/log.txt"
timeout "$T_TESTS" python -m pytest -m "gpu or triton" packages/kvprune/tests -q -p no:cacheprovider \
  > "$OUT/gpu_tests.log" 2>&1 &
TESTS=$!
timeout "$T_TESTS" python $B --only memory --out "$OUT/decode_memory.csv" 2>&1 | tee -a "$OUT/log.txt"
wait $TESTS
echo "pytest exit: $?" | tee -a "$OUT/gpu_tests.log" "$OUT/log.txt"
tail -3 "$OUT/gpu_tests.log" | tee -a "$OUT/log.txt"
if [ "$T_SWEEP" -gt 0 ]; then
  echo "== sweep ($(date -u +%T))" | tee -a "$OUT/log.txt"
  timeout "$T_SWEEP" python $B --sweep --only none --out "$OUT/sweep.csv" 2>&1 | tee -a "$OUT/log.txt"
fi
echo "== done ($(date -u +%T))" | tee -a "$OUT/log.txt"
