#!/usr/bin/env bash
# GPU calls for issue 6, from the repo root: `bash packages/jetmoe-model/benchmarks/run_gpu.sh
# MODE...` with MODE in tests, tune-fwd, tune-bwd, bench-uniform, bench-skewed, train; logs and
# CSVs go to $OUT progressively (a timeout keeps what finished). Budget each step with
# timeout so the call ends inside its limit.
set -o pipefail
OUT=${OUT:-/tmp/jetmoe-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH=shared/tensor-utils/src:packages/jetmoe-model/src:packages/jetmoe-model/tests:.carry-jetmoe:$PYTHONPATH
B=packages/jetmoe-model/benchmarks
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv >> "$OUT/gpu.txt"
for MODE in "$@"; do
  echo "=== $MODE $(date -u +%T)"
  case "$MODE" in
  tests) timeout "${TESTS_S:-100}" python -m pytest -q -rfE -m gpu -p no:cacheprovider packages/jetmoe-model/tests > "$OUT/pytest_gpu.log" 2>&1; tail -25 "$OUT/pytest_gpu.log" ;;
  tune-fwd) timeout "${TUNE_S:-150}" python $B/tune_kernels.py --out "$OUT/kernel_sweep.csv" 2>&1 | tee -a "$OUT/tune.log" ;;
  tune-bwd) timeout "${TUNE_S:-70}" python $B/tune_kernels.py --tokens 8192 --sweep bwd --breakdown --out "$OUT/kernel_sweep.csv" 2>&1 | tee -a "$OUT/tune.log" ;;
  breakdown) timeout "${TUNE_S:-40}" python $B/tune_kernels.py --tokens 8192 --sweep none --breakdown --out "$OUT/kernel_sweep.csv" 2>&1 | tee -a "$OUT/tune.log" ;;
  bench-uniform) timeout "${BENCH_S:-150}" python $B/bench_moe_layer.py --routings uniform --out "$OUT/moe_layer.csv" 2>&1 | tee -a "$OUT/bench.log" ;;
  bench-skewed) timeout "${BENCH_S:-150}" python $B/bench_moe_layer.py --routings skewed --tokens "${SKEW_TOKENS:-1,16,256,1024,4096,8192,32768}" --out "$OUT/moe_layer.csv" 2>&1 | tee -a "$OUT/bench.log" ;;
  train) timeout "${TRAIN_S:-120}" python $B/bench_train_step.py --impls "${TRAIN_IMPLS:-triton,grouped_mm,reference,transformers}" --out "$OUT/train_step.csv" 2>&1 | tee -a "$OUT/train.log" ;;
  *) echo "unknown mode $MODE" ;;
  esac
done
echo "=== done $(date -u +%T)"
