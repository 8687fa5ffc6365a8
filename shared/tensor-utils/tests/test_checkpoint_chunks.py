"""Positional chunk reads (``ChunkReader``), their prefetch, whole-input readahead and the atomic
replace: what expo-merge's streaming engine is built on."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tensor_utils.checkpoint import (
    ChunkReader,
    CorruptCheckpointError,
    open_checkpoint,
    save_safetensors,
)
from tensor_utils.checkpoint.atomic import remove, replace, temp_sibling
from tensor_utils.checkpoint.readahead import plan_readahead, start_readahead


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a": torch.randn(37, 5, generator=g).bfloat16(),
        "b": torch.randn(101, generator=g),
        "c": torch.randint(0, 9, (13,), generator=g),
        "empty": torch.zeros(0, 3),
    }


@pytest.fixture(scope="module", params=["safetensors", "pt", "dir"])
def ckpt_path(request, tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    tmp_path = tmp_path_factory.mktemp(request.param)
    state = _state(0)
    if request.param == "safetensors":
        path = tmp_path / "m.safetensors"
        save_safetensors(state, path)
    elif request.param == "pt":
        path = tmp_path / "m.pt"
        torch.save(state, path)
    else:
        path = tmp_path / "m"
        save_safetensors(state, path, max_shard_size=300)
    return path, state


@pytest.mark.parametrize("use_mmap", [True, False])
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_read_any_range_equals_the_tensor(ckpt_path, use_mmap, data):
    path, state = ckpt_path
    with open_checkpoint(path) as ckpt, ChunkReader(ckpt, use_mmap=use_mmap) as reader:
        name = data.draw(st.sampled_from(sorted(state)))
        flat = state[name].reshape(-1)
        begin = data.draw(st.integers(0, flat.numel()))
        count = data.draw(st.integers(0, flat.numel() - begin))
        buf = torch.empty(count * flat.element_size(), dtype=torch.uint8)
        got = reader.read(name, begin, count, buf if data.draw(st.booleans()) else None)
        assert got.dtype == flat.dtype and torch.equal(got, flat[begin : begin + count])
        reader.prefetch(name, begin, count)  # a hint: never fails, changes nothing


def test_reads_from_several_threads(tmp_path):
    state = {f"t{i}": torch.arange(i * 1000, (i + 1) * 1000, dtype=torch.float32) for i in range(8)}
    save_safetensors(state, tmp_path / "m.safetensors")
    errors: list[BaseException] = []
    with open_checkpoint(tmp_path / "m.safetensors") as ckpt:
        reader = ChunkReader(ckpt, use_mmap=False)

        def work(name: str) -> None:
            try:
                buf = torch.empty(4 * 97, dtype=torch.uint8)
                for begin in range(0, 1000, 97):
                    count = min(97, 1000 - begin)
                    got = reader.read(name, begin, count, buf)
                    assert torch.equal(got, state[name][begin : begin + count])
            except BaseException as err:  # surfaced below
                errors.append(err)

        threads = [threading.Thread(target=work, args=(n,)) for n in state]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        reader.close()
    assert not errors, errors


@pytest.mark.parametrize("use_mmap", [True, False])
def test_truncated_file_is_one_line_error(tmp_path, use_mmap):
    path = tmp_path / "m.safetensors"
    save_safetensors({"x": torch.ones(1000)}, path)
    with open_checkpoint(path) as ckpt:
        data = path.read_bytes()
        path.write_bytes(data[:-100])  # shrunk after the header was read
        with ChunkReader(ckpt, use_mmap=use_mmap) as reader:
            with pytest.raises(CorruptCheckpointError, match="truncated"):
                reader.read("x", 0, 1000)
            with pytest.raises(ValueError, match="outside tensor"):
                reader.read("x", 990, 20)


def test_iter_chunks_goes_through_the_reader(tmp_path, monkeypatch):
    save_safetensors({"x": torch.arange(10.0)}, tmp_path / "m.safetensors")
    calls = []
    original = ChunkReader.read
    monkeypatch.setattr(
        ChunkReader, "read", lambda self, *a, **k: calls.append(a) or original(self, *a, **k)
    )
    with open_checkpoint(tmp_path / "m.safetensors") as ckpt:
        pieces = list(ckpt.iter_chunks("x", 4))
    assert [p.tolist() for p in pieces] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert calls == [("x", 0, 4), ("x", 4, 4), ("x", 8, 2)]


def test_readahead_plan_alternates_and_is_bounded(tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"\0" * (80 << 20))
    hints = plan_readahead([tmp_path / "a.safetensors", tmp_path / "b.safetensors"], 48 << 20)
    assert [h[0].name for h in hints] == ["a.safetensors", "b.safetensors"] * 2
    assert all(sum(n for f, _, n in hints if f.name == x) <= 48 << 20 for x in ("a", "b"))
    assert plan_readahead([tmp_path / "missing"], 1 << 20) == []
    with pytest.raises(ValueError, match=">= 0"):
        plan_readahead([tmp_path / "a.safetensors"], -1)
    thread = start_readahead([tmp_path / "a.safetensors"], 1 << 20)
    if thread is not None:
        thread.join(timeout=30)


def test_readahead_imports_no_torch():
    code = "import tensor_utils.checkpoint.readahead, tensor_utils.checkpoint.atomic, sys; "
    code += "assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("kind", ["file", "dir"])
@pytest.mark.parametrize("existing", [None, "file", "dir"])
def test_atomic_replace(tmp_path, kind, existing):
    target = tmp_path / "out"
    if existing == "file":
        target.write_text("old")
    elif existing == "dir":
        target.mkdir()
        (target / "old.txt").write_text("old")
    staging = temp_sibling(target)
    assert staging.parent == tmp_path and staging.name.startswith(".out.tmp-")
    if kind == "file":
        staging.write_text("new")
    else:
        staging.mkdir()
        (staging / "new.txt").write_text("new")
    replace(staging, target)
    assert (target.read_text() if kind == "file" else (target / "new.txt").read_text()) == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no hidden leftovers
    remove(target)
    remove(tmp_path / "never-existed")
    assert not os.listdir(tmp_path)
