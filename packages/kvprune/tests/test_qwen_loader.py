"""The Qwen2.5-Coder GGUF loader used by the benchmarks (tensor_utils_dev.models)."""

from __future__ import annotations

import hashlib

import pytest

from tensor_utils_dev import models


def _fake_parts(tmp_path, monkeypatch, contents: list[bytes], pinned: bytes):
    paths = []
    for i, data in enumerate(contents):
        p = tmp_path / f"part{i}.bin"
        p.write_bytes(data)
        paths.append(p)
    spec = {
        "name": "Fake-Coder",
        "parts": [f"fake-part{i}" for i in range(len(contents))],
        "version": "1.0",
        "size": len(pinned),
        "sha256": hashlib.sha256(pinned).hexdigest(),
    }
    monkeypatch.setitem(models.QWEN_CODER, "fake", spec)
    monkeypatch.setattr(models, "_part_file", lambda name, version: paths[int(name[9:])])
    return spec


def test_parts_are_joined_in_order_and_hash_checked(tmp_path, monkeypatch):
    _fake_parts(tmp_path, monkeypatch, [b"GGUF", b"-part", b"-two"], b"GGUF-part-two")
    path = models.qwen_coder_gguf("fake", cache_dir=tmp_path / "cache")
    assert path.read_bytes() == b"GGUF-part-two"
    assert models.qwen_coder_gguf("fake", cache_dir=tmp_path / "cache") == path  # cached


def test_a_mismatched_hash_is_refused_and_nothing_is_kept(tmp_path, monkeypatch):
    _fake_parts(tmp_path, monkeypatch, [b"GGUF", b"-tampered"], b"GGUF-original")
    with pytest.raises(models.ModelIntegrityError, match="refusing it"):
        models.qwen_coder_gguf("fake", cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache" / "models").iterdir())


def test_unknown_size_and_missing_parts_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown Qwen2\.5-Coder size"):
        models.qwen_coder_gguf("7b", cache_dir=tmp_path)
    with pytest.raises(models.ModelUnavailableError, match="is not installed"):
        models._part_file("no-such-carrier-part", "0.0.1")


@pytest.mark.slow
def test_qwen_coder_0_5b_hash_and_greedy_answer():
    """The real 0.5B model (needs the bench-qwen group): pinned hash, GQA shape, and a greedy
    completion of a simple function."""
    import torch

    gguf = models.qwen_coder_gguf("0.5b")
    assert models.sha256_file(gguf) == models.QWEN_CODER["0.5b"]["sha256"]
    model, tok = models.load_qwen_coder("0.5b")
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (24, 14, 2)
    ids = tok("def add(a, b):\n    return", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        # transformers types generate's self as a protocol its own models do not declare
        out = model.generate(ids, max_new_tokens=4, do_sample=False)  # pyright: ignore[reportAttributeAccessIssue]
    assert tok.decode(out[0, ids.shape[1] :]).strip().startswith("a + b")
