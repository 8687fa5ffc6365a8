"""The cache inside transformers generation, on tiny random Llama-family models."""

from __future__ import annotations

import kvprune
import pytest
import torch
from kv_helpers import tiny_model, token_table
from kvprune import (
    H2O,
    TOVA,
    AdaptiveFastGen,
    FastGen,
    Full,
    HybridFastGen,
    KVPruneCache,
    SnapKV,
    StreamingLLM,
    UnsupportedError,
)
from kvprune.generate import cache_kwarg
from transformers import AttentionInterface, DynamicCache

VOCAB = 101


def batch(b=2, n=24, pad=(0, 5), seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (b, n), generator=gen)
    mask = torch.ones_like(ids)
    for i, p in enumerate(pad[:b]):
        ids[i, :p] = 0
        mask[i, :p] = 0
    return ids, mask


def run(model, cache, ids, mask, **kw):
    return model.generate(
        ids,
        attention_mask=mask,
        return_dict_in_generate=True,
        output_scores=True,
        pad_token_id=0,
        **{cache_kwarg(model): cache},
        **kw,
    )


@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2"])
@pytest.mark.parametrize("sample", [False, True])
def test_full_policy_equals_dense_cache(kind, sample):
    model = tiny_model(kind)
    ids, mask = batch()
    kw = dict(max_new_tokens=8, do_sample=sample, top_k=0 if sample else None)
    torch.manual_seed(1)
    ref = run(model, DynamicCache(config=model.config), ids, mask, **kw)
    torch.manual_seed(1)
    out = run(
        model, KVPruneCache(model, Full(), token_classes_table=token_table()), ids, mask, **kw
    )
    assert torch.equal(ref.sequences, out.sequences)
    for a, b in zip(ref.scores, out.scores, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


# -- ragged cache == masked dense attention, at model level ------------------------------
MASKS: dict[int, torch.Tensor] = {}


def masked_eager(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
    """Dense attention over all cached keys with per-(row, KV head) keep masks from MASKS."""
    g = query.shape[1] // key.shape[1]
    k = key.repeat_interleave(g, 1).float()
    v = value.repeat_interleave(g, 1).float()
    logits = query.float() @ k.transpose(-1, -2) * scaling
    keep = MASKS[module.layer_idx].repeat_interleave(g, 1)[:, :, None, :]  # [B, Hq, 1, n]
    logits = logits.masked_fill(~keep, float("-inf"))
    out = torch.softmax(logits, -1) @ v
    return out.transpose(1, 2).to(query.dtype), None


@pytest.mark.parametrize(
    "policy",
    [
        FastGen(recovery=0.5, frequent_ratio=0.2, local_ratio=0.2),
        FastGen(recovery=0.9, ladder=(("special", "punct", "frequent"),), frequent_ratio=0.25),
        StreamingLLM(kept_fraction=0.4, sinks=2),
        H2O(kept_fraction=0.4),
        TOVA(kept_fraction=0.3),
        SnapKV(kept_fraction=0.4, window=4),
        AdaptiveFastGen(kept_fraction=0.4, window=4, min_window=2),
        AdaptiveFastGen(kept_fraction=0.3, window=6, kernel=3, structural_recovery=0.3),
        HybridFastGen(kept_fraction=0.4, window=4, min_window=2, prompt_rows=12),
    ],
    ids=lambda p: type(p).__name__,
)
def test_pruned_decoding_equals_masked_dense_attention(policy):
    """Step by step: the kvprune model's logits equal a dense model's whose attention masks,
    per layer and KV head, every key the ragged cache does not hold."""
    AttentionInterface.register("kvprune_test_masked", masked_eager)
    model = tiny_model("llama", layers=2)
    ids, mask = batch(b=2, n=30, pad=(0, 6))
    b, n = ids.shape
    cache = KVPruneCache(model, policy, token_classes_table=token_table())
    with torch.no_grad():
        out = model(ids, attention_mask=mask, **{cache_kwarg(model): cache})
        dense_model = tiny_model("llama", layers=2)
        dense_model.load_state_dict(model.state_dict())
        dense_model.set_attn_implementation("sdpa")
        dense_cache = DynamicCache(config=dense_model.config)
        ref = dense_model(ids, attention_mask=mask, **{cache_kwarg(model): dense_cache})
        torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=1e-5)
        dense_model.set_attn_implementation("kvprune_test_masked")
        pad = (mask == 0).sum(-1)
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        for step in range(8):
            total = n + step + 1
            for layer in cache.layers:
                keep = torch.zeros(b, layer.store.n_kv, total, dtype=torch.bool)
                for row in range(b):
                    for h in range(layer.store.n_kv):
                        for q in layer.kept_positions(row, h):
                            keep[row, h, q + int(pad[row])] = True
                        keep[row, h, -1] = True  # the new token attends to itself
                MASKS[layer.layer_idx] = keep
            mask = torch.cat([mask, torch.ones(b, 1, dtype=mask.dtype)], 1)
            out = model(tok, attention_mask=mask, **{cache_kwarg(model): cache})
            ref = dense_model(tok, attention_mask=mask, **{cache_kwarg(model): dense_cache})
            torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=1e-5)
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
    pruned = sum(int(layer.store.lengths.sum()) for layer in cache.layers)
    assert pruned < len(cache.layers) * b * 2 * (n + 8)  # something was actually pruned


@pytest.mark.parametrize(
    "policy",
    [
        FastGen(recovery=0.9, sink_tokens=2),
        H2O(0.5, min_window=4),
        TOVA(0.5, min_window=4),
        StreamingLLM(0.5, min_window=4),
        AdaptiveFastGen(0.5, window=4, min_window=4, structural_recovery=0.05),
    ],
    ids=lambda p: type(p).__name__,
)
def test_batched_eviction_equals_layer_by_layer(policy):
    """Decoding with the layers' evictions batched after each step (the default) keeps, step
    by step, the same entries and gives the same logits as evicting in each layer."""
    model = tiny_model("llama", layers=3)
    ids, mask = batch(b=2, n=24, pad=(0, 5))
    caches = [KVPruneCache(model, policy, token_classes_table=token_table()) for _ in range(2)]
    caches[1].joined = True  # never joins its layers: each evicts on its own
    tok = None
    with torch.no_grad():
        for step in range(16):
            if step:
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            outs = [
                model(ids if step == 0 else tok, attention_mask=mask, **{cache_kwarg(model): c})
                for c in caches
            ]
            torch.testing.assert_close(outs[0].logits, outs[1].logits, atol=0, rtol=0)
            tok = outs[0].logits[:, -1:].argmax(-1)
            for a, b in zip(caches[0].layers, caches[1].layers, strict=True):
                for row in range(2):
                    for head in range(2):
                        assert a.kept_positions(row, head) == b.kept_positions(row, head)
    assert caches[0].arena is not None and caches[1].arena is None
    assert caches[0].arena.batched_steps == 15  # every decoding step, all layers at once
    evicted = sum(int(layer.store.lengths.sum()) for layer in caches[0].layers)
    assert evicted < 3 * 2 * 2 * (24 + 15)  # something was evicted while decoding


def test_memory_stays_bounded_while_decoding():
    model = tiny_model("llama", layers=2)
    ids, mask = batch(b=1, n=40, pad=(0,))
    table = torch.zeros(VOCAB, dtype=torch.int8)  # no special / punctuation tokens
    policy = FastGen(recovery=0.01, ladder=(("frequent", "local"),), sink_tokens=0)
    cache = KVPruneCache(model, policy, token_classes_table=table)
    run(model, cache, ids, mask, max_new_tokens=60, do_sample=False, min_new_tokens=60)
    length = 40 + 59  # tokens cached after the last step
    budget = int(0.6 * length)  # frequent + local: 30% + 30% of the current length
    for layer in cache.layers:
        assert int(layer.store.lengths.max()) == budget
        # grown one segment at a time, by at most an eighth of its length
        assert layer.store.k_pool.shape[0] <= layer.store.lengths.shape[0] * (
            budget + max(cache.slack, budget // 8)
        )


def test_memory_accounting_matches_tensor_sizes():
    model = tiny_model("llama", layers=3)
    ids, mask = batch(b=2, n=32, pad=(0, 3))
    cache = KVPruneCache(model, FastGen(recovery=0.6), token_classes_table=token_table())
    run(model, cache, ids, mask, max_new_tokens=12, do_sample=False)
    mem = cache.memory()
    kv = live = 0
    storages: dict[int, int] = {}  # metadata storages, each counted once (layers share one)
    for layer in cache.layers:
        tensors = [*vars(layer).items(), *vars(layer.store).items()]
        tensors += list(layer.store.params.items())
        for name, t in tensors:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if name in ("k_pool", "v_pool"):
                    kv += storage.nbytes()
                else:
                    storages[storage.data_ptr()] = storage.nbytes()
        live += 2 * layer.store.k_pool.shape[1] * 4 * int(layer.store.lengths.sum())
    meta = sum(storages.values())
    assert cache.arena is not None  # the evicting layers share their metadata
    assert mem == {"kv_allocated": kv, "kv_live": live, "metadata": meta}
    report = cache.report()
    assert report.kv_allocated_bytes == kv
    assert sum(r.allocated_bytes for r in report.requests) == kv
    assert report.kept_bytes == live
    row = 2 * 16 * 4  # K + V, head_dim 16, float32
    for r, n_real in zip(report.requests, [32 + 11, 29 + 11], strict=True):
        assert r.tokens == n_real
        assert r.full_bytes == n_real * 3 * 2 * row
        assert r.kept_bytes == sum(map(sum, r.kept)) * row
        assert r.freed_bytes == r.full_bytes - r.kept_bytes >= 0
        assert r.slack_bytes == r.allocated_bytes - r.kept_bytes >= 0
        assert len(r.policies) == 3 and all(len(x) == 2 for x in r.policies)
        assert sum(r.policy_counts().values()) == 6


def test_generate_helper_returns_output_and_report():
    model = tiny_model("llama")
    ids, mask = batch(b=1, n=20, pad=(0,))
    out, report = kvprune.generate(
        model,
        ids,
        attention_mask=mask,
        max_new_tokens=5,
        do_sample=False,
        pad_token_id=0,
        policy=FastGen(recovery=0.8),
        token_classes_table=token_table(),
    )
    assert out.shape == (1, 25)
    assert report.requests[0].tokens == 24
    assert "freed" in report.summary()


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_model_keeps_its_attention_implementation(impl):
    """Building a cache and generating with it leaves the model as it was: other calls run
    the model's own attention (the fix: the cache used to switch the model for good)."""
    model = tiny_model("llama")
    model.set_attn_implementation(impl)
    ids, mask = batch()
    with torch.no_grad():
        ref = model(ids, attention_mask=mask).logits
        cache = KVPruneCache(model, Full(), token_classes_table=token_table())
        assert model.config._attn_implementation == impl
        run(model, cache, ids, mask, max_new_tokens=3, do_sample=False)
        assert model.config._attn_implementation == impl
        torch.testing.assert_close(model(ids, attention_mask=mask).logits, ref)
        with pytest.raises(UnsupportedError):  # a failing kvprune call restores it too
            model(ids[:1], **{cache_kwarg(model): cache})
        assert model.config._attn_implementation == impl


# -- clear errors -------------------------------------------------------------------------
def test_unsupported_architecture():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedError, match="not model_type='gpt2'"):
        KVPruneCache(gpt2)


def test_sliding_window_model_is_rejected():
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        sliding_window=16,
    )
    with pytest.raises(UnsupportedError, match="sliding-window"):
        KVPruneCache(MistralForCausalLM(config))


def test_beam_search_is_rejected():
    model = tiny_model("llama")
    ids, mask = batch(b=1, n=10, pad=(0,))
    with pytest.raises(UnsupportedError, match="beam search"):
        kvprune.generate(model, ids, attention_mask=mask, num_beams=2, max_new_tokens=3)
    cache = KVPruneCache(model, token_classes_table=token_table())
    with pytest.raises(UnsupportedError, match="beam search"):
        run(model, cache, ids, mask, num_beams=2, max_new_tokens=3)


def test_right_padding_and_embeddings_are_rejected():
    model = tiny_model("llama")
    ids, mask = batch(b=2, n=10, pad=(0, 0))
    mask[1, -2:] = 0
    with pytest.raises(UnsupportedError, match="left padding"):
        run(
            model,
            KVPruneCache(model, token_classes_table=token_table()),
            ids,
            mask,
            max_new_tokens=2,
        )
    cache = KVPruneCache(model, token_classes_table=token_table())
    embeds = model.get_input_embeddings()(ids)
    with pytest.raises(UnsupportedError, match="needs input_ids"), torch.no_grad():
        model(inputs_embeds=embeds, **{cache_kwarg(model): cache})


def test_crop_is_rejected():
    model = tiny_model("llama")
    ids, _mask = batch(b=1, n=10, pad=(0,))
    cache = KVPruneCache(model, token_classes_table=token_table())
    with torch.no_grad():
        model(ids, **{cache_kwarg(model): cache})
    with pytest.raises(UnsupportedError, match="cropped"):
        cache.crop(-1)


# -- what a new user hit ------------------------------------------------------------------
@pytest.mark.parametrize(
    "policy",
    [
        FastGen(),
        AdaptiveFastGen(),
        HybridFastGen(),
        H2O(0.3),
        TOVA(0.3),
        SnapKV(0.3),
        StreamingLLM(0.3),
    ],
    ids=lambda p: type(p).__name__,
)
def test_one_token_prompt_keeps_a_minimum_window(policy):
    """A one-token prompt used to leave FastGen with nothing but special tokens (4% kept,
    'the the the'): every policy keeps at least its last ``min_window`` tokens."""
    model = tiny_model("llama")
    ids = torch.tensor([[40]])
    cache = KVPruneCache(model, policy, token_classes_table=token_table())
    run(model, cache, ids, torch.ones_like(ids), max_new_tokens=24, do_sample=False)
    for layer in cache.layers:
        for h in range(layer.store.n_kv):
            kept = layer.kept_positions(0, h)
            assert set(range(24 - policy.min_window, 24)) <= set(kept)


def test_a_cache_continues_its_conversation():
    """A second ``generate`` on the longer input (the next turn) continues the cache; with
    ``Full`` it equals a dense cache doing the same (the fix: it used to fail with 'cannot
    reshape tensor of 0 elements' or 'one token per step')."""
    model = tiny_model("llama")
    ids, mask = batch(b=1, n=16, pad=(0,))
    kw = dict(max_new_tokens=5, do_sample=False)
    caches = [
        DynamicCache(config=model.config),
        KVPruneCache(model, Full(), token_classes_table=token_table()),
    ]
    outs = []
    for cache in caches:
        first = run(model, cache, ids, mask, **kw).sequences
        turn = torch.cat([first, torch.tensor([[17, 23, 31, 44]])], 1)
        second = run(model, cache, turn, torch.ones_like(turn), **kw)
        outs.append(second)
    assert torch.equal(outs[0].sequences, outs[1].sequences)
    for a, b in zip(outs[0].scores, outs[1].scores, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_multi_token_continuation_equals_token_by_token():
    model = tiny_model("llama")
    ids, _ = batch(b=2, n=20, pad=(0, 0))
    more = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(3))
    logits = []
    for chunked in (True, False):
        cache = KVPruneCache(model, H2O(0.4), token_classes_table=token_table())
        with torch.no_grad():
            model(ids, **{cache_kwarg(model): cache})
            if chunked:
                logits.append(model(more, **{cache_kwarg(model): cache}).logits)
            else:
                steps = [
                    model(more[:, t : t + 1], **{cache_kwarg(model): cache}).logits
                    for t in range(6)
                ]
                logits.append(torch.cat(steps, 1))
    torch.testing.assert_close(logits[0], logits[1], atol=1e-5, rtol=1e-5)


def test_a_new_batch_on_a_used_cache_is_refused_in_one_line():
    model = tiny_model("llama")
    ids, mask = batch(b=2, n=16, pad=(0, 0))
    cache = KVPruneCache(model, H2O(0.5), token_classes_table=token_table())
    run(model, cache, ids, mask, max_new_tokens=4, do_sample=False)
    short, short_mask = batch(b=2, n=8, pad=(0, 0), seed=1)
    with pytest.raises(UnsupportedError, match="adds no tokens"):
        run(model, cache, short, short_mask, max_new_tokens=4, do_sample=False)
    with pytest.raises(UnsupportedError, match="batch of 2 rows"), torch.no_grad():
        model(short[:1], **{cache_kwarg(model): cache})


def test_missing_tokenizer_and_bad_windows_are_refused():
    model = tiny_model("llama")
    for policy in (FastGen(), AdaptiveFastGen(), HybridFastGen()):
        with pytest.raises(UnsupportedError, match="pass tokenizer="):
            KVPruneCache(model, policy)
    KVPruneCache(model, H2O(0.5))  # policies that ignore token classes need no tokenizer
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        SnapKV(window=0)
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        AdaptiveFastGen(window=0)
    with pytest.raises(ValueError, match="kept_fraction"):
        H2O(kept_fraction=0)
    with pytest.raises(ValueError, match="prompt_share"):
        HybridFastGen(prompt_share=1.5)
    with pytest.raises(ValueError, match="recent_share"):
        AdaptiveFastGen(recent_share=-0.1)
    with pytest.raises(ValueError, match="prompt_rows"):
        HybridFastGen(prompt_rows=0)


def test_report_means_what_it_says():
    """``Full`` frees nothing (it printed negative freed bytes), ``H2O(0.5)`` keeps half of
    the sequence after a long generation (it kept 21.7%: budgets were fractions of the
    prompt), and the growth slack is reported apart from the kept entries."""
    model = tiny_model("llama")
    ids, mask = batch(b=1, n=40, pad=(0,))
    cache = KVPruneCache(model, Full(), token_classes_table=token_table())
    run(model, cache, ids, mask, max_new_tokens=8, do_sample=False)
    report = cache.report()
    assert report.freed_bytes == 0 and report.kept_fraction == 1.0
    assert report.slack_bytes > 0 and "growth slack" in report.summary()
    assert "freed 0.00 MB" in report.summary() and "-0." not in report.summary()
    cache = KVPruneCache(model, H2O(0.5), token_classes_table=token_table())
    run(model, cache, ids, mask, max_new_tokens=120, min_new_tokens=120, do_sample=False)
    assert abs(cache.report().kept_fraction - 0.5) < 0.01


def test_prefill_all_equals_the_cache_a_model_call_builds():
    """One recorded prefill compressed into several caches at once (profiles shared between
    policies of the same window) keeps what each cache keeps when the model runs the prompt,
    padding included, and decodes the same next token."""
    from kvprune.cache import prefill_all
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    model = tiny_model("llama")
    ids, mask = batch(b=2, n=40, pad=(0, 7))
    policies = [
        FastGen(recovery=0.9),
        FastGen(kept_fraction=0.5),
        H2O(0.5),
        AdaptiveFastGen(0.5, window=8),
        SnapKV(0.5, window=8),
        TOVA(0.5),
        StreamingLLM(0.5),
    ]
    states: dict[int, tuple] = {}

    def record(module, query, key, value, attention_mask, **kw):
        states[module.layer_idx] = (query, key, value)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kw)

    AttentionInterface.register("kvprune_test_record", record)
    AttentionMaskInterface.register("kvprune_test_record", ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    model.set_attn_implementation("kvprune_test_record")
    try:
        with torch.no_grad():
            model(ids, attention_mask=mask, use_cache=False)
    finally:
        model.set_attn_implementation("sdpa")
    shared = [KVPruneCache(model, p, token_classes_table=token_table()) for p in policies]
    prefill_all(shared, [states[i] for i in range(len(states))], ids, mask)
    step = torch.randint(3, VOCAB, (2, 1), generator=torch.Generator().manual_seed(5))
    step_mask = torch.cat([mask, torch.ones_like(step)], 1)
    for policy, cache in zip(policies, shared, strict=True):
        direct = KVPruneCache(model, policy, token_classes_table=token_table())
        with torch.no_grad():
            model(ids, attention_mask=mask, **{cache_kwarg(model): direct})
        for a, b in zip(direct.layers, cache.layers, strict=True):
            for row in range(2):
                for head in range(2):
                    assert a.kept_positions(row, head) == b.kept_positions(row, head), policy
        with torch.no_grad():
            outs = [
                model(step, attention_mask=step_mask, **{cache_kwarg(model): c}).logits
                for c in (direct, cache)
            ]
        torch.testing.assert_close(outs[0], outs[1], atol=1e-4, rtol=1e-4)
