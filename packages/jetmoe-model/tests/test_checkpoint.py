"""Released weight names load unchanged; shapes that do not fit the config fail clearly."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from jetmoe_model import (
    CheckpointMismatchError,
    JetMoEConfig,
    JetMoEForCausalLM,
    check_checkpoint,
    expected_shapes,
    load_checkpoint,
)
from jetmoe_testlib import TINY, randomize_

from tensor_utils.checkpoint import save_safetensors

HUB_TINY = {  # released spelling
    "ffn_hidden_size": 24, "moe_num_experts": 4, "moe_top_k": 2, "num_layers": 2,
    "hidden_size": 32, "num_key_value_heads": 2, "kv_channels": 8, "num_attention_heads": 4,
    "vocab_size": 97, "rms_norm_eps": 1e-5, "layer_norm_epsilon": 1e-5, "bias": True,
    "glu": True, "rotary_percent": 1.0, "model_type": "jetmoe",
    "architectures": ["JetMoEForCausalLM"], "torch_dtype": "float32",
}  # fmt: skip


def released_checkpoint(tmp_path, *, mutate=None) -> tuple[JetMoEForCausalLM, Any]:
    """A hub-style directory: released config names, released tensor names, no lm_head (tied)."""
    model = randomize_(JetMoEForCausalLM(JetMoEConfig(**TINY)), seed=1)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    if mutate:
        mutate(state)
    save_safetensors(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(HUB_TINY))
    return model, tmp_path


def test_state_dict_names_are_the_released_ones():
    names = set(JetMoEForCausalLM(JetMoEConfig(**TINY)).state_dict())
    assert names == set(expected_shapes(JetMoEConfig(**TINY)))
    assert "model.layers.0.self_attention.experts.router.layer.weight" in names
    assert "model.layers.1.mlp.output_linear.weight" in names


def test_load_checkpoint_from_released_layout(tmp_path):
    model, path = released_checkpoint(tmp_path)
    loaded = load_checkpoint(path)
    x = torch.randint(0, 97, (2, 7))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()


def test_from_pretrained_reads_the_released_layout(tmp_path):
    model, path = released_checkpoint(tmp_path)
    loaded = JetMoEForCausalLM.from_pretrained(path).eval()
    x = torch.randint(0, 97, (1, 5))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model.eval()(x).logits)


def test_save_pretrained_round_trip(tmp_path):
    model = randomize_(JetMoEForCausalLM(JetMoEConfig(**TINY)), seed=2).eval()
    model.save_pretrained(tmp_path)
    again = JetMoEForCausalLM.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 97, (1, 5))
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, model(x).logits)


def _shrink(state):
    state["model.layers.1.mlp.input_linear.weight"] = torch.zeros(4, 40, 32)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            _shrink,
            r"model.layers.1.mlp.input_linear.weight.*\[4, 40, 32\].*\[4, 48, 32\]",
        ),
        (lambda s: s.pop("model.layers.1.mlp.bias"), "lacks 1 tensor"),
        (
            lambda s: s.__setitem__("model.layers.2.mlp.bias", torch.zeros(32)),
            "does not build",
        ),
    ],
)
def test_mismatched_checkpoint_is_a_clear_error(tmp_path, mutate, message):
    """``load_checkpoint`` (the strict loader) refuses all three; ``from_pretrained`` refuses the
    wrong shape and, as transformers does, loads around a missing or extra tensor and reports it."""
    _, path = released_checkpoint(tmp_path, mutate=mutate)
    with pytest.raises(CheckpointMismatchError, match=message) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    if mutate is _shrink:
        with pytest.raises(CheckpointMismatchError, match=message):
            JetMoEForCausalLM.from_pretrained(path)
    else:
        # returns (model, info); transformers' stub says model
        _, report = JetMoEForCausalLM.from_pretrained(path, output_loading_info=True)  # pyright: ignore[reportGeneralTypeIssues]
        assert set(report["missing_keys"]) | set(report["unexpected_keys"]) in (
            {"model.layers.1.mlp.bias"},
            {"model.layers.2.mlp.bias"},
        )


def test_check_checkpoint_accepts_a_state_dict():
    cfg = JetMoEConfig(**TINY)
    state = JetMoEForCausalLM(cfg).state_dict()
    check_checkpoint(cfg, state)
    wrong = JetMoEConfig(**{**TINY, "num_local_experts": 3})
    with pytest.raises(CheckpointMismatchError, match="num_local_experts"):
        check_checkpoint(wrong, state)
