#!/usr/bin/env bash
# One batched GPU session: GPU/Triton tests, step/memory benchmark, convergence run.
# Run from the repo root; galore-torch's wheel is expected in .whl/ (pure Python).
set -u
OUT=${OUT:-packages/galore-optim/benchmarks/results}
STEPS=${STEPS:-1000}
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/galore_torch-1.0-py3-none-any.whl
export PYTHONPATH=shared/tensor-utils/src:packages/galore-optim/src:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pytest packages/galore-optim/tests -m "gpu or triton" -q -p no:cacheprovider 2>&1 | tee $OUT/gpu_tests.log | tail -5
python3 packages/galore-optim/benchmarks/bench_step.py --out $OUT/step.csv 2>&1 | tee $OUT/step.log
python3 packages/galore-optim/benchmarks/bench_convergence.py --steps $STEPS --out $OUT/convergence.csv 2>&1 | tee $OUT/convergence.log
