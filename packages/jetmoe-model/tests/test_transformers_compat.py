"""Behaviour a transformers user expects, checked against transformers' own JetMoe on identical
weights: config keys, auto_map and registration, the training loss, output options, eager
attention, the static cache, sequence classification, gradient checkpointing layers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from jetmoe_model import JetMoEConfig, JetMoEForCausalLM, JetMoEForSequenceClassification
from jetmoe_testlib import TINY, randomize_, transformers_twin


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    model = JetMoEForCausalLM(JetMoEConfig(**{**TINY, **overrides}))
    return randomize_(model, seed).eval()


def ids(batch=2, length=9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY["vocab_size"], (batch, length), generator=gen)


# -- config ------------------------------------------------------------------------------------


def test_unknown_keys_are_kept_as_attributes_and_saved(tmp_path):
    quant = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    cfg = JetMoEConfig(**TINY, quantization_config=quant, my_tool_key=3)
    assert cfg.my_tool_key == 3 and cfg.quantization_config == quant
    cfg.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["my_tool_key"] == 3
    again = JetMoEConfig.from_pretrained(tmp_path)
    assert again.my_tool_key == 3
    assert again.intermediate_size == TINY["intermediate_size"]


def test_saved_config_has_auto_map_and_its_module(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"]["AutoModelForCausalLM"] == "jetmoe_auto.JetMoEForCausalLM"
    assert saved["auto_map"]["AutoConfig"] == "jetmoe_auto.JetMoEConfig"
    assert "from jetmoe_model import" in (tmp_path / "jetmoe_auto.py").read_text()


def test_import_leaves_transformers_registration_and_auto_map_picks_ours(tmp_path):
    """In a fresh process: importing the package does not change what ``AutoConfig`` builds for
    ``jetmoe``; ``trust_remote_code=True`` on our saved checkpoint builds our classes."""
    model = tiny_model()
    model.save_pretrained(tmp_path / "ckpt")
    script = textwrap.dedent(
        f"""
        import jetmoe_model, torch
        from transformers import AutoConfig, AutoModelForCausalLM, JetMoeConfig
        path = {str(tmp_path / "ckpt")!r}
        assert type(AutoConfig.from_pretrained(path)) is JetMoeConfig
        ours = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)
        assert type(ours) is jetmoe_model.JetMoEForCausalLM, type(ours)
        theirs = AutoModelForCausalLM.from_pretrained(path)
        assert type(theirs).__name__ == "JetMoeForCausalLM", type(theirs)
        x = torch.arange(6)[None] % 90
        with torch.no_grad():
            torch.testing.assert_close(ours.eval()(x).logits, theirs.eval()(x).logits,
                                       atol=1e-5, rtol=1e-5)
        print("ok")
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().endswith("ok")


# -- loss --------------------------------------------------------------------------------------


def test_loss_equals_transformers_without_router_logits():
    ours = tiny_model()
    theirs = transformers_twin(ours)
    x = ids()
    with torch.no_grad():
        got = ours(x, labels=x)
        want = theirs(x, labels=x)
    torch.testing.assert_close(got.loss, want.loss, atol=1e-5, rtol=1e-5)
    assert got.aux_loss is None and got.z_loss is None


def test_loss_honours_num_items_in_batch_and_shift_labels():
    ours = tiny_model()
    theirs = transformers_twin(ours)
    x = ids()
    other = ids(seed=1)  # shift_labels (context parallelism): already shifted, used as given
    shift = torch.cat([other[:, 1:], torch.full_like(other[:, :1], -100)], dim=1)
    with torch.no_grad():
        for kwargs in (
            {"labels": x, "num_items_in_batch": torch.tensor(5)},
            {"labels": x, "shift_labels": shift},
            {"labels": x, "shift_labels": shift, "num_items_in_batch": torch.tensor(3)},
        ):
            got = ours(x, **kwargs).loss
            want = theirs(x, **kwargs).loss
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=str(kwargs.keys()))
        plain = ours(x, labels=x).loss
        assert not torch.allclose(ours(x, labels=x, num_items_in_batch=torch.tensor(5)).loss, plain)
        assert not torch.allclose(ours(x, labels=x, shift_labels=shift).loss, plain)


def test_router_losses_only_with_output_router_logits():
    ours = tiny_model().train()
    x = ids()
    out = ours(x, labels=x)
    assert out.aux_loss is None and torch.allclose(out.loss, out.lm_loss)
    out = ours(x, labels=x, output_router_logits=True)
    want = out.lm_loss + 0.01 * out.aux_loss + 0.001 * out.z_loss
    torch.testing.assert_close(out.loss, want)


# -- outputs -----------------------------------------------------------------------------------


def test_attentions_equal_transformers_eager_weights():
    ours = tiny_model()
    theirs = transformers_twin(ours, attn="eager")
    x = ids()
    mask = torch.ones_like(x)
    mask[0, :3] = 0
    with torch.no_grad():
        got = ours(x, attention_mask=mask, output_attentions=True)
        want = theirs(x, attention_mask=mask, output_attentions=True)
    assert got.attentions is not None and len(got.attentions) == TINY["num_hidden_layers"]
    for a, b in zip(got.attentions, want.attentions, strict=True):
        assert a.shape == b.shape
        # padded query rows are unused: compare the real ones
        torch.testing.assert_close(a[:, :, 3:], b[:, :, 3:], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a[1], b[1], atol=1e-5, rtol=1e-5)


def test_generate_with_output_attentions_and_dict():
    ours = tiny_model()
    x = ids(batch=1, length=4)
    out = ours.generate(  # pyright: ignore[reportAttributeAccessIssue]  (generate()'s self-type in transformers)
        x,
        max_new_tokens=3,
        do_sample=False,
        output_attentions=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )
    assert out.sequences.shape == (1, 7)
    assert len(out.attentions) == 3
    assert out.attentions[0][0].shape[-1] == 4 and out.attentions[1][0].shape[-1] == 5


def test_config_output_options_and_return_dict_false():
    ours = tiny_model(output_hidden_states=True, output_attentions=True)
    x = ids()
    with torch.no_grad():
        out = ours(x)
        assert out.hidden_states is not None and len(out.hidden_states) == 3
        assert out.attentions is not None
        as_tuple = ours(x, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], out.logits)
    ours.config.return_dict = False
    with torch.no_grad():
        assert isinstance(ours(x), tuple)


# -- attention implementation and caches -------------------------------------------------------


def test_eager_attention_really_runs_eager(monkeypatch):
    x = ids()
    sdpa = torch.nn.functional.scaled_dot_product_attention
    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    ours = tiny_model()
    ours.set_attn_implementation("eager")
    assert ours.config._attn_implementation == "eager"
    with torch.no_grad():
        eager = ours(x).logits
    assert not calls
    ours.set_attn_implementation("sdpa")
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, eager, atol=1e-5, rtol=1e-5)
    assert calls


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_generate_with_static_cache_equals_dynamic(attn):
    ours = tiny_model()
    ours.set_attn_implementation(attn)
    x = ids(batch=2, length=5)
    mask = torch.ones_like(x)
    mask[0, :2] = 0
    kwargs = dict(attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    dynamic = ours.generate(x, **kwargs)  # pyright: ignore[reportAttributeAccessIssue]  (generate()'s self-type in transformers)
    static = ours.generate(x, cache_implementation="static", **kwargs)  # pyright: ignore[reportAttributeAccessIssue]  (generate()'s self-type in transformers)
    torch.testing.assert_close(static, dynamic)


# -- heads and training ------------------------------------------------------------------------


def test_sequence_classification_equals_transformers():
    from transformers import JetMoeConfig, JetMoeForSequenceClassification

    torch.manual_seed(0)
    cfg = JetMoEConfig(**TINY, num_labels=3, pad_token_id=0)
    ours = randomize_(JetMoEForSequenceClassification(cfg)).eval()
    theirs_cfg = JetMoeConfig(**TINY, pad_token_id=0)
    theirs_cfg.num_labels = 3
    theirs = JetMoeForSequenceClassification(theirs_cfg).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = ids() + 1
    x[0, -2:] = 0  # right padding: the last real token is pooled
    labels = torch.tensor([0, 2])
    with torch.no_grad():
        got, want = ours(x, labels=labels), theirs(x, labels=labels)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, want.loss, atol=1e-5, rtol=1e-5)


def test_auto_sequence_classification_and_pipeline(tmp_path):
    from transformers import AutoModelForSequenceClassification, pipeline

    cfg = JetMoEConfig(**TINY, num_labels=2, pad_token_id=0)
    JetMoEForSequenceClassification(cfg).save_pretrained(tmp_path)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True)
    assert isinstance(model, JetMoEForSequenceClassification)

    class Tokenizer:  # the pipeline's tokenizer interface, enough for integer "words"
        pad_token_id = 0
        model_input_names = ("input_ids", "attention_mask")

        def __call__(self, text, return_tensors=None, **kwargs):
            tokens = [int(w) % 90 + 1 for w in text.split()]
            return {
                "input_ids": torch.tensor([tokens]),
                "attention_mask": torch.ones(1, len(tokens)),
            }

    classify = pipeline("text-classification", model=model, tokenizer=Tokenizer())  # type: ignore[arg-type]
    result = classify("3 14 15 92")
    assert result[0]["label"] in ("LABEL_0", "LABEL_1")
    assert 0.0 <= result[0]["score"] <= 1.0


def test_layers_are_gradient_checkpointing_layers():
    from transformers.modeling_layers import GradientCheckpointingLayer

    ours = tiny_model().train()
    ours.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = [m for m in ours.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert len(layers) == TINY["num_hidden_layers"]
    assert all(layer.gradient_checkpointing for layer in layers)
    x = ids()
    ours(x, labels=x).loss.backward()
    assert ours.lm_head.weight.grad is not None


def test_packed_sequences_attend_within_themselves_as_in_transformers():
    """Padding-free batches (DataCollatorWithFlattening: position ids restart, no mask, no cache)
    give each packed sequence the logits it gets alone, and transformers' JetMoe's logits."""
    ours = tiny_model()
    theirs = transformers_twin(ours, attn="sdpa")
    a, b = ids(batch=1, length=5, seed=1), ids(batch=1, length=4, seed=2)
    packed = torch.cat([a, b], dim=1)
    position_ids = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3]])
    for attn in ("sdpa", "eager"):
        ours.set_attn_implementation(attn)
        with torch.no_grad():
            got = ours(packed, position_ids=position_ids, use_cache=False).logits
            alone = torch.cat([ours(a).logits, ours(b).logits], dim=1)
            torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-5)
            want = theirs(packed, position_ids=position_ids, use_cache=False).logits
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_hidden_state_indices_as_transformers():
    """``output_hidden_states=[indices]`` (transformers 5.2x) keeps those hidden states (negative
    indices from the end) and leaves None for the others; the kept ones equal transformers'."""
    ours = tiny_model()
    theirs = transformers_twin(ours)
    x = ids()
    with torch.no_grad():
        got = ours.model(x, output_hidden_states=[0, -1]).hidden_states
        want = theirs.model(x, output_hidden_states=True).hidden_states
    assert [h is None for h in got] == [False, True, False]
    for g, w in zip(got, want, strict=True):
        if g is not None:
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


# -- RoPE scaling ------------------------------------------------------------------------------

ROPE_CASES = {
    "linear": {"factor": 2.0},
    "dynamic": {"factor": 2.0},
    "yarn": {"factor": 4.0, "original_max_position_embeddings": 8},
    "llama3": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8,
    },
    "longrope": {
        "factor": 2.0,
        "short_factor": [1.0, 1.1, 1.2, 1.3],
        "long_factor": [1.5, 2.0, 2.5, 3.0],
        "original_max_position_embeddings": 8,
    },
}


@pytest.mark.parametrize("rope_type", sorted(ROPE_CASES))
def test_rope_scaling_equals_transformers(rope_type):
    """Each transformers RoPE type on the config gives transformers' JetMoe's logits on identical
    weights, within and past the trained length (dynamic NTK and LongRoPE switch there)."""
    rope = {"rope_type": rope_type, "rope_theta": 10000.0, **ROPE_CASES[rope_type]}
    ours = tiny_model(max_position_embeddings=8, rope_parameters=rope)
    plain = tiny_model(max_position_embeddings=8)
    theirs = transformers_twin(ours)
    for length in (6, 13):
        x = ids(length=length)
        with torch.no_grad():
            got, want = ours(x).logits, theirs(x).logits
            torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)
            if rope_type == "dynamic" and length <= 8:
                torch.testing.assert_close(got, plain(x).logits)  # acts past the length only
            else:
                assert not torch.allclose(got, plain(x).logits, atol=1e-4)  # the scaling acts


def test_legacy_rope_scaling_key_and_round_trip(tmp_path):
    cfg = JetMoEConfig(**TINY, rope_scaling={"type": "linear", "factor": 4.0})
    assert cfg.rope_parameters["rope_type"] == "linear" and cfg.rope_parameters["factor"] == 4.0
    cfg.save_pretrained(tmp_path)
    assert JetMoEConfig.from_pretrained(tmp_path).rope_parameters == cfg.rope_parameters
    theirs: dict = dict(transformers.JetMoeConfig.from_pretrained(tmp_path).rope_parameters or {})
    assert theirs["rope_type"] == "linear" and theirs["factor"] == 4.0


def test_rotary_buffers_survive_meta_loading(tmp_path):
    from jetmoe_model import load_checkpoint

    model = tiny_model(rope_parameters={"rope_type": "linear", "factor": 2.0})
    model.save_pretrained(tmp_path)
    x = ids()
    with torch.no_grad():
        want = model(x).logits
        for again in (JetMoEForCausalLM.from_pretrained(tmp_path), load_checkpoint(tmp_path)):
            assert again.model.rotary_emb.inv_freq.dtype == torch.float32
            torch.testing.assert_close(again.eval()(x).logits, want)


def test_missing_tensors_load_and_are_reported_as_transformers_does(tmp_path):
    """transformers 5.x loads a checkpoint with missing or extra tensors, initialises the missing
    ones and lists both in its load report (and in ``output_loading_info``); a shape mismatch is a
    RuntimeError. Ours behaves the same, on the same checkpoint as transformers' own JetMoe."""
    from safetensors.torch import load_file, save_file

    model = tiny_model()
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state.pop("model.layers.1.mlp.bias")
    state["extra.weight"] = torch.zeros(3)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    # from_pretrained(output_loading_info=True) returns (model, info): transformers' stub says model
    _, their_info = transformers.JetMoeForCausalLM.from_pretrained(  # pyright: ignore[reportGeneralTypeIssues]
        tmp_path, output_loading_info=True
    )
    loaded = JetMoEForCausalLM.from_pretrained(tmp_path)  # loads, as transformers' does
    torch.testing.assert_close(
        loaded.state_dict()["model.layers.0.mlp.bias"],
        model.state_dict()["model.layers.0.mlp.bias"],
    )
    loaded, info = JetMoEForCausalLM.from_pretrained(tmp_path, output_loading_info=True)  # pyright: ignore[reportGeneralTypeIssues]
    assert (
        set(info["missing_keys"]) == set(their_info["missing_keys"]) == {"model.layers.1.mlp.bias"}
    )
    assert set(info["unexpected_keys"]) == set(their_info["unexpected_keys"]) == {"extra.weight"}
    assert torch.isfinite(loaded.model.layers[1].mlp.bias).all()  # initialised, not empty
    state["model.layers.0.mlp.bias"] = torch.zeros(5)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(RuntimeError):
        transformers.JetMoeForCausalLM.from_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match=r"model.layers.0.mlp.bias.*\[5\]"):
        JetMoEForCausalLM.from_pretrained(tmp_path)
