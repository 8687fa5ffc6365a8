"""On the real SmolLM2-135M-Instruct (slow: run with --run-slow)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).parents[1] / "README.md"


@pytest.fixture(scope="module")
def smollm2():
    from tensor_utils_dev.models import load_smollm2

    return load_smollm2()


@pytest.mark.slow
def test_readme_one_line_example_runs(capsys):
    found = re.search(r"## One line\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert found, "the README has no '## One line' example"
    block = found.group(1)
    exec(compile(block, str(README), "exec"), {})
    printed = capsys.readouterr().out
    assert "The capital of France is" in printed
    assert "freed" in printed


@pytest.mark.slow
def test_fastgen_on_smollm2_prunes_per_kv_head_and_keeps_t(smollm2):
    from kvprune import FastGen, KVPruneCache
    from kvprune.generate import cache_kwarg

    model, tok = smollm2
    text = "\n".join(f"Item {i}: the value of field {i} is {i * 7 % 13}." for i in range(60))
    ids = tok(text, return_tensors="pt")["input_ids"]
    cache = KVPruneCache(model, FastGen(recovery=0.95), tok)
    model.generate(ids, max_new_tokens=4, do_sample=False, **{cache_kwarg(model): cache})
    report = cache.report()
    req = report.requests[0]
    assert len(req.policies) == 30 and all(
        len(h) == 3 for h in req.policies
    )  # 30 layers x 3 KV heads
    assert req.freed_bytes > 0 and 0 < req.kept_fraction < 1
    for layer_rec, layer_pol in zip(req.recovery, req.policies, strict=True):
        for rec, pol in zip(layer_rec, layer_pol, strict=True):
            assert pol == "full" or rec >= 0.95


@pytest.mark.slow
def test_full_policy_on_smollm2_matches_dynamic_cache(smollm2):
    from kvprune import Full, KVPruneCache
    from kvprune.generate import cache_kwarg

    model, tok = smollm2
    tok.padding_side = "left"
    batch = tok(
        ["Hello, my name is", "The three primary colours are"], return_tensors="pt", padding=True
    )
    ref = model.generate(**batch, max_new_tokens=12, do_sample=False)
    cache = KVPruneCache(model, Full(), tok)
    out = model.generate(**batch, max_new_tokens=12, do_sample=False, **{cache_kwarg(model): cache})
    assert torch.equal(ref, out)
