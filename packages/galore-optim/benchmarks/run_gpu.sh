#!/usr/bin/env bash
# One batched GPU call (run from the repo root):
#   1. step / refresh / state-memory benchmark at LLaMA-1B shapes, ranks 512 and 128, with
#      galore-torch's 8-bit optimizer (bitsandbytes from the carried, trimmed wheel);
#   2. the convergence runs, one process per optimizer, concurrently on the one GPU;
#   3. the package's GPU tests, alongside 2 (the timings of 1 need the GPU alone, 2 and 3 don't).
# Wheels (galore-torch, trimmed bitsandbytes) and the token file come from $CARRY.
# Each phase has a time limit so the whole script ends inside $BUDGET seconds; results are
# written as they come (per-run CSVs are appended at every evaluation).
# CPU smoke test: GALORE_BENCH_TINY=1 STEPS=20 EVAL_EVERY=10 OUT=/tmp/o bash .../run_gpu.sh
set -u -o pipefail
START=$SECONDS
OUT=${OUT:-packages/galore-optim/benchmarks/results}
CARRY=${CARRY:-.carry-galore}
STEPS=${STEPS:-1000}
EVAL_EVERY=${EVAL_EVERY:-100}
BUDGET=${BUDGET:-440}
SITE=${SITE:-/tmp/site}
B=packages/galore-optim/benchmarks
W=${LOGS:-/tmp/galore-bench-logs}
mkdir -p "$OUT" "$W"
${PIP:-python3 -m pip} install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
  "$CARRY"/*.whl
export PYTHONPATH=$SITE:shared/tensor-utils/src:packages/galore-optim/src${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
elapsed() { echo $((SECONDS - START)); }
bundle() { tar -czf "$OUT/logs.tgz" -C "$W" . 2>/dev/null; }
STEP_ARGS="" R1=512 R2=128 BATCH=${BATCH:-64} SEQ=${SEQ:-256}
if [ "${GALORE_BENCH_TINY:-0}" = 1 ]; then
  STEP_ARGS="--model tiny --steps 3 --gap 8" R1=32 R2=8 BATCH=8 SEQ=64
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c "import torch, bitsandbytes as b, bitsandbytes.cextension as c; print('torch', torch.__version__, torch.version.cuda, '| bitsandbytes', b.__version__, type(c.lib).__name__, getattr(c.lib, '_lib', ''))" 2>&1 | tail -3
  echo "== step benchmark, rank $R1 ($(elapsed) s)"
  timeout 120 python3 $B/bench_step.py --rank $R1 $STEP_ARGS --out "$OUT/step.csv" 2>&1 | tee "$W/step512.log"
  bundle
  echo "== step benchmark, rank $R2 ($(elapsed) s)"
  timeout 90 python3 $B/bench_step.py --rank $R2 $STEP_ARGS --out "$OUT/step.csv" 2>&1 | tee "$W/step128.log"
  bundle
  LEFT=$((BUDGET - $(elapsed) - 15))
  echo "== convergence, $STEPS steps, 4 concurrent processes, limit $LEFT s ($(elapsed) s)"
  pids=""
  for r in adamw galore_torch galore_optim_exact galore_optim_randomized; do
    timeout $LEFT python3 $B/bench_convergence.py --steps "$STEPS" --eval-every "$EVAL_EVERY" \
      --batch "$BATCH" --seq "$SEQ" --runs $r --corpus "$CARRY/corpus_smollm2_v32000.npz" --out "$OUT/conv_$r.csv" > "$W/conv_$r.log" 2>&1 &
    pids="$pids $!"
  done
  echo "== GPU tests, alongside ($(elapsed) s)"
  [ "${SKIP_TESTS:-0}" = 1 ] || timeout $((LEFT - 10)) python3 -m pytest packages/galore-optim/tests -m "gpu or triton" -q \
    -p no:cacheprovider 2>&1 | tee "$W/gpu_tests.log" | tail -8
  bundle
  for p in $pids; do wait "$p" || echo "convergence process $p exited with $?"; done
  echo "== convergence done ($(elapsed) s)"
  for r in adamw galore_torch galore_optim_exact galore_optim_randomized; do
    tail -4 "$W/conv_$r.log"
  done
  python3 $B/bench_convergence.py --summarize "$OUT"/conv_*.csv --out "$OUT/convergence.csv" \
    && rm -f "$OUT"/conv_*.csv
  bundle
  echo "== end ($(elapsed) s)"
} 2>&1 | tee "$OUT/log"
