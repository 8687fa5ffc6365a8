"""Param groups from module names, and the transformers Trainer integration."""

from typing import Any

import pytest
import torch
from galore_optim import GaLoreAdamW, galore_param_groups, galore_target_names, is_galore_group
from galore_testlib import tiny_model

transformers = pytest.importorskip("transformers")


def tiny_llama():
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


def test_target_names_follow_transformers_rules():
    model = tiny_llama()
    names = galore_target_names(model, ["attn", "mlp"])
    assert len(names) == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert all(n.endswith(".weight") and ("self_attn" in n or "mlp" in n) for n in names)
    assert galore_target_names(model, r".*\.q_proj") == [
        f"model.layers.{i}.self_attn.q_proj.weight" for i in range(2)
    ]
    all_linear = galore_target_names(model, "all-linear")
    assert set(all_linear) == set(names)  # lm_head excluded by default
    assert "lm_head.weight" in galore_target_names(model, "all_linear", exclude=())


def test_param_groups_split_galore_and_plain():
    model = tiny_llama()
    groups = galore_param_groups(
        model, ["attn", "mlp"], rank=8, update_proj_gap=50, weight_decay=0.1, solver="randomized"
    )
    galore = [g for g in groups if is_galore_group(g)]
    assert len(galore) == 1 and galore[0]["rank"] == 8 and galore[0]["solver"] == "randomized"
    assert all(p.dim() == 2 for p in galore[0]["params"])
    n_total = sum(1 for _ in model.parameters())
    assert sum(len(g["params"]) for g in groups) == n_total
    no_decay = [g for g in groups if g.get("weight_decay") == 0.0]
    assert no_decay and all(p.dim() == 1 for p in no_decay[0]["params"])  # norms
    GaLoreAdamW(groups, lr=1e-3)  # valid for the optimizer


def test_param_groups_errors():
    with pytest.raises(ValueError, match=r"no nn\.Linear module matches"):
        galore_param_groups(tiny_model(), ["transformer_block"])
    with pytest.raises(TypeError, match="target_modules must be"):
        galore_param_groups(tiny_model(), 3)  # pyright: ignore[reportArgumentType]  (wrong type on purpose)


def test_trainer_uses_galore_and_checkpoints_weights_only(tmp_path):
    from galore_optim.hf import galore_optimizer_cls_and_kwargs

    model = tiny_llama()
    gen = torch.Generator().manual_seed(0)
    rows = [
        {"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (16, 12), generator=gen)
    ]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=3,
        learning_rate=1e-3,
        max_grad_norm=1.0,
        save_steps=3,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        optim_target_modules=["attn", "mlp"],
        lr_scheduler_type="linear",
    )
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=rows,
        optimizer_cls_and_kwargs=galore_optimizer_cls_and_kwargs(
            model, args, rank=8, update_proj_gap=2
        ),
    )
    before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    trainer.train()
    assert isinstance(trainer.optimizer, GaLoreAdamW) or isinstance(
        getattr(trainer.optimizer, "optimizer", None), GaLoreAdamW
    )
    assert not torch.equal(before, model.model.layers[0].self_attn.q_proj.weight)
    ckpt = tmp_path / "checkpoint-3" / "optimizer.pt"
    sd = torch.load(ckpt, weights_only=True)
    steps = {s["step"] for s in sd["state"].values()}
    assert steps == {3}
    assert any("proj_right" in s or "proj_left" in s for s in sd["state"].values())


def _trainer_args(tmp_path, optim: str, **kw):
    return transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-3,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        optim=optim,
        optim_target_modules=["attn", "mlp"],
        **kw,
    )


@pytest.mark.parametrize(
    ("optim", "cls_name"),
    [
        ("galore_adamw", "GaLoreAdamW"),
        ("galore_adamw_8bit", "GaLoreAdamW8bit"),
        ("galore_adafactor", "GaLoreAdafactor"),
        ("galore_adamw_layerwise", "LayerwiseGaLoreAdamW"),
        ("galore_adafactor_layerwise", "LayerwiseGaLoreAdafactor"),
    ],
)
def test_transformers_optim_names_and_optim_args_map_onto_ours(tmp_path, optim, cls_name):
    from galore_optim.hf import galore_optimizer_cls_and_kwargs

    args = _trainer_args(
        tmp_path, optim, optim_args="rank=4, update_proj_gap=3, scale=0.5, proj_type=left"
    )
    cls, kwargs = galore_optimizer_cls_and_kwargs(tiny_llama(), args)
    assert cls.__name__ == cls_name
    galore = [g for g in kwargs["params"] if is_galore_group(g)]
    assert len(galore) == 1
    assert {k: galore[0][k] for k in ("rank", "update_proj_gap", "scale", "proj_type")} == {
        "rank": 4,
        "update_proj_gap": 3,
        "scale": 0.5,
        "proj_type": "left",
    }
    # transformers' defaults when optim_args is empty; keyword arguments override optim_args
    _cls, kw = galore_optimizer_cls_and_kwargs(tiny_llama(), _trainer_args(tmp_path, optim))
    g = next(g for g in kw["params"] if is_galore_group(g))
    assert (g["rank"], g["update_proj_gap"], g["scale"], g["proj_type"]) == (128, 200, 0.25, "std")
    _cls, kw = galore_optimizer_cls_and_kwargs(tiny_llama(), args, rank=2)
    assert next(g for g in kw["params"] if is_galore_group(g))["rank"] == 2


def test_bad_optim_args_are_one_line_errors(tmp_path):
    from galore_optim.hf import galore_optimizer_cls_and_kwargs

    for optim_args, match in [
        ("rnak=4", "unknown GaLore key 'rnak'"),
        ("rank=four", "rank='four' is not an int"),
        ("rank", "'rank' is not key=value"),
    ]:
        args = _trainer_args(tmp_path, "galore_adamw", optim_args=optim_args)
        with pytest.raises(ValueError, match=match):
            galore_optimizer_cls_and_kwargs(tiny_llama(), args)


@pytest.mark.parametrize("optim", ["galore_adamw", "galore_adamw_layerwise"])
def test_galore_trainer_from_training_arguments(tmp_path, optim):
    """One line for Trainer users: GaLoreTrainer + TrainingArguments(optim="galore_*")."""
    from galore_optim.hf import GaLoreTrainer

    model = tiny_llama()
    gen = torch.Generator().manual_seed(0)
    rows = [
        {"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (16, 12), generator=gen)
    ]
    args = _trainer_args(
        tmp_path,
        optim,
        optim_args="rank=4, update_proj_gap=2",
        gradient_accumulation_steps=2,
        max_grad_norm=1.0,
        logging_steps=1,
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = GaLoreTrainer(
        model=model,
        args=args,
        train_dataset=rows,  # pyright: ignore[reportArgumentType]  (Trainer indexes any sequence; stub names Dataset)
    ).train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    assert len(changed) == len(before)  # GaLore and plain params all trained
    q = model.model.layers[0].self_attn.q_proj.weight
    assert q.grad is None


def test_galore_trainer_state_counts_optimizer_steps(tmp_path):
    from galore_optim.hf import GaLoreTrainer

    model = tiny_llama()
    rows = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (16, 12))]
    args = _trainer_args(
        tmp_path,
        "galore_adamw_layerwise",
        optim_args="rank=4",
        gradient_accumulation_steps=2,
        max_grad_norm=1.0,
    )
    trainer = GaLoreTrainer(
        model=model,
        args=args,
        train_dataset=rows,  # pyright: ignore[reportArgumentType]  (Trainer indexes any sequence; stub names Dataset)
    )
    trainer.train()
    opt: Any = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate wraps it
    assert type(opt).__name__ == "LayerwiseGaLoreAdamW"
    assert {s["step"] for s in opt.state.values()} == {3}  # 3 steps of 2 micro-batches
    assert opt.layerwise.last_grad_norm is not None and opt.layerwise.last_grad_norm > 0
