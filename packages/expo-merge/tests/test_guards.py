"""Requests that would silently do nothing or write garbage are warned about or refused:
fp16/bf16 overflow, identical inputs, filters that match nothing, negative counts."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from expo_helpers import listing, model_pair, write_checkpoint
from expo_merge import (
    ExpoMergeError,
    PatternError,
    StepOverflowError,
    extrapolate_checkpoints,
    extrapolate_state_dict,
)
from expo_merge.cli import main

from tensor_utils.checkpoint import open_checkpoint, save_safetensors


def _overflowing_pair(tmp_path, dtype=torch.float16):
    # alpha=1: 60000 + (60000 - (-60000)) = 180000 > 65504 (fp16's largest finite value)
    big = torch.finfo(dtype).max * 0.9
    sft = {"ok": torch.zeros(4, dtype=dtype), "hot": torch.tensor([-big, 0.0, 1.0], dtype=dtype)}
    aligned = {"ok": torch.ones(4, dtype=dtype), "hot": torch.tensor([big, 0.0, 1.0], dtype=dtype)}
    s, a = tmp_path / "s.safetensors", tmp_path / "a.safetensors"
    save_safetensors(sft, s)
    save_safetensors(aligned, a)
    return s, a, sft, aligned


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_overflow_refused_with_one_line_naming_the_tensor(tmp_path, capsys, dtype):
    s, a, sft, aligned = _overflowing_pair(tmp_path, dtype)
    before = listing(tmp_path)
    assert main([str(s), str(a), "--alpha", "1", "-o", str(tmp_path / "o.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("expo-merge: error: tensor 'hot': 1 element(s) overflow")
    assert err.count("\n") == 1 and "--allow-overflow" in err
    assert listing(tmp_path) == before
    with pytest.raises(StepOverflowError, match="'hot'"):
        extrapolate_state_dict(sft, aligned, 1.0)


def test_overflow_allowed_is_counted_and_warned(tmp_path, capsys):
    s, a, sft, aligned = _overflowing_pair(tmp_path)
    out = tmp_path / "o.safetensors"
    argv = [str(s), str(a), "--alpha", "1", "-o", str(out), "--allow-overflow", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    (per_alpha,) = report["per_alpha"]
    assert per_alpha["elements_overflowed"] == 1
    assert per_alpha["realized_over_intended"] is None  # not "nan"
    assert len(report["warnings"]) == 1 and "1 element(s) overflowed fp16" in report["warnings"][0]
    assert "'hot'" in report["warnings"][0] and "rounding" not in report["warnings"][0]
    with open_checkpoint(out) as ckpt:
        assert torch.isinf(ckpt.get("hot")[0]) and torch.equal(ckpt.get("ok"), 2 * aligned["ok"])
    got = extrapolate_state_dict(sft, aligned, 1.0, allow_overflow=True)
    assert torch.isinf(got["hot"][0])


def test_identical_inputs_warn(tmp_path, capsys):
    _, aligned = model_pair(1)
    a = write_checkpoint(aligned, tmp_path / "aligned", "pt")
    assert main([str(a), str(a), "--alpha", "0.3", "-o", str(tmp_path / "o.pt")]) == 0
    text = capsys.readouterr().out
    assert "warning: SFT and ALIGNED are identical" in text
    report = extrapolate_checkpoints(a, a, 0.3, tmp_path / "o2.pt")
    assert report.identical_inputs and "identical" in report.warnings[0]
    s = write_checkpoint(model_pair(1)[0], tmp_path / "sft", "pt")
    assert not extrapolate_checkpoints(s, a, 0.3, tmp_path / "o3.pt").identical_inputs


@pytest.mark.parametrize(
    "flag, pattern", [("--include", "model.layer.*"), ("--exclude", "lm-head*")]
)
def test_filter_matching_nothing_is_refused(tmp_path, capsys, flag, pattern):
    sft, aligned = model_pair(2)
    s = write_checkpoint(sft, tmp_path / "sft", "pt")
    a = write_checkpoint(aligned, tmp_path / "aligned", "pt")
    before = listing(tmp_path)
    assert main([str(s), str(a), "--alpha", "0.3", flag, pattern]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"expo-merge: error: {flag} {pattern!r} matches no")
    assert err.count("\n") == 1 and listing(tmp_path) == before
    with pytest.raises(PatternError):
        filters: dict[str, Any] = {flag[2:]: [pattern]}
        extrapolate_state_dict(sft, aligned, 0.3, **filters)
    # a pattern that matches only an int buffer extrapolates nothing either
    with pytest.raises(PatternError, match="no float tensor"):
        extrapolate_state_dict(sft, aligned, 0.3, include=["*position_ids"])


@pytest.mark.parametrize(
    "argv_tail, fragment",
    [
        (["--threads", "-2"], "--threads must be at least 1, got -2"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--prefetch-mb", "-5"], "--prefetch-mb must be at least 0, got -5"),
    ],
)
def test_negative_counts_are_usage_errors(tmp_path, capsys, argv_tail, fragment):
    with pytest.raises(SystemExit) as info:
        main(["s.pt", "a.pt", "--alpha", "0.3", *argv_tail])
    assert info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_api_refuses_zero_workers(tmp_path):
    sft, aligned = model_pair(3)
    s = write_checkpoint(sft, tmp_path / "sft", "pt")
    a = write_checkpoint(aligned, tmp_path / "aligned", "pt")
    with pytest.raises(ExpoMergeError, match="at least 1"):
        extrapolate_checkpoints(s, a, 0.3, tmp_path / "o.pt", workers=0)
