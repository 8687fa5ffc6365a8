"""The README's Python examples run as written, in order (the second reuses names from the
first, as a reader would in one session), from a copy of the package folder's example data and
with a tiny random-init model standing in for ``path/to/causal-lm``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from perl_testlib import tiny

PACKAGE = Path(__file__).parents[1]
README = PACKAGE / "README.md"


def test_readme_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 2
    shutil.copytree(PACKAGE / "examples", tmp_path / "examples")
    base, tok = tiny()
    base.config.max_position_embeddings = 512  # the example pairs are ~200 characters
    base.save_pretrained(tmp_path / "path/to/causal-lm")
    tok.save_pretrained(tmp_path / "path/to/causal-lm")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(blocks[0], "README.md[0]", "exec"), namespace)
    metrics = namespace["result"].metrics
    assert {"accuracy", "auc"} <= set(metrics) and 0.0 <= metrics["accuracy"] <= 1.0
    exec(compile(blocks[1], "README.md[1]", "exec"), namespace)
    history = namespace["result"].history
    assert len(history) == 20
    assert all(
        {"reward", "kl", "entropy", "response_length", "true_reward"} <= set(r) for r in history
    )
    for folder in ("rm-adapter", "policy-adapter"):
        config = json.loads((tmp_path / folder / "adapter_config.json").read_text())
        assert config["r"] == 8
    assert (tmp_path / "rm-adapter" / "head.safetensors").exists()
    assert (tmp_path / "rl.png").stat().st_size > 0
