#!/usr/bin/env bash
# AdamW learning-rate sweep for the convergence benchmark (same model, corpus, budget and
# batch order as run_gpu.sh's runs), one process per lr, concurrently on the one GPU.
set -u -o pipefail
OUT=${OUT:-packages/galore-optim/benchmarks/results}
CARRY=${CARRY:-.carry-galore}
LIMIT=${LIMIT:-250}
LRS=${LRS:-"2e-3 4e-3 8e-3 1.6e-2"}
B=packages/galore-optim/benchmarks
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  "$CARRY"/galore_torch-*.whl
export PYTHONPATH=/tmp/site:shared/tensor-utils/src:packages/galore-optim/src
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
pids=""
for lr in $LRS; do
  timeout "$LIMIT" python3 $B/bench_convergence.py --runs "adamw_lr$lr" \
    --corpus "$CARRY/corpus_smollm2_v32000.npz" --out "$OUT/conv_adamw_lr$lr.csv" \
    > "$OUT/conv_adamw_lr$lr.log" 2>&1 &
  pids="$pids $!"
done
for p in $pids; do wait "$p" || echo "process $p exited with $?"; done
python3 $B/bench_convergence.py --summarize "$OUT"/conv_adamw_lr*.csv --out "$OUT/convergence_adamw_lr.csv" \
  && rm -f "$OUT"/conv_adamw_lr*.csv
tail -n 3 "$OUT"/conv_adamw_lr*.log
