"""The model: streaming decode equals the full forward, causality, chunk remainders, generate,
transformers behaviour (loss, outputs, save/load, Auto classes), training features."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from megalodon_model import (
    MegalodonCache,
    MegalodonConfig,
    MegalodonConfigError,
    MegalodonForCausalLM,
    MegalodonModel,
    convert_reference_state_dict,
)
from megalodon_testlib import TINY, tiny_model

from tensor_utils_dev.testing import assert_close

MODEL = tiny_model()


@settings(max_examples=12, deadline=None)
@given(length=st.integers(1, 30), pieces=st.lists(st.integers(1, 11), min_size=1, max_size=6))
def test_streaming_in_pieces_equals_the_full_forward(length, pieces):
    """Any split of the sequence (single tokens, pieces crossing chunk boundaries of 8)."""
    ids = torch.randint(
        0, TINY["vocab_size"], (2, length), generator=torch.Generator().manual_seed(length)
    )
    with torch.no_grad():
        full = MODEL(ids, use_cache=False).logits
        cache, outs, start = MegalodonCache(MODEL.config), [], 0
        for size in pieces * length:
            if start >= length:
                break
            outs.append(MODEL(ids[:, start : start + size], cache=cache).logits)
            start += size
        if start < length:
            outs.append(MODEL(ids[:, start:], cache=cache).logits)
    assert_close(torch.cat(outs, 1), full, atol=2e-5, rtol=1e-4)
    assert cache.get_seq_length() == length


@settings(max_examples=10, deadline=None)
@given(length=st.integers(2, 26), t=st.integers(0, 24), seed=st.integers(0, 1000))
def test_causality_outputs_before_t_ignore_later_inputs(length, t, seed):
    t = t % (length - 1)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, TINY["vocab_size"], (1, length), generator=gen)
    changed = ids.clone()
    changed[:, t + 1 :] = torch.randint(0, TINY["vocab_size"], (1, length - t - 1), generator=gen)
    with torch.no_grad():
        a = MODEL(ids, use_cache=False).logits[:, : t + 1]
        b = MODEL(changed, use_cache=False).logits[:, : t + 1]
    assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_cache_size_is_flat_after_the_first_chunk():
    cache, sizes = MegalodonCache(MODEL.config), []
    ids = torch.randint(0, TINY["vocab_size"], (1, 64))
    with torch.no_grad():
        for t in range(64):
            MODEL(ids[:, t : t + 1], cache=cache)
            sizes.append(cache.nbytes())
    chunk = TINY["chunk_size"]
    # the same position inside a chunk holds the same bytes in every later chunk
    assert sizes[chunk - 1 :: chunk] == [sizes[chunk - 1]] * len(sizes[chunk - 1 :: chunk])
    assert max(sizes) == max(sizes[:chunk])


def test_generate_equals_greedy_full_recomputation():
    ids = torch.randint(0, TINY["vocab_size"], (2, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = MODEL.generate(ids, max_new_tokens=20, do_sample=False)  # pyright: ignore[reportAttributeAccessIssue]  (transformers types generate() for its Protocol)
        x = ids
        for _ in range(20):
            nxt = MODEL(x, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            x = torch.cat([x, nxt], 1)
    assert torch.equal(out, x)


def test_generate_from_inputs_embeds_and_continued_generation_equal_one_run():
    """A prompt given as embeddings generates what its ids do; a second ``generate`` call that
    carries the cache continues exactly where one longer call would be; a prefill in chunks of
    4 tokens (``prefill_chunk_size``) changes nothing."""
    ids = torch.randint(0, TINY["vocab_size"], (2, 11), generator=torch.Generator().manual_seed(5))
    gen = MODEL.generate  # pyright: ignore[reportAttributeAccessIssue]  (transformers types generate() for its Protocol)
    with torch.no_grad():
        whole = gen(ids, max_new_tokens=14, do_sample=False)
        from_embeds = gen(inputs_embeds=MODEL.model.embed(ids), max_new_tokens=14, do_sample=False)
        cache = MegalodonCache(MODEL.config)
        first = gen(ids, cache=cache, max_new_tokens=6, do_sample=False)
        second = gen(first, cache=cache, max_new_tokens=8, do_sample=False)
        chunked_prefill = gen(ids, prefill_chunk_size=4, max_new_tokens=14, do_sample=False)
    assert torch.equal(from_embeds, whole[:, ids.shape[1] :])
    assert torch.equal(chunked_prefill, whole)
    assert torch.equal(second, whole)
    assert cache.get_seq_length() == whole.shape[1] - 1


def test_generate_with_left_padding_matches_each_row_alone():
    """Rows whose padding fills whole chunks (chunk 8): padded keys and norm statistics are
    masked, and CEMA sees zeros there, so each row equals its own unpadded run."""
    gen = torch.Generator().manual_seed(3)
    short = torch.randint(1, TINY["vocab_size"], (1, 4), generator=gen)
    long = torch.randint(1, TINY["vocab_size"], (1, 12), generator=gen)
    ids = torch.cat([torch.cat([torch.zeros(1, 8, dtype=torch.long), short], 1), long])
    mask = torch.ones_like(ids)
    mask[0, :8] = 0
    with torch.no_grad():
        batched = MODEL(ids, attention_mask=mask, use_cache=False).logits
        alone = MODEL(short, use_cache=False).logits
    assert_close(batched[0, 8:], alone[0], atol=2e-5, rtol=1e-4)


def test_loss_is_transformers_loss_and_honours_num_items_in_batch():
    ids = torch.randint(0, TINY["vocab_size"], (2, 12))
    labels = ids.clone()
    labels[0, :4] = -100
    out = MODEL(ids, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, TINY["vocab_size"])
    want = torch.nn.functional.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=-100)
    assert_close(out.loss, want, atol=1e-6, rtol=1e-6)
    summed = MODEL(ids, labels=labels, num_items_in_batch=torch.tensor(7)).loss
    total = torch.nn.functional.cross_entropy(
        logits, labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
    )
    assert_close(summed, total / 7, atol=1e-5, rtol=1e-5)


def test_output_options():
    ids = torch.randint(0, TINY["vocab_size"], (1, 9))
    out = MODEL(ids, output_hidden_states=True)
    assert len(out.hidden_states) == TINY["num_hidden_layers"] + 1
    as_tuple = MODEL(ids, return_dict=False, use_cache=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], out.logits)
    assert MODEL(ids, use_cache=False).cache is None
    assert MODEL(ids, logits_to_keep=1).logits.shape[1] == 1
    with pytest.raises(ValueError, match="output_attentions is not supported"):
        MODEL(ids, output_attentions=True)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        MODEL()
    with pytest.raises(ValueError, match="attention_mask has 3 columns"):
        MODEL(ids, attention_mask=torch.ones(1, 3))


def test_inputs_embeds_equal_input_ids():
    ids = torch.randint(0, TINY["vocab_size"], (1, 9))
    with torch.no_grad():
        a = MODEL(ids, use_cache=False).logits
        b = MODEL(inputs_embeds=MODEL.model.embed(ids), use_cache=False).logits
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": 30}, "norm_num_groups=4 does not divide hidden_size=30"),
        ({"num_attention_heads": 3}, "num_attention_heads=3 does not divide z_dim=16"),
        ({"z_dim": 18, "num_attention_heads": 2}, "must be even for rotary"),
        ({"chunk_size": 0}, "chunk_size must be a positive int"),
        ({"cema_backend": "cuda"}, "cema_backend 'cuda' is not one of"),
        ({"norm_num_groups": 32}, "needs prior_count >= 2"),
        ({"model_dim": 64, "hidden_size": 32}, "name the same setting with different values"),
        ({"dropout": 1.5}, "dropout must be in"),
    ],
)
def test_contradictory_config_is_one_line(overrides, message):
    with pytest.raises(MegalodonConfigError, match=message) as err:
        MegalodonConfig(**{**TINY, **overrides})
    assert "\n" not in str(err.value)


def test_unknown_keys_are_kept_and_reference_names_are_read(tmp_path):
    cfg = MegalodonConfig(**{**TINY, "some_future_key": 3}, model_dim=32, num_layers=2)
    assert cfg.some_future_key == 3 and cfg.hidden_size == 32
    model = MegalodonForCausalLM(cfg)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["some_future_key"] == 3
    assert saved["auto_map"]["AutoModelForCausalLM"].endswith("MegalodonForCausalLM")
    from transformers import AutoModel, AutoModelForCausalLM

    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(again, MegalodonForCausalLM)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert isinstance(AutoModel.from_pretrained(tmp_path), MegalodonModel)


def test_reference_checkpoint_names_convert():
    ref = {}
    for name, t in MODEL.state_dict().items():
        name = name.replace("model.final_norm.", "output.final_norm.")
        name = name.replace("lm_head.", "output.output.").removeprefix("model.")
        ref[name] = t
    ref["rope.freqs"] = torch.zeros(4)
    converted = convert_reference_state_dict(ref)
    assert set(converted) == set(MODEL.state_dict())
    with pytest.raises(KeyError, match="no Megalodon counterpart"):
        convert_reference_state_dict({"decoder.weight": torch.zeros(1)})


def test_gradient_checkpointing_gives_the_same_gradients():
    ids = torch.randint(0, TINY["vocab_size"], (2, 20))
    grads = []
    for checkpointing in (False, True):
        model = tiny_model()
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(ids, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)


def test_torch_compile_on_the_pytorch_path():
    model = tiny_model()
    ids = torch.randint(0, TINY["vocab_size"], (2, 19))
    eager = model(ids, use_cache=False).logits
    compiled = torch.compile(lambda x: model(x, use_cache=False).logits, backend="aot_eager")
    assert_close(compiled(ids), eager, atol=1e-5, rtol=1e-5)


def test_pretraining_steps_reduce_the_loss():
    """A tiny pre-training run on the CPU: a repeating pattern gets learned."""
    torch.manual_seed(0)
    model = MegalodonForCausalLM(MegalodonConfig(**TINY)).train()
    ids = torch.arange(24).remainder(5)[None].repeat(2, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_bfloat16_forward_runs_and_matches_float32_roughly():
    ids = torch.randint(0, TINY["vocab_size"], (1, 17))
    with torch.no_grad():
        ref = MODEL(ids, use_cache=False).logits
        low = tiny_model().to(torch.bfloat16)(ids, use_cache=False).logits  # pyright: ignore[reportArgumentType]  (transformers types .to() wrongly)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max()
