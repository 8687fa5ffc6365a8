"""One frozen base serves every role: storage, reference exactness, gradients, save/load."""

import json

import pytest
import torch
from perl_rlhf import LoraSpec, PerlError, PerlModel
from perl_rlhf.model import position_ids
from perl_testlib import perturb_lora, tiny


def _batch(vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    mask[2, 8:] = 0  # right padding
    return ids, mask


def _storages(module):
    return {
        p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in module.parameters()
    }


def test_no_second_copy_of_the_base():
    base, tok = tiny()
    base_ptrs = _storages(base)
    base_bytes = sum(base_ptrs.values())
    model = PerlModel(base, lora=LoraSpec(rank=4), tokenizer=tok)
    ptrs = _storages(model)
    # Every base storage is still the one storage (no copy), and everything else is small.
    assert set(base_ptrs) <= set(ptrs)
    extra = sum(n for p, n in ptrs.items() if p not in base_ptrs)
    lora_and_heads = sum(
        p.numel() * p.element_size() for r in model.roles for p in model.role_parameters(r)
    )
    assert extra == lora_and_heads
    assert extra < 0.5 * base_bytes
    # Parameters seen through every role point at the same base storage.
    for role in ("policy", "reference", "value", "reward"):
        with model.use(role) as lm:
            assert set(_storages(lm)) - set(ptrs) == set()


def test_full_fine_tuning_makes_separate_copies():
    base, tok = tiny()
    model = PerlModel(base, roles=("policy", "value"), lora=None, tokenizer=tok)
    with model.use("policy") as a, model.use("reference") as b:
        assert not set(_storages(a)) & set(_storages(b))
        assert not any(p.requires_grad for p in b.parameters())


@pytest.mark.parametrize("targets", ["attention", "all-linear"])
def test_reference_equals_plain_base_logits_exactly(targets):
    base, tok = tiny()
    ids, mask = _batch(len(tok))
    with torch.no_grad():
        plain = base(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits
    model = PerlModel(base, lora=LoraSpec(rank=4, targets=targets), tokenizer=tok)
    perturb_lora(model)
    with torch.no_grad():
        ref = model.logits("reference", ids, mask)
        pol = model.logits("policy", ids, mask)
        ref_again = model.logits("reference", ids, mask)
    assert torch.equal(ref, plain)
    assert torch.equal(ref_again, plain)
    assert not torch.allclose(pol, plain)


def test_policy_equals_reference_at_initialisation():
    base, tok = tiny()
    model = PerlModel(base, lora=LoraSpec(rank=2), tokenizer=tok)
    ids, mask = _batch(len(tok))
    with torch.no_grad():
        assert torch.equal(model.logits("policy", ids, mask), model.logits("reference", ids, mask))


def test_targets_attention_only_vs_all_linear():
    base, tok = tiny()
    att = PerlModel(base, roles=("policy",), lora=LoraSpec(rank=2), tokenizer=tok)
    names = {
        n.split(".lora_")[0].split(".")[-1] for n, _ in att.named_parameters() if "lora_A" in n
    }
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj"}
    base, tok = tiny()
    lin = PerlModel(base, roles=("policy",), lora=LoraSpec(rank=2, targets="all-linear"))
    names = {
        n.split(".lora_")[0].split(".")[-1] for n, _ in lin.named_parameters() if "lora_A" in n
    }
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    with pytest.raises(PerlError, match="not in the model"):
        PerlModel(tiny()[0], roles=("policy",), lora=LoraSpec(targets=("nope",)))


def test_gradients_reach_only_trainable_adapters_and_heads():
    base, tok = tiny()
    model = PerlModel(base, lora=LoraSpec(rank=4), tokenizer=tok)
    perturb_lora(model)
    with torch.no_grad():  # a zero-initialised value head passes no gradient to its adapter
        model.head("value").weight.normal_()
    model.set_trainable(("policy", "value"))
    ids, mask = _batch(len(tok))
    loss = model.logits("policy", ids, mask).logsumexp(-1).mean()
    loss = loss + model.values(ids, mask).mean() + model.scores(ids, mask).sum()
    with torch.no_grad():
        model.logits("reference", ids, mask)  # switching to the reference changes nothing
    loss.backward()
    trainable = {id(p) for r in ("policy", "value") for p in model.role_parameters(r)}
    for name, p in model.named_parameters():
        if id(p) in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


@pytest.mark.parametrize("lora", [LoraSpec(rank=4), None], ids=["lora", "full"])
def test_gradient_checkpointing_recomputes_layers_and_keeps_the_gradients(lora):
    grads, calls = [], []
    for gc in (False, True):
        base, tok = tiny()
        model = PerlModel(
            base, roles=("reward",), lora=lora, tokenizer=tok, gradient_checkpointing=gc
        )
        if lora is not None:
            perturb_lora(model)
        count = [0]
        # transformers checkpoints a layer's forward, so a pre-hook inside it (its MLP) runs
        # again when the backward pass recomputes it (a post-hook may not: the recompute stops
        # once the saved tensors are rebuilt).
        mlp = base.get_submodule("model.layers.0.mlp")
        mlp.register_forward_pre_hook(lambda *_, c=count: c.__setitem__(0, c[0] + 1))
        model.train()
        ids, mask = _batch(len(tok))
        (model.scores(ids, mask) ** 2).sum().backward()
        grads.append([p.grad.clone() for p in model.trainable_parameters() if p.grad is not None])
        calls.append(count[0])
    assert calls == [1, 2]
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_adapters_and_heads_round_trip_through_peft_format(tmp_path):
    from peft import PeftModel

    base, tok = tiny()
    model = PerlModel(base, lora=LoraSpec(rank=4, alpha=8, dropout=0.1), tokenizer=tok)
    perturb_lora(model)
    with torch.no_grad():
        model.head("reward").weight.normal_()
        model.head("reward").bias.fill_(0.25)
    model.save("reward", tmp_path / "rm")
    model.save("policy", tmp_path / "pol")
    assert (tmp_path / "rm" / "adapter_config.json").exists()
    assert json.loads((tmp_path / "rm" / "adapter_config.json").read_text())["r"] == 4
    ids, mask = _batch(len(tok))
    model.eval()  # dropout 0.1 in training mode would make two forward passes differ
    with torch.no_grad():
        want_scores = model.scores(ids, mask)
        want_logits = model.logits("policy", ids, mask)

    base2, _ = tiny()
    fresh = PerlModel(base2, lora=LoraSpec(rank=2), tokenizer=tok)
    fresh.load("reward", tmp_path / "rm")
    fresh.load("policy", tmp_path / "pol")
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh.scores(ids, mask), want_scores)
        assert torch.equal(fresh.logits("policy", ids, mask), want_logits)
    assert torch.equal(fresh.head("reward").weight, model.head("reward").weight)
    assert fresh.lora_specs["reward"].rank == 4
    # peft itself reads the adapter.
    base3, _ = tiny()
    peft_model = PeftModel.from_pretrained(base3, str(tmp_path / "pol"))
    with torch.no_grad():
        got = peft_model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits
    assert torch.equal(got, want_logits)


def test_full_weights_round_trip(tmp_path):
    base, tok = tiny()
    model = PerlModel(base, roles=("reward",), lora=None, tokenizer=tok)
    with torch.no_grad():
        next(model.parameters()).add_(0.1)
    model.save("reward", tmp_path / "rm")
    ids, mask = _batch(len(tok))
    fresh = PerlModel(tiny()[0], roles=("reward",), lora=None, tokenizer=tok)
    fresh.base_fingerprint = model.base_fingerprint  # the saved model is a trained copy
    fresh.load("reward", tmp_path / "rm")
    with torch.no_grad():
        assert torch.equal(fresh.scores(ids, mask), model.scores(ids, mask))


def test_adapter_from_another_base_is_one_clear_line(tmp_path):
    base, tok = tiny(seed=0)
    PerlModel(base, roles=("reward",), lora=LoraSpec(rank=2), tokenizer=tok).save(
        "reward", tmp_path / "a"
    )
    other = PerlModel(tiny(seed=5)[0], lora=LoraSpec(rank=2), tokenizer=tok)
    with pytest.raises(PerlError, match="trained on another base model") as e:
        other.load("reward", tmp_path / "a")
    assert "\n" not in str(e.value)
    wider = PerlModel(tiny(hidden=48)[0], lora=LoraSpec(rank=2), tokenizer=tok)
    with pytest.raises(PerlError, match="another base model"):
        wider.load("reward", tmp_path / "a")


def test_different_tokenizer_is_one_clear_line(tmp_path):
    from perl_testlib import char_tokenizer

    base, tok = tiny()
    PerlModel(base, roles=("reward",), lora=LoraSpec(rank=2), tokenizer=tok).save(
        "reward", tmp_path / "a"
    )
    base2, _ = tiny()
    other_tok = char_tokenizer(extra="éü")
    policy = PerlModel(base2, lora=LoraSpec(rank=2), tokenizer=other_tok)
    with pytest.raises(PerlError, match="different tokenizer"):
        policy.load("reward", tmp_path / "a")


def test_missing_head_and_wrong_role(tmp_path):
    base, tok = tiny()
    model = PerlModel(base, lora=LoraSpec(rank=2), tokenizer=tok)
    model.save("policy", tmp_path / "p")
    with pytest.raises(PerlError, match=r"not a reward one|no head"):
        model.load("reward", tmp_path / "p")
    with pytest.raises(PerlError, match="no such adapter directory"):
        model.load("reward", tmp_path / "missing")
