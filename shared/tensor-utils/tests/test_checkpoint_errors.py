"""Malformed or unsafe inputs get a one-line CheckpointError; failed writes leave nothing behind."""

from __future__ import annotations

import errno
import json
import os
import struct

import pytest
import safetensors.torch
import torch

from tensor_utils.checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointWriteError,
    CorruptCheckpointError,
    DuplicateTensorError,
    SafetensorsWriter,
    TensorSpec,
    UnsafeCheckpointError,
    UnsupportedDtypeError,
    open_checkpoint,
    parse_size,
    save_safetensors,
)


def raw_safetensors(path, header: dict | bytes, data: bytes = b"", length: int | None = None):
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body) if length is None else length) + body + data)
    return path


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text, text
    return text


def entry(dtype="F32", shape=(2,), begin=0, end=8):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointNotFoundError) as err:
        open_checkpoint(tmp_path / "nope.safetensors")
    assert "no such file" in one_line(err)


def test_truncated_data(tmp_path):
    save_safetensors({"w": torch.randn(100)}, tmp_path / "x.safetensors")
    data = (tmp_path / "x.safetensors").read_bytes()
    (tmp_path / "x.safetensors").write_bytes(data[:-10])
    with pytest.raises(CorruptCheckpointError) as err:
        open_checkpoint(tmp_path / "x.safetensors")
    assert "truncated" in one_line(err)


def test_file_shorter_than_length_prefix(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(CorruptCheckpointError) as err:
        open_checkpoint(tmp_path / "x.safetensors")
    assert "too short" in one_line(err)


def test_header_length_beyond_file_size(tmp_path):
    raw_safetensors(tmp_path / "x.safetensors", {"w": entry()}, b"\0" * 8, length=10**6)
    with pytest.raises(CorruptCheckpointError) as err:
        open_checkpoint(tmp_path / "x.safetensors")
    assert "runs past the end" in one_line(err)


@pytest.mark.parametrize("header", [b"{not json", b"\xff\xfe", b"[1, 2]"])
def test_bad_json(tmp_path, header):
    raw_safetensors(tmp_path / "x.safetensors", header)
    with pytest.raises(CorruptCheckpointError) as err:
        open_checkpoint(tmp_path / "x.safetensors")
    one_line(err)


def test_overlapping_offsets(tmp_path):
    header = {"a": entry(begin=0, end=8), "b": entry(begin=4, end=12)}
    raw_safetensors(tmp_path / "x.safetensors", header, b"\0" * 12)
    with pytest.raises(CorruptCheckpointError) as err:
        open_checkpoint(tmp_path / "x.safetensors")
    assert "overlaps" in one_line(err)


def test_offsets_disagree_with_shape(tmp_path):
    raw_safetensors(tmp_path / "x.safetensors", {"a": entry(shape=(3,), begin=0, end=8)}, b"\0" * 8)
    with pytest.raises(CorruptCheckpointError) as err:
        open_checkpoint(tmp_path / "x.safetensors")
    assert "needs 12" in one_line(err)


def test_hole_in_data_section(tmp_path):
    raw_safetensors(tmp_path / "x.safetensors", {"a": entry(begin=4, end=12)}, b"\0" * 12)
    with pytest.raises(CorruptCheckpointError) as err:
        open_checkpoint(tmp_path / "x.safetensors")
    assert "unindexed" in one_line(err)


def test_duplicate_key_in_header(tmp_path):
    body = b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}'
    raw_safetensors(tmp_path / "x.safetensors", body, b"\0" * 8)
    with pytest.raises(DuplicateTensorError) as err:
        open_checkpoint(tmp_path / "x.safetensors")
    assert "'a'" in one_line(err)


def test_duplicate_key_across_shards(tmp_path):
    safetensors.torch.save_file({"a": torch.ones(1)}, tmp_path / "s1.safetensors")
    safetensors.torch.save_file({"a": torch.ones(1)}, tmp_path / "s2.safetensors")
    with pytest.raises(DuplicateTensorError) as err:
        open_checkpoint(tmp_path)
    assert "both" in one_line(err)


def test_unknown_dtype(tmp_path):
    raw_safetensors(tmp_path / "x.safetensors", {"a": entry(dtype="Q4_K")}, b"\0" * 8)
    with pytest.raises(UnsupportedDtypeError) as err:
        open_checkpoint(tmp_path / "x.safetensors")
    assert "Q4_K" in one_line(err)


@pytest.mark.parametrize(
    "bad",
    [
        {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]},
        {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]},
        {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]},
        "not an object",
    ],
)
def test_malformed_entries(tmp_path, bad):
    raw_safetensors(tmp_path / "x.safetensors", {"a": bad}, b"\0" * 8)
    with pytest.raises(CorruptCheckpointError) as err:
        open_checkpoint(tmp_path / "x.safetensors")
    one_line(err)


def test_index_names_missing_shard(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "gone.safetensors"}})
    )
    with pytest.raises(CheckpointNotFoundError) as err:
        open_checkpoint(tmp_path)
    assert "gone.safetensors" in one_line(err)


def test_index_disagrees_with_shard(tmp_path):
    safetensors.torch.save_file(
        {"a": torch.ones(1), "b": torch.ones(1)}, tmp_path / "s.safetensors"
    )
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "s.safetensors"}})
    )
    with pytest.raises(CorruptCheckpointError) as err:
        open_checkpoint(tmp_path)
    assert "'b'" in one_line(err)


def test_index_bad_json_and_path_escape(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text("{")
    with pytest.raises(CorruptCheckpointError):
        open_checkpoint(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "../x.safetensors"}})
    )
    with pytest.raises(CorruptCheckpointError) as err:
        open_checkpoint(tmp_path)
    assert "plain file name" in one_line(err)


def test_empty_directory(tmp_path):
    with pytest.raises(CheckpointNotFoundError) as err:
        open_checkpoint(tmp_path)
    one_line(err)


def test_unknown_extension(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"GGUF")
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(tmp_path / "x.gguf")
    assert "unknown checkpoint type" in one_line(err)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def test_unsafe_pickle_refused_unless_allowed(tmp_path):
    torch.save({"w": torch.ones(2), "hook": _Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError) as err:
        open_checkpoint(tmp_path / "evil.pt")
    assert "allow_unsafe_pickle" in one_line(err)


def test_allowed_pickle_still_needs_tensors(tmp_path):
    torch.save({"config": {"lr": 1}, "w": torch.ones(2), "name": "x"}, tmp_path / "mixed.pt")
    with pytest.raises(CorruptCheckpointError) as err:
        open_checkpoint(tmp_path / "mixed.pt")
    assert "not a tensor" in one_line(err)


def test_garbage_pt_file(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"this is not a pickle at all")
    with pytest.raises(CorruptCheckpointError) as err:
        open_checkpoint(tmp_path / "x.pt")
    one_line(err)


# -- writer -----------------------------------------------------------------------------------


def test_existing_output_refused_without_overwrite(tmp_path):
    save_safetensors({"w": torch.ones(2)}, tmp_path / "x.safetensors")
    with pytest.raises(CheckpointWriteError) as err:
        save_safetensors({"w": torch.zeros(2)}, tmp_path / "x.safetensors")
    assert "already exists" in one_line(err)
    save_safetensors({"w": torch.zeros(2)}, tmp_path / "x.safetensors", overwrite=True)
    assert open_checkpoint(tmp_path / "x.safetensors").get("w").sum() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]


def test_error_mid_write_leaves_nothing(tmp_path):
    specs = [TensorSpec("a", torch.float32, (4,)), TensorSpec("b", torch.float32, (4,))]
    with (
        pytest.raises(RuntimeError),
        SafetensorsWriter(tmp_path / "out", specs, max_shard_size=16) as w,
    ):
        w.write("a", torch.ones(4))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_incomplete_writer_refuses_to_commit(tmp_path):
    specs = [TensorSpec("a", torch.float32, (4,)), TensorSpec("b", torch.float32, (4,))]
    with (
        pytest.raises(CheckpointWriteError) as err,
        SafetensorsWriter(tmp_path / "x.safetensors", specs) as w,
    ):
        w.write("a", torch.ones(4))
    assert "never written" in one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_wrong_shape_or_undeclared_tensor(tmp_path):
    w = SafetensorsWriter(tmp_path / "x.safetensors", [TensorSpec("a", torch.float32, (4,))])
    with pytest.raises(CheckpointError, match=r"declared torch.float32 \[4\]"):
        w.write("a", torch.ones(5))
    with pytest.raises(CheckpointError, match="not declared"):
        w.write("zzz", torch.ones(4))
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_disk_full_detected_before_writing(tmp_path, monkeypatch):
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(CheckpointWriteError) as err:
        save_safetensors({"w": torch.ones(1000)}, tmp_path / "out", max_shard_size=100)
    assert "no space left" in one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_during_write(tmp_path, monkeypatch):
    real = os.pwrite
    calls = {"n": 0}

    def flaky(fd, data, offset):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", flaky)
    with pytest.raises(CheckpointWriteError) as err:
        save_safetensors({f"w{i}": torch.ones(10) for i in range(5)}, tmp_path / "x.safetensors")
    assert "no space left" in one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_not_enough_free_space_reported_up_front(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 0))
    with pytest.raises(CheckpointWriteError) as err:
        save_safetensors({"w": torch.ones(10)}, tmp_path / "x.safetensors")
    assert "free" in one_line(err)


def test_missing_output_folder_and_unstorable_dtype(tmp_path):
    with pytest.raises(CheckpointWriteError, match="does not exist"):
        save_safetensors({"w": torch.ones(1)}, tmp_path / "nope" / "x.safetensors")
    with pytest.raises(UnsupportedDtypeError):
        save_safetensors({"w": torch.ones(1, dtype=torch.complex128)}, tmp_path / "x.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_side_files_land_in_the_output_directory(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with SafetensorsWriter(tmp_path / "out", [TensorSpec("w", torch.float32, (1,))]) as w:
        w.write("w", torch.ones(1))
        w.add_file(tmp_path / "config.json")
    assert (tmp_path / "out" / "config.json").read_text() == "{}"


@pytest.mark.parametrize(
    "text,value", [("5GB", 5 * 10**9), ("512MiB", 512 * 2**20), (1000, 1000), ("1.5KB", 1500)]
)
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["lots", "-5GB", "0", "5XB"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)
