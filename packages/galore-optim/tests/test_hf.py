"""Param groups from module names, and the transformers Trainer integration."""

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
        galore_param_groups(tiny_model(), 3)


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
