"""The CLI on a tiny saved model: calibrate and evaluate with --json, and one-line errors."""

from __future__ import annotations

import json

import pytest
from dejavu_sparse.cli import main
from dejavu_sparse.text import stdlib_text
from helpers import tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        [stdlib_text()[:20000]], trainers.BpeTrainer(vocab_size=97, special_tokens=["<unk>"])
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(path)
    tiny_model("llama", vocab_size=max(97, tok.get_vocab_size())).save_pretrained(path)
    return path


def test_calibrate_then_evaluate_json(model_dir, tmp_path, capsys):
    out = tmp_path / "calib"
    args = [
        "--tokens",
        "512",
        "--seq-len",
        "64",
        "--rank",
        "16",
        "--epochs",
        "2",
        "--quiet",
        "--json",
    ]
    assert main(["calibrate", str(model_dir), str(out), *args]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tokens"] == 512 and (out / "manifest.json").is_file()
    assert main(["evaluate", str(model_dir), "--calibration", str(out), "--mode", "teal",
                 "--sparsity", "0.4", "--tokens", "256", "--seq-len", "64", "--quiet", "--json"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert result["ppl_sparse"] > 0 and len(result["achieved_per_layer"]) == 3
    assert abs(result["achieved"]["layer"] - 0.4) < 0.1


@pytest.mark.parametrize(
    "argv,message",
    [
        (["calibrate", "/nonexistent", "/tmp/x"], "not a transformers model directory"),
        (["evaluate", "{model}", "--calibration", "/nonexistent"], "no manifest.json"),
        (["evaluate", "{model}", "--calibration", "{model}", "--sparsity", "1.2"], "[0, 1)"),
        (["evaluate", "{model}", "--calibration", "{model}", "--quiet"], "no manifest.json"),
    ],
)
def test_errors_are_one_line(model_dir, argv, message, capsys):
    argv = [a.format(model=model_dir) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_evaluate_block_size(model_dir, tmp_path, capsys):
    """TEAL's block option through the CLI; a block size the calibration lacks is one line."""
    out = tmp_path / "calib"
    assert main(["calibrate", str(model_dir), str(out), "--tokens", "512", "--seq-len", "64",
                 "--rank", "8", "--epochs", "1", "--no-greedy", "--quiet", "--json"]) == 0  # fmt: skip
    capsys.readouterr()
    base = ["evaluate", str(model_dir), "--calibration", str(out), "--mode", "teal",
            "--sparsity", "0.3", "--tokens", "256", "--seq-len", "64", "--quiet", "--json"]  # fmt: skip
    assert main([*base, "--block-size", "16"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["block_size"] == 16 and result["ppl_sparse"] > 0
    assert main([*base, "--block-size", "12"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no TEAL thresholds for block_size=12" in err and len(err.splitlines()) == 1
