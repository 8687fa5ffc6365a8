"""JetMoEConfig: both spellings, clear errors, round trips, Auto-class registration."""

from __future__ import annotations

import json

import pytest
from jetmoe_model import JetMoEConfig, JetMoEConfigError, JetMoEForCausalLM
from jetmoe_testlib import TINY

# The released hub config of jetmoe/jetmoe-8b (key names and values per the reference notes).
HUB_8B = {
    "activation_function": "silu",
    "architectures": ["JetMoEForCausalLM"],
    "aux_loss_coef": 0.01,
    "bias": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "ffn_hidden_size": 5632,
    "glu": True,
    "hidden_size": 2048,
    "initializer_range": 0.01,
    "kv_channels": 128,
    "layer_norm_epsilon": 1e-05,
    "model_type": "jetmoe",
    "moe_num_experts": 8,
    "moe_top_k": 2,
    "n_positions": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 16,
    "num_layers": 24,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "rotary_percent": 1.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.40.0.dev0",
    "use_cache": True,
    "vocab_size": 32000,
}


def test_hub_names_map_to_transformers_names():
    cfg = JetMoEConfig(**HUB_8B)
    assert cfg.intermediate_size == 5632
    assert cfg.num_local_experts == 8
    assert cfg.num_experts_per_tok == 2
    assert cfg.num_hidden_layers == 24
    assert cfg.max_position_embeddings == 4096
    assert cfg.rms_norm_eps == 1e-5 and cfg.block_norm_eps == 1e-6
    assert cfg.num_attention_heads == 32
    assert cfg.attention_size == 2048


def test_8b_parameter_count_matches_the_paper():
    expected = JetMoEConfig(**HUB_8B)
    from jetmoe_model import expected_shapes

    total = 0
    for name, shape in expected_shapes(expected).items():
        if name != "lm_head.weight":  # tied
            n = 1
            for s in shape:
                n *= s
            total += n
    assert 8.4e9 < total < 8.6e9  # notes: ~8.52B


def test_transformers_names_and_same_value_under_both_names():
    cfg = JetMoEConfig(intermediate_size=64, ffn_hidden_size=64, num_local_experts=4, moe_top_k=1)
    assert cfg.intermediate_size == 64 and cfg.num_experts_per_tok == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"moe_top_k": 9}, "larger than the number of experts"),
        (
            {"num_experts_per_tok": 5, "num_local_experts": 4},
            "larger than the number of experts",
        ),
        ({"hidden_sise": 64}, "unknown config key 'hidden_sise'"),
        ({"ffn_hidden_size": 64, "intermediate_size": 32}, "different values"),
        ({"num_attention_heads": 16}, "num_attention_heads=16"),
        ({"glu": False}, "glu=False is not supported"),
        ({"rotary_percent": 0.5}, "rotary_percent=0.5"),
        ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive int"),
        ({"expert_backend": "cuda"}, "expert_backend 'cuda'"),
        ({"activation_function": "swoosh"}, "unknown activation_function"),
        ({"rope_parameters": {"rope_type": "nope"}}, "rope_type 'nope' is not one of"),
        ({"rope_scaling": {"rope_type": "linear"}}, "Missing required keys.*factor"),
        ({"rope_scaling": {"type": "yarn", "factor": 0.5}}, "factor must be a number >= 1"),
        ({"rope_parameters": "linear"}, "rope_parameters must be a dict"),
    ],
)
def test_bad_config_is_a_clear_one_line_error(kwargs, message):
    with pytest.raises(JetMoEConfigError, match=message) as info:
        JetMoEConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_save_load_round_trip_and_transformers_reads_ours(tmp_path):
    from transformers import JetMoeConfig

    cfg = JetMoEConfig(**TINY, router_z_loss_coef=0.002)
    cfg.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["intermediate_size"] == TINY["intermediate_size"]
    assert "ffn_hidden_size" not in saved
    again = JetMoEConfig.from_pretrained(tmp_path)
    for key, value in TINY.items():
        assert getattr(again, key) == value
    assert again.router_z_loss_coef == 0.002
    theirs = JetMoeConfig.from_pretrained(tmp_path)
    assert theirs.num_local_experts == TINY["num_local_experts"]
    assert theirs.num_attention_heads == again.num_attention_heads


def test_hub_config_file_loads_through_auto_classes(tmp_path):
    from jetmoe_model import register_auto_classes
    from transformers import AutoConfig, AutoModelForCausalLM

    register_auto_classes()  # the explicit opt-in (importing the package registers nothing)

    hub_tiny = {**HUB_8B, "hidden_size": 32, "kv_channels": 8, "num_key_value_heads": 2}
    hub_tiny |= {"num_attention_heads": 4, "ffn_hidden_size": 16, "num_layers": 1}
    hub_tiny |= {"vocab_size": 50, "moe_num_experts": 4}
    (tmp_path / "config.json").write_text(json.dumps(hub_tiny))
    cfg = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(cfg, JetMoEConfig)
    assert cfg.intermediate_size == 16 and cfg.num_hidden_layers == 1
    model = AutoModelForCausalLM.from_config(cfg)
    assert isinstance(model, JetMoEForCausalLM)
