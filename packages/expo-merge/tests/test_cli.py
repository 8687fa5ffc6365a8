"""The ``expo-merge`` command: outputs, --json, --dry-run, and one-line errors with exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from expo_helpers import listing, model_pair, write_checkpoint
from expo_merge import extrapolate_state_dict
from expo_merge.cli import main


@pytest.fixture
def pair(tmp_path):
    sft, aligned = model_pair(7)
    s = write_checkpoint(sft, tmp_path / "sft", "pt")
    a = write_checkpoint(aligned, tmp_path / "aligned", "pt")
    return s, a, sft, aligned


def test_issue_example_default_output_name(pair, capsys):
    s, a, sft, aligned = pair
    assert main([str(s), str(a), "--alpha", "0.3", "--no-progress"]) == 0
    out = a.parent / "aligned-expo-0.3.pt"
    got = torch.load(out, weights_only=True)
    expected = extrapolate_state_dict(sft, aligned, 0.3)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    text = capsys.readouterr().out
    assert "alpha=0.3" in text and "elements changed" in text and "realized/intended" in text


def test_json_report_and_several_alphas(pair, tmp_path, capsys):
    s, a, *_ = pair
    rc = main(
        [
            str(s),
            str(a),
            "--alpha",
            "0.1,0.5",
            "--alpha=-2",
            "-o",
            str(tmp_path / "sweep"),
            "--json",
            "--dtype",
            "fp32",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["alphas"] == [0.1, 0.5, -2.0] and len(report["outputs"]) == 3
    assert {p["alpha"] for p in report["per_alpha"]} == {0.1, 0.5, -2.0}
    assert all(0 <= p["fraction_changed"] <= 1 for p in report["per_alpha"])
    assert report["bytes_read"] > 0 and report["bytes_written"] > 0
    assert sorted(os.listdir(tmp_path / "sweep")) == ["alpha--2.pt", "alpha-0.1.pt", "alpha-0.5.pt"]


def test_dry_run_writes_nothing(pair, tmp_path, capsys):
    s, a, *_ = pair
    before = listing(tmp_path)
    assert main([str(s), str(a), "--alpha", "0.3", "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] and report["tensors"] == 7
    assert listing(tmp_path) == before


@pytest.mark.parametrize(
    "argv_tail, fragment",
    [
        (["--alpha", "0.3", "-o", "{tmp}/o.safetensors"], "must end in one of"),
        (["--alpha", "0.3", "--shard-size", "1GB"], "directory outputs only"),
        (["--alpha", "0.3", "--device", "tpu"], "unsupported device"),
        (["--alpha", "inf"], "finite"),
    ],
)
def test_errors_one_line_exit_1(pair, tmp_path, capsys, argv_tail, fragment):
    s, a, *_ = pair
    argv = [str(s), str(a), *[x.replace("{tmp}", str(tmp_path)) for x in argv_tail]]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("expo-merge: error: ") and fragment in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_existing_output_refused_then_forced(pair, tmp_path, capsys):
    s, a, *_ = pair
    out = tmp_path / "o.pt"
    out.write_bytes(b"x")
    assert main([str(s), str(a), "-a", "0.3", "-o", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"x"
    assert main([str(s), str(a), "-a", "0.3", "-o", str(out), "--force", "--no-progress"]) == 0
    assert "lm_head.weight" in torch.load(out, weights_only=True)


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["only-one-arg"])
    assert info.value.code == 2


def test_subprocess_entry_point_no_traceback(pair, tmp_path):
    s, a, *_ = pair
    torch.save({"w": torch.zeros(2), "evil": print}, s)  # an unsafe pickle
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "expo_merge.cli",
            str(s),
            str(a),
            "--alpha",
            "0.3",
            "-o",
            str(tmp_path / "o.pt"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("expo-merge: error: ") and "refusing to unpickle" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "o.pt").exists()
