"""Every supported format round-trips every dtype, empty and 0-d tensors, bit for bit."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tensor_utils.checkpoint import (
    SafetensorsWriter,
    TensorSpec,
    open_checkpoint,
    plan_shards,
    save_safetensors,
)
from tensor_utils_dev.testing.strategies import state_dicts


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(sorted(got)) == list(sorted(want))
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype, name
        assert got[name].shape == tensor.shape, name
        # Compare raw bytes: equal() would call NaN != NaN and can't see -0.0 vs 0.0.
        assert torch.equal(
            got[name].reshape(-1).view(torch.uint8),
            tensor.contiguous().reshape(-1).view(torch.uint8),
        ), name


def read_all(path) -> dict[str, torch.Tensor]:
    with open_checkpoint(path) as ckpt:
        return {name: t.clone() for name, t in ckpt.iter_tensors()}


@settings(max_examples=25)
@given(sd=state_dicts(min_size=1))
def test_safetensors_file_roundtrip(tmp_path_factory, sd):
    path = tmp_path_factory.mktemp("st") / "model.safetensors"
    save_safetensors(sd, path)
    assert_same(read_all(path), sd)
    # Our files are ordinary safetensors: the reference library reads them.
    assert_same(safetensors.torch.load_file(path), sd)


@settings(max_examples=25)
@given(sd=state_dicts(min_size=1), shard_bytes=st.integers(min_value=1, max_value=400))
def test_sharded_directory_roundtrip(tmp_path_factory, sd, shard_bytes):
    out = tmp_path_factory.mktemp("dir") / "ckpt"
    save_safetensors(sd, out, max_shard_size=shard_bytes, metadata={"origin": "test"})
    ckpt = open_checkpoint(out)
    assert ckpt.kind == "directory"
    assert ckpt.metadata["origin"] == "test"
    assert_same(read_all(out), sd)
    shards = set(ckpt.shard_of.values())
    if len(shards) > 1:
        index = json.loads((out / "model.safetensors.index.json").read_text())
        assert index["metadata"]["total_size"] == sum(
            t.numel() * t.element_size() for t in sd.values()
        )
        assert set(index["weight_map"].values()) == shards


@settings(max_examples=25)
@given(
    sd=state_dicts(min_size=1),
    wrapper=st.sampled_from([None, "state_dict", "model", "model_state_dict"]),
)
def test_torch_file_roundtrip(tmp_path_factory, sd, wrapper):
    path = tmp_path_factory.mktemp("pt") / "model.pt"
    torch.save(sd if wrapper is None else {wrapper: sd, "epoch": 3, "lr": 0.1}, path)
    assert_same(read_all(path), sd)


def test_legacy_pickle_format_reads(tmp_path):
    sd = {"w": torch.randn(3, 4), "step": torch.tensor(7)}
    torch.save(sd, tmp_path / "old.bin", _use_new_zipfile_serialization=False)
    assert_same(read_all(tmp_path / "old.bin"), sd)


def test_reads_files_written_by_safetensors_library(tmp_path):
    sd = {
        "b": torch.randn(5, dtype=torch.bfloat16),
        "a": torch.arange(6).reshape(2, 3),
        "z": torch.tensor(1.5),
    }
    safetensors.torch.save_file(sd, tmp_path / "x.safetensors", metadata={"k": "v"})
    ckpt = open_checkpoint(tmp_path / "x.safetensors")
    assert ckpt.metadata == {"k": "v"}
    assert_same(read_all(tmp_path / "x.safetensors"), sd)


def test_hf_sharded_layout_from_transformers_style_index(tmp_path):
    a, b = {"x.weight": torch.randn(4, 4)}, {"y.weight": torch.randn(2), "y.bias": torch.zeros(2)}
    safetensors.torch.save_file(a, tmp_path / "model-00001-of-00002.safetensors")
    safetensors.torch.save_file(b, tmp_path / "model-00002-of-00002.safetensors")
    weight_map = {
        **dict.fromkeys(a, "model-00001-of-00002.safetensors"),
        **dict.fromkeys(b, "model-00002-of-00002.safetensors"),
    }
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 72}, "weight_map": weight_map})
    )
    ckpt = open_checkpoint(tmp_path)
    assert (
        ckpt.is_sharded
        and ckpt.shard_of == weight_map
        and ckpt.index_metadata == {"total_size": 72}
    )
    assert_same(read_all(tmp_path), {**a, **b})


def test_pytorch_bin_directory(tmp_path):
    sd = {"w": torch.randn(2, 3)}
    torch.save(sd, tmp_path / "pytorch_model.bin")
    assert open_checkpoint(tmp_path).kind == "directory"
    assert_same(read_all(tmp_path), sd)


def test_iteration_streams_in_disk_order(tmp_path):
    sd = {f"t{i}": torch.full((3,), float(i)) for i in range(10)}
    save_safetensors(sd, tmp_path / "d", max_shard_size=30)
    ckpt = open_checkpoint(tmp_path / "d")
    order = [(str(ckpt.tensors[n].file), ckpt.tensors[n].start) for n, _ in ckpt.iter_tensors()]
    assert order == sorted(order)


def test_writer_accepts_any_write_order_and_fixed_shard_names(tmp_path):
    sd = {f"layer{i}.w": torch.randn(i + 1, 2) for i in range(5)}
    names = {n: ("a.safetensors" if i % 2 else "b.safetensors") for i, n in enumerate(sd)}
    specs = [TensorSpec.of(n, t) for n, t in sd.items()]
    with SafetensorsWriter(
        tmp_path / "out", specs, shard_names=names, index_metadata={"note": "x"}
    ) as w:
        for n in reversed(list(sd)):
            w.write(n, sd[n])
    ckpt = open_checkpoint(tmp_path / "out")
    assert ckpt.shard_of == names and ckpt.index_metadata["note"] == "x"
    assert_same(read_all(tmp_path / "out"), sd)


def test_single_shard_directory_has_no_index(tmp_path):
    save_safetensors({"w": torch.ones(2)}, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.safetensors"]


def test_plan_shards_respects_limit_and_order():
    specs = [TensorSpec(f"t{i}", torch.float32, (10,)) for i in range(7)]  # 40 bytes each
    plan = plan_shards(specs, 100)
    assert list(plan) == [s.name for s in specs]
    assert len(set(plan.values())) == 4  # 2+2+2+1
    big = [TensorSpec("huge", torch.float32, (1000,))]
    assert plan_shards(big, 10) == {"huge": "model.safetensors"}


@pytest.mark.parametrize(
    "dtype",
    [torch.bfloat16, torch.float16, torch.float32, torch.int64, torch.bool, torch.float8_e4m3fn],
)
def test_every_dtype_exactly(tmp_path, dtype):
    t = torch.randn(3, 5).to(dtype)
    save_safetensors(
        {"t": t, "empty": torch.empty(0, 4, dtype=dtype), "scalar": t[0, 0].clone()},
        tmp_path / "x.safetensors",
    )
    assert_same(
        read_all(tmp_path / "x.safetensors"),
        {"t": t, "empty": torch.empty(0, 4, dtype=dtype), "scalar": t[0, 0]},
    )


@settings(max_examples=20)
@given(
    sd=state_dicts(min_size=1),
    chunk=st.integers(min_value=1, max_value=40),
    fmt=st.sampled_from(["st", "dir", "pt"]),
)
def test_chunked_read_and_write_roundtrip(tmp_path_factory, sd, chunk, fmt):
    """iter_chunks -> write_chunk reproduces every tensor, whatever the chunk size and format."""
    base = tmp_path_factory.mktemp("chunks")
    src = base / {"st": "in.safetensors", "dir": "in", "pt": "in.pt"}[fmt]
    if fmt == "pt":
        torch.save(sd, src)
    else:
        save_safetensors(sd, src, max_shard_size=64)
    with open_checkpoint(src) as ckpt:
        specs = [TensorSpec(i.name, i.dtype, i.shape) for i in ckpt.tensors.values()]
        with SafetensorsWriter(base / "out.safetensors", specs) as writer:
            for name in ckpt.tensors:
                pieces = list(ckpt.iter_chunks(name, chunk))
                assert all(p.numel() <= chunk for p in pieces)
                assert sum(p.numel() for p in pieces) == ckpt.tensors[name].numel
                for piece in pieces:
                    writer.write_chunk(name, piece)
                if not pieces:  # empty tensor: no chunks, write it whole
                    writer.write(
                        name, torch.empty(ckpt.tensors[name].shape, dtype=ckpt.tensors[name].dtype)
                    )
    assert_same(read_all(base / "out.safetensors"), sd)


def test_write_chunk_rejects_overflow_and_mixing(tmp_path):
    from tensor_utils.checkpoint import CheckpointError

    w = SafetensorsWriter(tmp_path / "x.safetensors", [TensorSpec("a", torch.float32, (2, 3))])
    w.write_chunk("a", torch.ones(4))
    with pytest.raises(CheckpointError, match="exceed its 6 elements"):
        w.write_chunk("a", torch.ones(3))
    with pytest.raises(CheckpointError, match="partly written"):
        w.write("a", torch.ones(2, 3))
    with pytest.raises(CheckpointError, match=r"declared torch\.float32"):
        w.write_chunk("a", torch.ones(2, dtype=torch.float16))
    w.write_chunk("a", torch.full((2,), 2.0))
    w.commit()
    assert open_checkpoint(tmp_path / "x.safetensors").get("a").tolist() == [[1, 1, 1], [1, 2, 2]]


@pytest.mark.parametrize("out", ["empty.safetensors", "emptydir"])
def test_empty_checkpoint(tmp_path, out):
    save_safetensors({}, tmp_path / out, metadata={"k": "v"})
    ckpt = open_checkpoint(tmp_path / out)
    assert len(ckpt) == 0 and ckpt.metadata["k"] == "v"
    assert (
        safetensors.torch.load_file(
            tmp_path / out if out.endswith(".safetensors") else tmp_path / out / "model.safetensors"
        )
        == {}
    )
