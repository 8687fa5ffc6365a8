#!/usr/bin/env bash
# Builds the carry folder that run_gpu.sh needs on the GPU machine (run from the repo root, on a
# machine with PyPI access and the SmolLM2 tokenizer; takes ~6 minutes on 2 cores):
#   galore-torch 1.0 wheel (copied from .whl/), bitsandbytes 0.49.2 trimmed to its CPU and
#   CUDA 13.0 libraries (the GPU machine's torch is 2.11.0+cu130), and the token file.
set -euo pipefail
CARRY=${CARRY:-.carry-galore}
TMP=$(mktemp -d)
mkdir -p "$CARRY"
cp .whl/galore_torch-1.0-py3-none-any.whl "$CARRY/"
WHEEL=bitsandbytes-0.49.2-py3-none-manylinux_2_24_x86_64.whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_24_x86_64 -d "$TMP" bitsandbytes==0.49.2
(
  cd "$TMP" && mkdir w && cd w && unzip -q "../$WHEEL"
  # Keep one native library per backend we use; RECORD must list only what is shipped.
  find bitsandbytes -maxdepth 1 -name 'libbitsandbytes_*.so' \
    ! -name 'libbitsandbytes_cpu.so' ! -name 'libbitsandbytes_cuda130.so' -delete
  grep -v 'libbitsandbytes_' bitsandbytes-0.49.2.dist-info/RECORD > R
  grep -E 'libbitsandbytes_(cpu|cuda130)\.so' bitsandbytes-0.49.2.dist-info/RECORD >> R
  mv R bitsandbytes-0.49.2.dist-info/RECORD
  rm -f "../$WHEEL" && zip -q -r -9 "../$WHEEL" bitsandbytes bitsandbytes-0.49.2.dist-info
)
cp "$TMP/$WHEEL" "$CARRY/"
rm -rf "$TMP"
uv run --no-sync python packages/galore-optim/benchmarks/make_corpus.py \
  --out "$CARRY/corpus_smollm2_v32000.npz"
ls -la "$CARRY"
