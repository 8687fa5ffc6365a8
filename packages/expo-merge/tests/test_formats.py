"""Output format conversion (``--output-format``) and the unsafe-pickle message's flag."""

from __future__ import annotations

import pytest
import torch
from expo_helpers import model_pair, write_checkpoint
from expo_merge import OutputError, extrapolate_checkpoints, extrapolate_state_dict
from expo_merge.cli import main

from tensor_utils.checkpoint import open_checkpoint


def _load(path):
    with open_checkpoint(path) as ckpt:
        return ckpt.kind, {n: ckpt.get(n).clone() for n in ckpt.tensors}


@pytest.mark.parametrize(
    "fmt_in, output_format, out_name, kind",
    [
        ("pt", "safetensors", "o.safetensors", "safetensors"),
        ("safetensors", "pt", "o.pt", "torch"),
        ("dir-sharded", "pt", "o.pt", "torch"),
        ("dir", "safetensors", "o.safetensors", "safetensors"),
        ("pt", "directory", "o", "directory"),
    ],
)
def test_convert_format(tmp_path, fmt_in, output_format, out_name, kind):
    sft, aligned = model_pair(4)
    s = write_checkpoint(sft, tmp_path / "sft", fmt_in)
    a = write_checkpoint(aligned, tmp_path / "aligned", fmt_in)
    report = extrapolate_checkpoints(s, a, 0.3, tmp_path / out_name, output_format=output_format)
    got_kind, got = _load(tmp_path / out_name)
    assert got_kind == kind
    expected = extrapolate_state_dict(sft, aligned, 0.3)
    assert set(got) <= set(expected) and len(got) >= len(expected) - 1  # a tie is stored once
    assert all(torch.equal(got[k], expected[k]) for k in got)
    assert report.outputs == [str(tmp_path / out_name)]


def test_cli_output_format_default_name_and_suffix_check(tmp_path, capsys):
    sft, aligned = model_pair(5)
    s = write_checkpoint(sft, tmp_path / "sft", "pt")
    a = write_checkpoint(aligned, tmp_path / "aligned", "pt")
    argv = [str(s), str(a), "--alpha", "0.3", "--output-format", "safetensors", "--no-progress"]
    assert main(argv) == 0
    assert _load(tmp_path / "aligned-expo-0.3.safetensors")[0] == "safetensors"
    assert main([*argv, "-o", str(tmp_path / "x.pt")]) == 1
    assert "--output-format is safetensors, so OUT must end in .safetensors" in (
        capsys.readouterr().err
    )
    with pytest.raises(OutputError, match="unknown output format"):
        extrapolate_checkpoints(s, a, 0.3, tmp_path / "y.gguf", output_format="gguf")


def test_unsafe_pickle_message_names_the_cli_flag(tmp_path, capsys):
    sft, aligned = model_pair(6)
    s = write_checkpoint(sft, tmp_path / "sft", "pt")
    a = write_checkpoint(aligned, tmp_path / "aligned", "pt")
    torch.save({"w": torch.zeros(2), "evil": print}, s)
    assert main([str(s), str(a), "--alpha", "0.3"]) == 1
    err = capsys.readouterr().err
    assert "refusing to unpickle" in err and "--allow-unsafe-pickle" in err
    assert "allow_unsafe_pickle=True" not in err
