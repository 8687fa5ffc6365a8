"""``extrapolate_checkpoints``: every input layout, ALIGNED's layout/metadata/side files kept,
one read pass for several alphas, and every bad input refused with nothing left behind."""

from __future__ import annotations

import json
import struct
from typing import Any

import expo_merge.compute as compute_mod
import pytest
import torch
from expo_helpers import FORMATS, listing, model_pair, write_checkpoint
from expo_merge import (
    ExpoMergeError,
    MismatchError,
    OutputError,
    QuantizedCheckpointError,
    VocabSizeMismatchError,
    extrapolate_checkpoints,
    extrapolate_state_dict,
)

from tensor_utils.checkpoint import Checkpoint, CheckpointError, ChunkReader, open_checkpoint
from tensor_utils_dev.testing import assert_matches_float64


def load(path):
    with open_checkpoint(path) as ckpt:
        return {n: ckpt.get(n).clone() for n in ckpt.tensors}, ckpt


def make(tmp_path, fmt_sft, fmt_al, **kw):
    sft, aligned = model_pair(**kw)
    s = write_checkpoint(sft, tmp_path / "sft", fmt_sft, label="sft")
    a = write_checkpoint(aligned, tmp_path / "aligned", fmt_al, label="aligned")
    return s, a, sft, aligned


@pytest.mark.parametrize("fmt", FORMATS)
def test_roundtrip_every_format(tmp_path, fmt):
    s, a, sft, aligned = make(tmp_path, fmt, fmt)
    out = tmp_path / ("out" + ({"safetensors": ".safetensors", "pt": ".pt"}.get(fmt, "")))
    report = extrapolate_checkpoints(s, a, 0.4, out)
    expected = extrapolate_state_dict(sft, aligned, 0.4)
    got, ckpt = load(out)
    with open_checkpoint(a) as a_ckpt:
        a_names = set(a_ckpt.keys())
    assert set(got) == a_names
    for name in got:
        assert torch.equal(got[name], expected[name]), name
    assert report.tensors_extrapolated == sum(1 for n in a_names if aligned[n].is_floating_point())
    if fmt in ("dir", "dir-sharded", "bin-dir"):
        for side in (
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
        ):
            assert json.loads((out / side).read_text())["label"] == "aligned", side
    if fmt == "dir-sharded":
        with open_checkpoint(a) as a_ckpt:
            assert ckpt.shard_of == a_ckpt.shard_of  # same shard layout and names
        assert (out / "model.safetensors.index.json").exists()
    if fmt == "bin-dir":
        assert (out / "model.safetensors").exists()


def test_cross_format_pair_and_metadata(tmp_path):
    sft, aligned = model_pair(5)
    s = write_checkpoint(sft, tmp_path / "sft", "pt")
    a = tmp_path / "aligned.safetensors"
    from tensor_utils.checkpoint import save_safetensors

    save_safetensors(aligned, a, metadata={"producer": "dpo-trainer"})
    extrapolate_checkpoints(s, a, 0.3, tmp_path / "o.safetensors")
    got, ckpt = load(tmp_path / "o.safetensors")
    assert ckpt.metadata["producer"] == "dpo-trainer"
    assert ckpt.metadata["expo_merge.alpha"] == "0.3"
    expected = extrapolate_state_dict(sft, aligned, 0.3)
    assert all(torch.equal(got[k], expected[k]) for k in got)


def test_alpha_zero_bit_for_bit_and_minus_one_sft(tmp_path):
    s, a, sft, aligned = make(tmp_path, "dir-sharded", "dir-sharded")
    extrapolate_checkpoints(s, a, [0.0, -1.0], tmp_path / "o")
    zero, _ = load(tmp_path / "o" / "alpha-0")
    back, _ = load(tmp_path / "o" / "alpha--1")
    for k in zero:
        assert torch.equal(zero[k].view(torch.uint8), aligned[k].view(torch.uint8))
        assert torch.equal(back[k], sft[k])  # bf16 inputs: a - (a - s) is exact in fp32


def test_tied_pt_stays_tied(tmp_path):
    s, a, sft, aligned = make(tmp_path, "pt", "pt", tied=True)
    report = extrapolate_checkpoints(s, a, 0.3, tmp_path / "o.pt")
    out = torch.load(tmp_path / "o.pt", weights_only=True)
    assert out["lm_head.weight"].data_ptr() == out["model.embed_tokens.weight"].data_ptr()
    assert report.tied == {"lm_head.weight": "model.embed_tokens.weight"}
    expected = extrapolate_state_dict(sft, aligned, 0.3)
    assert torch.equal(out["lm_head.weight"], expected["lm_head.weight"])


def test_tied_pt_against_untied_safetensors(tmp_path):
    # HF saves a tied model without lm_head; the .pt side still lists it as an alias: fine.
    sft, aligned = model_pair(6, tied=True)
    s = write_checkpoint(sft, tmp_path / "sft", "pt")
    a = write_checkpoint(aligned, tmp_path / "aligned", "dir")
    extrapolate_checkpoints(s, a, 0.3, tmp_path / "o")
    got, _ = load(tmp_path / "o")
    assert "lm_head.weight" not in got


def test_several_alphas_read_each_tensor_once(tmp_path, monkeypatch):
    s, a, sft, aligned = make(tmp_path, "dir-sharded", "dir")
    reads = []
    original = ChunkReader.read

    def read(self, name, begin, count, buf):
        reads.append((self.ckpt.path.name, name, begin, count))
        return original(self, name, begin, count, buf)

    monkeypatch.setattr(ChunkReader, "read", read)
    report = extrapolate_checkpoints(
        s, a, [0.1, 0.3, 2.5], tmp_path / "sweep", dtype="fp32", chunk_elements=1000
    )
    floats = [k for k, v in aligned.items() if v.is_floating_point()]
    # Every element of ALIGNED read once, of SFT once per float tensor, whatever the alphas.
    assert len(set(reads)) == len(reads)
    for side, names in (("aligned", list(aligned)), ("sft", floats)):
        for name in names:
            got = sorted((b, n) for f, k, b, n in reads if f == side and k == name)
            assert sum(n for _, n in got) == aligned[name].numel()
            assert all(b == i * 1000 for i, (b, _) in enumerate(got))
    assert {f for f, *_ in reads} == {"aligned", "sft"}
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == [
        "alpha-0.1",
        "alpha-0.3",
        "alpha-2.5",
    ]
    for alpha in (0.1, 0.3, 2.5):
        got, _ = load(tmp_path / "sweep" / f"alpha-{alpha:g}")
        expected = extrapolate_state_dict(sft, aligned, alpha, dtype="fp32")
        assert all(torch.equal(got[k], expected[k]) for k in got)
    assert [st.alpha for st in report.stats] == [0.1, 0.3, 2.5]


def test_report_stats_realized_vs_intended(tmp_path):
    # ~1-ulp deltas in bf16: small alphas are mostly rounded away, and the report says so.
    s, a, *_ = make(tmp_path, "safetensors", "safetensors", sigma=2e-4)
    report = extrapolate_checkpoints(s, a, [0.1, 3.0], tmp_path / "o")
    small, big = report.stats
    assert small.fraction_changed < big.fraction_changed
    assert small.swallowed_fraction > 0.5 and small.warning("bf16")
    assert big.step_ratio == pytest.approx(1.0, abs=0.1)
    d: dict[str, Any] = report.to_dict()
    assert d["bytes_read"] > 0 and d["per_alpha"][0]["realized_over_intended"] < 0.9
    fp32 = extrapolate_checkpoints(s, a, 0.1, tmp_path / "o32.safetensors", dtype="fp32")
    assert fp32.stats[0].step_ratio == pytest.approx(1.0, rel=1e-3) and not fp32.warnings


def test_include_exclude_copy_from_aligned(tmp_path):
    s, a, _, aligned = make(tmp_path, "dir", "dir")
    report = extrapolate_checkpoints(s, a, 0.5, tmp_path / "o", exclude=["*embed*", "lm_head.*"])
    got, _ = load(tmp_path / "o")
    assert torch.equal(got["model.embed_tokens.weight"], aligned["model.embed_tokens.weight"])
    assert not torch.equal(got["model.norm.weight"], aligned["model.norm.weight"])
    assert report.tensors_copied == {"excluded": 2, "non-float": 1}


def test_shard_size_reshards(tmp_path):
    s, a, *_ = make(tmp_path, "dir", "dir")
    report = extrapolate_checkpoints(s, a, 0.5, tmp_path / "o", shard_size="1kB")
    assert report.shards > 1 and (tmp_path / "o" / "model.safetensors.index.json").exists()


def test_dry_run_reads_no_tensor_data_and_writes_nothing(tmp_path, monkeypatch):
    s, a, *_ = make(tmp_path, "dir-sharded", "pt")
    before = listing(tmp_path)
    original = Checkpoint.get

    def get(self, name):
        # .pt tensors are memory-mapped: looking at them (for ties) reads no data; safetensors
        # tensors would be read from disk.
        if self.tensors[name].start is not None:
            pytest.fail("dry run read tensor data")
        return original(self, name)

    monkeypatch.setattr(Checkpoint, "get", get)
    monkeypatch.setattr(
        "tensor_utils.checkpoint.reader.read_tensor", lambda *a: pytest.fail("read")
    )
    report = extrapolate_checkpoints(s, a, [0.3, 0.5], tmp_path / "o", dry_run=True)
    assert report.dry_run and report.bytes_written > 0 and listing(tmp_path) == before


def test_existing_output_needs_force(tmp_path):
    s, a, *_ = make(tmp_path, "safetensors", "safetensors")
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="already exists"):
        extrapolate_checkpoints(s, a, 0.3, out)
    assert out.read_bytes() == b"keep me"
    extrapolate_checkpoints(s, a, 0.3, out, force=True)
    assert len(load(out)[0]) > 0


def test_output_must_match_aligned_kind(tmp_path):
    s, a, *_ = make(tmp_path, "safetensors", "safetensors")
    with pytest.raises(OutputError, match=r"must end in \.safetensors"):
        extrapolate_checkpoints(s, a, 0.3, tmp_path / "o.pt")
    with pytest.raises(OutputError, match="several alphas"):
        extrapolate_checkpoints(s, a, [0.1, 0.2], tmp_path / "o.safetensors")


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])


def _bad_cases(tmp_path):
    """(name, sft_path, aligned_path, expected error type, message fragment)."""
    cases = []

    def pair(name, fmt_s="dir", fmt_a="dir", **kw):
        root = tmp_path / name
        root.mkdir()
        s, a, sft, aligned = make(root, fmt_s, fmt_a, **kw)
        return root, s, a, sft, aligned

    root, s, a, *_ = pair("truncated", "dir-sharded", "dir-sharded")
    _truncate(sorted(a.glob("*.safetensors"))[-1])
    cases.append(("truncated", s, a, CheckpointError, "truncated"))

    root, s, a, *_ = pair("missing_shard", "dir-sharded", "dir-sharded")
    sorted(s.glob("*.safetensors"))[0].unlink()
    cases.append(("missing_shard", s, a, CheckpointError, "missing"))

    root, s, a, sft, aligned = pair("unsafe", "pt", "pt")
    torch.save({"w": torch.zeros(2), "evil": print}, s)
    cases.append(("unsafe", s, a, CheckpointError, "refusing to unpickle"))

    root, s, a, sft, aligned = pair("missing_name", "safetensors", "safetensors")
    from tensor_utils.checkpoint import save_safetensors

    s.unlink()
    save_safetensors({k: v for k, v in sft.items() if k != "model.norm.weight"}, s)
    cases.append(("missing_name", s, a, MismatchError, "missing from SFT"))

    root, s, a, sft, aligned = pair("extra_name", "safetensors", "safetensors")
    s.unlink()
    save_safetensors({**sft, "extra.bias": torch.zeros(3)}, s)
    cases.append(("extra_name", s, a, MismatchError, "not in ALIGNED"))

    root, s, a, sft, aligned = pair("dtype", "safetensors", "safetensors")
    s.unlink()
    save_safetensors({k: v.float() if v.is_floating_point() else v for k, v in sft.items()}, s)
    cases.append(("dtype", s, a, MismatchError, "dtype mismatch"))

    root, s, a, sft, aligned = pair("shape", "pt", "pt")
    torch.save({**sft, "model.norm.weight": torch.zeros(5, dtype=torch.bfloat16)}, s)
    cases.append(("shape", s, a, MismatchError, "shape mismatch"))

    root = tmp_path / "vocab"
    root.mkdir()
    sft, _ = model_pair(0, vocab=49)
    _, aligned = model_pair(0, vocab=50)
    s = write_checkpoint(sft, root / "sft", "dir")
    a = write_checkpoint(aligned, root / "aligned", "dir")
    cases.append(("vocab", s, a, VocabSizeMismatchError, "SFT has 49 tokens, ALIGNED has 50"))

    root, s, a, *_ = pair("quantized")
    cfg = json.loads((a / "config.json").read_text())
    (a / "config.json").write_text(
        json.dumps({**cfg, "quantization_config": {"quant_method": "gptq"}})
    )
    cases.append(("quantized", s, a, QuantizedCheckpointError, "gptq"))

    root = tmp_path / "gguf"
    root.mkdir()
    (root / "m.gguf").write_bytes(b"GGUF" + b"\0" * 20)
    cases.append(("gguf", root / "m.gguf", root / "m.gguf", QuantizedCheckpointError, "GGUF"))

    root, s, a, *_ = pair("not_found")
    cases.append(("not_found", root / "nope", a, CheckpointError, "no such file"))

    root, s, a, *_ = pair("garbage", "safetensors", "safetensors")
    a.write_bytes(struct.pack("<Q", 10) + b"not json!!" + b"\0" * 8)
    cases.append(("garbage", s, a, CheckpointError, "not valid JSON"))
    return cases


def test_bad_inputs_clear_one_line_errors_no_output(tmp_path):
    for name, s, a, err, text in _bad_cases(tmp_path):
        out = tmp_path / f"{name}-out"
        before = listing(tmp_path)
        with pytest.raises(err, match=text) as info:
            extrapolate_checkpoints(s, a, 0.3, out if a.is_dir() else out.with_suffix(a.suffix))
        assert "\n" not in str(info.value), name
        assert listing(tmp_path) == before, f"{name}: left files behind"


def test_full_disk_refused_up_front(tmp_path, monkeypatch):
    s, a, *_ = make(tmp_path, "dir", "dir")
    before = listing(tmp_path)
    monkeypatch.setattr(
        "expo_merge.merge.shutil.disk_usage", lambda p: type("U", (), {"free": 10})()
    )
    with pytest.raises(OutputError, match=r"only 0\.00 GB are free"):
        extrapolate_checkpoints(s, a, 0.3, tmp_path / "o")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("fmt", ["dir-sharded", "pt"])
def test_failure_mid_run_leaves_nothing(tmp_path, monkeypatch, fmt):
    s, a, *_ = make(tmp_path, fmt, fmt)
    before = listing(tmp_path)
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return original(*args, **kwargs)

    # every output value of both engines goes through compute_chunk
    original = compute_mod.compute_chunk
    monkeypatch.setattr(compute_mod, "compute_chunk", failing)
    out = tmp_path / ("o.pt" if fmt == "pt" else "o")
    with pytest.raises(OSError):
        extrapolate_checkpoints(s, a, [0.3] if fmt == "pt" else [0.3, 0.6], out)
    assert listing(tmp_path) == before


def test_empty_checkpoint_and_bad_alpha(tmp_path):
    # (tensor-utils' writer cannot write a checkpoint with no tensors: build the file by hand)
    header = b"{}" + b" " * 6
    (tmp_path / "e.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(ExpoMergeError, match="holds no tensors"):
        extrapolate_checkpoints(
            tmp_path / "e.safetensors", tmp_path / "e.safetensors", 0.3, tmp_path / "o.safetensors"
        )
    with pytest.raises(ExpoMergeError, match="given twice"):
        extrapolate_checkpoints(
            tmp_path / "e.safetensors", tmp_path / "e.safetensors", [0.3, 0.3], tmp_path / "o"
        )


@pytest.mark.triton
def test_streaming_through_the_kernel(tmp_path):
    # The engine's chunked loop driving the Triton kernel (interpreter on CPU, or CUDA).
    s, a, sft, aligned = make(tmp_path, "dir-sharded", "dir-sharded", dtype=torch.float16)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    extrapolate_checkpoints(
        s, a, 0.7, tmp_path / "o", dtype="fp32", backend="triton", chunk_elements=257, device=device
    )
    got, _ = load(tmp_path / "o")
    expected = extrapolate_state_dict(sft, aligned, 0.7, dtype="fp32", backend="reference")
    for k in got:
        torch.testing.assert_close(got[k], expected[k], rtol=2**-23, atol=0)


@pytest.mark.gpu
def test_device_cuda_matches_cpu(tmp_path):
    s, a, sft, aligned = make(tmp_path, "dir-sharded", "dir-sharded", vocab=3001, hidden=64)
    report = extrapolate_checkpoints(s, a, [0.3, 2.0], tmp_path / "o", device="cuda")
    assert report.device.startswith("cuda")
    for alpha in (0.3, 2.0):
        got, _ = load(tmp_path / "o" / f"alpha-{alpha:g}")
        expected = extrapolate_state_dict(sft, aligned, alpha, backend="reference")
        differing = compared = 0
        for k in got:
            if got[k].is_floating_point():
                # The kernel may fuse the multiply-add: every element is within one rounding of
                # fp64, and equal to the CPU result except at rare rounding ties (counted over the
                # whole checkpoint: one tie in a 64-element bias is 1.6% of that tensor).
                assert_matches_float64(
                    got[k], lambda s_, a_, al=alpha: a_ + al * (a_ - s_), sft[k], aligned[k]
                )
                differing += int((got[k] != expected[k]).sum())
                compared += got[k].numel()
            else:
                assert torch.equal(got[k], expected[k])
        assert differing / compared < 1e-2


@pytest.mark.parametrize("fmt", ["pt", "dir-sharded"])
def test_small_chunks_many_workers_match_state_dict_api(tmp_path, fmt):
    # Tensors split into many chunks across 3 threads (ordered writes, tied names, int buffers).
    s, a, sft, aligned = make(tmp_path, fmt, fmt, tied=True)
    out = tmp_path / ("o.pt" if fmt == "pt" else "o")
    report = extrapolate_checkpoints(
        s, a, [0.0, 0.7], out.parent / "sw", chunk_elements=97, workers=3
    )
    expected = extrapolate_state_dict(sft, aligned, 0.7)
    for alpha, exp in ((0.0, aligned), (0.7, expected)):
        name = f"alpha-{alpha:g}" + (".pt" if fmt == "pt" else "")
        got, _ = load(out.parent / "sw" / name)
        for k in got:
            assert torch.equal(got[k], exp[k]), k
    assert report.stats[1].total_elements == report.elements_extrapolated
