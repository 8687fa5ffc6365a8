"""RhoTrainer: trains with stored or online reference scores and logs the selection."""

from __future__ import annotations

import pytest
import torch
from rho_select import RhoSelectError, RhoTrainer
from rho_testlib import tiny_llama


class Packed(torch.utils.data.Dataset):
    def __init__(self, ids, ref=None):
        self.ids, self.ref = ids, ref

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        row = {"input_ids": self.ids[i], "labels": self.ids[i].clone()}
        if self.ref is not None:
            row["ref_losses"] = self.ref[i]
        return row


def _args(tmp_path):
    from transformers import TrainingArguments

    return TrainingArguments(
        str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=4,
        logging_steps=2,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
    )


@pytest.mark.parametrize("online", [False, True], ids=["stored", "online"])
def test_trainer_trains_and_logs_selection(tmp_path, online):
    ids = torch.randint(0, 64, (16, 12), generator=torch.Generator().manual_seed(0))
    student, reference = tiny_llama(64, seed=0), tiny_llama(64, seed=1)
    ref = None if online else torch.rand(16, 12) * 4
    before = [p.detach().clone() for p in student.parameters()]
    trainer = RhoTrainer(
        model=student.train(),
        args=_args(tmp_path),
        train_dataset=Packed(ids, ref),
        eval_dataset=Packed(ids[:4]),
        ratio=0.5,
        reference_model=reference if online else None,
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        assert entry["rho/selected_fraction"] == pytest.approx(0.5, abs=0.01)
        assert entry["rho/unselected_loss"] > 0 and entry["rho/selected_loss"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] > 0


def test_trainer_without_scores_or_reference_is_one_line(tmp_path):
    ids = torch.randint(0, 64, (8, 12))
    trainer = RhoTrainer(
        model=tiny_llama(64).train(), args=_args(tmp_path), train_dataset=Packed(ids)
    )
    with pytest.raises(
        RhoSelectError, match="no 'ref_losses' and RhoTrainer has no reference_model"
    ):
        trainer.train()
