"""The CLI: both stages end to end on a tiny model directory, --json, and bad input as one
line on stderr."""

import json

import pytest
from perl_rlhf.cli import main
from perl_testlib import letter_pairs, tiny


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    model, tok = tiny()
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_train_reward_then_policy(tmp_path, model_dir, capsys):
    train = _jsonl(tmp_path / "train.jsonl", letter_pairs(16))
    prompts = _jsonl(tmp_path / "prompts.jsonl", [{"prompt": "say:"}, {"prompt": "hi:"}])
    rm = tmp_path / "rm"
    argv = ["train-reward", "--model", str(model_dir), "--train", str(train), "--eval", str(train)]
    assert main([*argv, "--out", str(rm), "--rank", "2", "--json", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and 0.0 <= summary["eval"]["accuracy"] <= 1.0
    assert (rm / "adapter_model.safetensors").exists() and (rm / "head.safetensors").exists()
    out = tmp_path / "pol"
    argv = [
        "train-policy",
        "--model",
        str(model_dir),
        "--reward",
        str(rm),
        "--prompts",
        str(prompts),
    ]
    argv += ["--out", str(out), "--steps", "2", "--batch-size", "2", "--max-new-tokens", "4"]
    argv += ["--rank", "2", "--plot", str(tmp_path / "rl.png"), "--json", "--no-progress"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and set(summary["last"]) >= {"reward", "kl", "entropy"}
    assert (out / "policy" / "adapter_config.json").exists() and (
        out / "value" / "head.safetensors"
    ).exists()
    assert len((out / "log.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "rl.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train-reward", "--model", "{tmp}/nope", "--train", "{data}", "--out", "{tmp}/o"], "not a model directory"),
        (["train-reward", "--model", "{model}", "--train", "{tmp}/missing.jsonl", "--out", "{tmp}/o"], "no such data file"),
        (["train-reward", "--model", "{model}", "--train", "{data}", "--out", "{tmp}/o", "--objective", "binary"], "no 'completion', 'label' column"),
        (["train-reward", "--model", "{model}", "--train", "{data}", "--out", "{tmp}/o", "--targets", "wq"], "not in the model"),
        (["train-policy", "--model", "{model}", "--reward", "{tmp}", "--prompts", "{data}", "--out", "{tmp}/o"], "has no head.safetensors"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(tmp_path, model_dir, capsys, argv, message):
    import re

    data = _jsonl(tmp_path / "d.jsonl", [{"chosen": "a", "rejected": "b"}])
    argv = [a.format(tmp=tmp_path, model=model_dir, data=data) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("perl-rlhf: error:") and "\n" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "o").exists()
