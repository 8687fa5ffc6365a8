"""Reward models: metrics, objectives, class weighting, learning a separable preference, and
bad data as one-line errors."""

import json
import random

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from perl_rlhf import (
    LoraSpec,
    PerlError,
    PerlModel,
    RewardConfig,
    evaluate_reward_model,
    train_reward_model,
)
from perl_rlhf.reward import (
    balanced_pos_weight,
    binary_loss,
    binary_metrics,
    bradley_terry_loss,
    pairwise_metrics,
    roc_auc,
)
from perl_testlib import letter_pairs, tiny


@given(st.lists(st.tuples(st.integers(-3, 3), st.booleans()), min_size=2, max_size=30))
def test_auc_is_the_pair_count(rows):
    scores = torch.tensor([float(s) for s, _ in rows])
    labels = torch.tensor([float(y) for _, y in rows])
    pos, neg = scores[labels > 0.5], scores[labels < 0.5]
    if len(pos) == 0 or len(neg) == 0:
        return
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    assert roc_auc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)))


def test_metrics_by_hand():
    s = torch.tensor([2.0, -1.0, 0.5, -0.5, 1.0, -2.0])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    m = binary_metrics(s, y)
    # predictions (s > 0): 1 0 1 0 1 0 -> correct: y1 yes, y2 no, n1 no, n2 yes, n3 no, n4 yes
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert m["auc"] == pytest.approx((4 + 1) / 8)
    p = pairwise_metrics(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0]))
    assert p["accuracy"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_losses_by_hand():
    c, r = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    want = -torch.nn.functional.logsigmoid(torch.tensor([1.0, -2.0]))
    assert torch.allclose(bradley_terry_loss(c, r), want)
    assert torch.allclose(
        bradley_terry_loss(c, r, center_coef=0.1), want + 0.1 * torch.tensor([1.0, 4.0])
    )
    s, y = torch.tensor([0.3, -0.2]), torch.tensor([1.0, 0.0])
    bce = binary_loss(s, y, pos_weight=3.0)
    want = torch.tensor(
        [
            -3 * torch.log(torch.sigmoid(torch.tensor(0.3))),
            -torch.log(torch.sigmoid(torch.tensor(0.2))),
        ]
    )
    assert torch.allclose(bce, want)
    assert balanced_pos_weight([1, 0, 0, 0, 0, 0, 1]) == pytest.approx(5 / 2)
    with pytest.raises(PerlError, match="both labels"):
        balanced_pos_weight([1.0, 1.0])


def test_pairwise_reward_model_learns_a_separable_preference():
    base, tok = tiny()
    model = PerlModel(base, roles=("reward",), lora=LoraSpec(rank=4), tokenizer=tok)
    cfg = RewardConfig(objective="pairwise", lr=3e-3, epochs=3, batch_size=16, seed=0)
    test = letter_pairs(48, seed=1)
    before = evaluate_reward_model(model, tok, test, config=cfg)
    if before["accuracy"] > 0.5:  # start on the wrong side, so the test sees learning
        with torch.no_grad():
            model.head("reward").weight.neg_()
        before = evaluate_reward_model(model, tok, test, config=cfg)
    res = train_reward_model(
        model, tok, letter_pairs(96), config=cfg, eval_data=test, progress=False
    )
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert res.metrics["accuracy"] >= 0.9 and before["accuracy"] <= 0.5
    assert res.metrics["auc"] >= 0.9


def test_binary_class_weighting_lifts_the_minority_class():
    """86% thumbs-up data: without weights the classifier leans to 'up'; balanced weights
    raise balanced accuracy."""
    rng = random.Random(0)
    rows = []
    for _ in range(60):
        up = rng.random() < 0.86
        word = rng.choice(["good", "fine", "nice"]) if up else rng.choice(["bad", "poor"])
        rows.append({"prompt": "rate:", "completion": f"it is {word}", "label": up})
    results = {}
    for cw in (None, "balanced"):
        base, tok = tiny()
        model = PerlModel(base, roles=("reward",), lora=LoraSpec(rank=4), tokenizer=tok)
        cfg = RewardConfig(objective="binary", lr=3e-3, epochs=4, batch_size=12, class_weight=cw)
        res = train_reward_model(model, tok, rows, config=cfg, eval_data=rows, progress=False)
        results[cw] = res
    assert results["balanced"].config["pos_weight"] == pytest.approx(
        balanced_pos_weight([r["label"] for r in rows])
    )
    assert (
        results["balanced"].metrics["balanced_accuracy"]
        > results[None].metrics["balanced_accuracy"]
    )
    assert set(results[None].metrics) >= {"accuracy", "balanced_accuracy", "auc"}


@pytest.mark.parametrize(
    ("rows", "objective", "match"),
    [
        ([{"prompt": "a", "chosen": "b"}], "pairwise", "row 0: no 'rejected' column"),
        (
            [{"prompt": "a", "chosen": "b", "rejected": "  "}],
            "pairwise",
            r"row 0 \(rejected\): empty response",
        ),
        ([{"prompt": "a", "completion": "b", "label": "yes"}], "binary", "label must be"),
        ([{"prompt": "a", "completion": "", "label": 1}], "binary", "empty response"),
        (
            [{"prompt": "a" * 200, "chosen": "b", "rejected": "c"}],
            "pairwise",
            "over the context limit of 128",
        ),
        ([{"prompt": 3, "chosen": "b", "rejected": "c"}], "pairwise", "prompt must be a string"),
    ],
)
def test_bad_rows_are_one_clear_line(rows, objective, match):
    base, tok = tiny()
    model = PerlModel(base, roles=("reward",), lora=LoraSpec(rank=2), tokenizer=tok)
    with pytest.raises(PerlError, match=match) as e:
        train_reward_model(
            model, tok, rows, config=RewardConfig(objective=objective), progress=False
        )
    assert "\n" not in str(e.value)


def test_skip_long_and_jsonl_and_dataset(tmp_path):
    from datasets import Dataset

    base, tok = tiny()
    model = PerlModel(base, roles=("reward",), lora=LoraSpec(rank=2), tokenizer=tok)
    rows = [*letter_pairs(4), {"prompt": "a" * 200, "chosen": "b", "rejected": "c"}]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = RewardConfig(skip_long=True, max_steps=1)
    assert train_reward_model(model, tok, path, config=cfg, progress=False).skipped_rows == 1
    ds = Dataset.from_list(rows)
    assert train_reward_model(model, tok, ds, config=cfg, progress=False).skipped_rows == 1
    path.write_text('{"prompt": "a"}\nnot json\n')
    with pytest.raises(PerlError, match=r"d.jsonl:2: not valid JSON"):
        train_reward_model(model, tok, path, config=cfg, progress=False)
