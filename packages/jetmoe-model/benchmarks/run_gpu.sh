#!/usr/bin/env bash
# GPU calls for issue 6, from the repo root: `bash packages/jetmoe-model/benchmarks/run_gpu.sh
# MODE...` with MODE in smoke, tests5, diag, bench, tests, tune, kernels, bench-uniform,
# bench-skewed, train, persistent, bench6, tests6, cache (run 6: `bench6 tests6`; run 5: `tests5 diag bench`);
# logs and CSVs go to $OUT progressively (a timeout keeps what finished). Each step has its own
# timeout; `tests` gets TESTS_S or else what is left of BUDGET_S (seconds since the script started), so the
# call ends inside its limit. A Triton cache from an earlier call
# (.carry-jetmoe/triton_cache.tgz) is restored first and `cache` saves this one to $OUT.
set -o pipefail
OUT=${OUT:-/tmp/jetmoe-out}
BUDGET_S=${BUDGET_S:-280}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH=shared/tensor-utils/src:packages/jetmoe-model/src:packages/jetmoe-model/tests:.carry-jetmoe:$PYTHONPATH
export TRITON_CACHE_DIR=/tmp/jetmoe-triton-cache
mkdir -p "$TRITON_CACHE_DIR"
[ -f .carry-jetmoe/triton_cache.tgz ] && tar xzf .carry-jetmoe/triton_cache.tgz -C "$TRITON_CACHE_DIR"
B=packages/jetmoe-model/benchmarks
T=packages/jetmoe-model/tests
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv
lscpu | grep -E "Model name|^CPU\(s\)|MHz" || true
left() { echo $(( BUDGET_S - SECONDS > 5 ? BUDGET_S - SECONDS : 5 )); }
for MODE in "$@"; do
  echo "=== $MODE $(date -u +%T) (${SECONDS}s)"
  case "$MODE" in
  smoke) timeout "${SMOKE_S:-60}" python -m pytest -q -rfE -x -p no:cacheprovider $T/test_route_kernels.py $T/test_expert_mlp.py > "$OUT/pytest_smoke.log" 2>&1; tail -5 "$OUT/pytest_smoke.log" ;;
  tests5) timeout "${TESTS_S:-$(left)}" python -m pytest -q -rfE -p no:cacheprovider $T/test_gpu.py $T/test_route_kernels.py $T/test_expert_mlp.py -k "test_gpu or (test_route_kernels and gpu) or dh_kernel or training_gradients or fused_route_layer" > "$OUT/pytest_gpu.log" 2>&1; tail -15 "$OUT/pytest_gpu.log" ;;
  diag) timeout "${DIAG_S:-55}" python $B/tune_kernels.py --tokens "" --sweep none --profile "$OUT/profile_1k.log" --dh --pick "$OUT/overrides.json" --out "$OUT/kernel_sweep.csv" 2>&1 ;;
  bench) timeout "${BENCH_S:-$(left)}" python $B/bench_moe_layer.py --routings uniform,skewed --overrides "$OUT/overrides.json" --out "$OUT/moe_layer.csv" 2>&1 ;;
  tests) timeout "${TESTS_S:-$(left)}" python -m pytest -q -rfE -m gpu -p no:cacheprovider $T > "$OUT/pytest_gpu.log" 2>&1; tail -25 "$OUT/pytest_gpu.log" ;;
  tune) timeout "${TUNE_S:-100}" python $B/tune_kernels.py --tokens "${TUNE_TOKENS:-1024,8192,32768}" --sweep none --candidates --profile "$OUT/profile_1k.log" --out "$OUT/kernel_sweep.csv" 2>&1 | tee -a "$OUT/tune.log" ;;
  kernels) timeout "${KERNELS_S:-90}" python $B/tune_kernels.py --tokens 8192 --sweep kernels --breakdown --out "$OUT/kernel_sweep.csv" 2>&1 | tee -a "$OUT/tune.log" ;;
  bench-uniform) timeout "${BENCH_S:-150}" python $B/bench_moe_layer.py --routings uniform --out "$OUT/moe_layer.csv" 2>&1 | tee -a "$OUT/bench.log" ;;
  bench-skewed) timeout "${SKEW_S:-150}" python $B/bench_moe_layer.py --routings skewed --tokens "${SKEW_TOKENS:-1,16,256,1024,4096,8192,32768}" --out "$OUT/moe_layer.csv" 2>&1 | tee -a "$OUT/bench.log" ;;
  train) timeout "${TRAIN_S:-$(left)}" python $B/bench_train_step.py --impls "${TRAIN_IMPLS:-triton,grouped_mm,reference,transformers}" --out "$OUT/train_step.csv" 2>&1 | tee -a "$OUT/train.log" ;;
  persistent) timeout "${PERSIST_S:-300}" python $B/tune_kernels.py --tokens "" --sweep none --persistent "${PERSIST_TOKENS:-8192,32768}" --rounds "${ROUNDS:-3}" --pick "$OUT/persistent_picks.json" --out "$OUT/persistent_probe.csv" 2>&1 | tee -a "$OUT/persistent.log" ;;
  bench6) timeout "${BENCH_S:-240}" python $B/bench_moe_layer.py --rounds "${ROUNDS:-7}" --tokens 1024,4096,8192,32768 --impls grouped_mm,triton,transformers,dense_roofline --routings uniform,skewed --out "$OUT/moe_layer_interleaved.csv" 2>&1 | tee -a "$OUT/bench6.log" | grep -E "T=  (1024|8192)" ;;
  tests6) timeout "${TESTS_S:-$(left)}" python -m pytest -q -rfE -p no:cacheprovider $T/test_gpu.py $T/test_route_kernels.py $T/test_expert_mlp.py -k "test_gpu or (test_route_kernels and gpu) or persistent or swiglu_backward or dh_epilogue or training_gradients or fused_route_layer" > "$OUT/pytest_gpu.log" 2>&1; tail -15 "$OUT/pytest_gpu.log" ;;
  cache) tar czf "$OUT/triton_cache.tgz" -C "$TRITON_CACHE_DIR" . && ls -la "$OUT/triton_cache.tgz" ;;
  *) echo "unknown mode $MODE" ;;
  esac
done
echo "=== done $(date -u +%T) (${SECONDS}s)"
