"""Reference scoring: alignment, shards + manifest, resume, mismatch detection, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from rho_select import ManifestMismatchError, OnlineReference, ReferenceScores, score_corpus
from rho_select.cli import main
from rho_select.errors import RhoSelectError, ScoresFormatError
from rho_select.packing import pack_documents, tokenize_and_pack
from rho_testlib import TEXT, tiny_llama, tiny_tokenizer

from tensor_utils_dev.testing import assert_close

DOCS = [TEXT, TEXT.upper(), "tokens " * 30, TEXT[::-1]]


@pytest.fixture(scope="module")
def setup():
    tokenizer = tiny_tokenizer()
    model = tiny_llama(len(tokenizer))
    return tokenizer, model


def test_online_reference_equals_full_logits(setup):
    tokenizer, model = setup
    corpus = tokenize_and_pack(tokenizer, DOCS, seq_len=16)
    ids = corpus.input_ids[:3]
    scores = OnlineReference(model)(ids)
    with torch.no_grad():
        logits = model(ids).logits
    expected = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    assert torch.all(scores[:, 0] == 0)
    assert_close(scores[:, 1:], expected, atol=1e-4, rtol=1e-4)


def test_packing_records_how_it_packed():
    corpus = pack_documents([[1, 2, 3], [4, 5]], seq_len=3, separator=0)
    assert corpus.input_ids.tolist() == [[1, 2, 3], [0, 4, 5]]
    assert corpus.packing["dropped_tail_tokens"] == 1
    with pytest.raises(RhoSelectError, match="do not fill one sequence"):
        pack_documents([[1]], seq_len=8, separator=None)


def test_score_corpus_writes_shards_and_resumes(setup, tmp_path, monkeypatch):
    tokenizer, model = setup
    corpus = tokenize_and_pack(tokenizer, DOCS * 3, seq_len=16)
    out = tmp_path / "scores"
    report = score_corpus(model, corpus, out, tokenizer=tokenizer, shard_size=4, progress=False)
    shards = sorted(out.glob("scores-*.safetensors"))
    assert report["shards"] == len(shards) == -(-len(corpus) // 4)
    assert not list(out.glob("*.tmp"))
    scores = ReferenceScores.open(out)
    scores.check(tokenizer=tokenizer, corpus=corpus, model=model)
    ids, losses = scores.load()
    assert torch.equal(ids, corpus.input_ids)
    expected = OnlineReference(model)(corpus.input_ids)
    assert_close(losses, expected.half().float())
    row = scores.dataset()[5]
    assert torch.equal(row["input_ids"], corpus.input_ids[5])
    assert torch.equal(row["labels"], row["input_ids"])
    # resume: delete one shard and rerun: only that one is recomputed
    shards[1].unlink()
    again = score_corpus(model, corpus, out, tokenizer=tokenizer, shard_size=4, progress=False)
    assert again["skipped_shards"] == len(shards) - 1
    assert torch.equal(ReferenceScores.open(out).load()[1], losses)


def test_interrupted_scoring_leaves_no_partial_shard(setup, tmp_path, monkeypatch):
    tokenizer, model = setup
    corpus = tokenize_and_pack(tokenizer, DOCS * 3, seq_len=16)
    calls = {"n": 0}
    original = OnlineReference.__call__

    def interrupt_on_third_batch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(OnlineReference, "__call__", interrupt_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        score_corpus(model, corpus, tmp_path, shard_size=2, batch_size=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json",
        "scores-00000.safetensors",
    ]
    with pytest.raises(ScoresFormatError, match="did not finish"):
        ReferenceScores.open(tmp_path)
    monkeypatch.setattr(OnlineReference, "__call__", original)
    report = score_corpus(model, corpus, tmp_path, shard_size=2, batch_size=1, progress=False)
    assert report["skipped_shards"] == 1
    ReferenceScores.open(tmp_path).check(corpus=corpus)


def test_mismatches_are_one_line(setup, tmp_path):
    tokenizer, model = setup
    corpus = tokenize_and_pack(tokenizer, DOCS * 2, seq_len=16)
    score_corpus(model, corpus, tmp_path, tokenizer=tokenizer, progress=False)
    scores = ReferenceScores.open(tmp_path)
    other_tokenizer = tiny_tokenizer(vocab_size=400)
    cases = [
        (dict(tokenizer=other_tokenizer), "was scored with tokenizer"),
        (dict(seq_len=32), "scored at sequence length 16, the data has 32"),
        (dict(corpus=tokenize_and_pack(tokenizer, DOCS * 2, seq_len=12)), "sequence length 16"),
        (
            dict(packing={**corpus.packing, "separator": None}),
            "another packing (differs in: separator)",
        ),
        (dict(corpus=type(corpus)(corpus.input_ids.flip(0), corpus.packing)), "other tokens"),
        (dict(model=tiny_llama(len(tokenizer), seed=1)), "scored by another model"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ManifestMismatchError) as e:
            scores.check(**kwargs)
        assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ManifestMismatchError, match="holds scores of another run"):
        score_corpus(
            model, tokenize_and_pack(tokenizer, DOCS * 2, seq_len=12), tmp_path, progress=False
        )


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "rho_select.cli", *args], capture_output=True, text=True, cwd=cwd
    )


def test_cli_scores_with_json_and_reports_bad_input_in_one_line(setup, tmp_path, capsys):
    tokenizer, model = setup
    model_dir = tmp_path / "ref"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = tmp_path / "corpus.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS * 2))
    out = tmp_path / "scores"
    args = ["score", "--model", str(model_dir), "--data", str(data), "--out", str(out)]
    done = _cli(*args, "--seq-len", "16", "--json", "--no-progress", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["seq_len"] == 16 and report["tokens"] == report["sequences"] * 16
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["complete"] and info["tokenizer"]["vocab_size"] == len(tokenizer.get_vocab())
    bad = [
        (
            ["--seq-len", "12"],
            "holds scores of another run (differs in: seq_len, packing, sequences, tokens_sha256)",
        ),
        (["--seq-len", "16", "--data", str(tmp_path / "missing.txt")], "no such file"),
        (["--seq-len", "1"], "--seq-len must be at least 2"),
    ]
    for extra, message in bad:  # in-process: the same main(), without another torch import
        assert main([*args, *extra, "--no-progress", "--device", "cpu"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines
    assert main(["info", str(tmp_path)]) == 2
    assert "not a rho-select scores directory" in capsys.readouterr().err
