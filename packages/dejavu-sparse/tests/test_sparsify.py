"""sparsify on tiny random Llama / Mistral / Qwen2 models: exactness at sparsity 0, the gathered
decode path equal to the masked per-token reference, generate at batch 1-16, complete K/V under
head sparsity, thresholds hitting the requested sparsity, calibration files, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from dejavu_sparse import Calibration, DejaVuSparseError, sparse_state, sparsify, unsparsify
from dejavu_sparse.calibration import PROJECTIONS
from helpers import tiny_calibration, tiny_model, token_ids
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import DynamicCache

ARCHS = ("llama", "mistral", "qwen2")
MODES = ("dejavu", "teal", "cats")


@settings(max_examples=6, deadline=None)
@given(arch=st.sampled_from(ARCHS), mode=st.sampled_from(MODES), seed=st.integers(0, 99),
       batch=st.integers(1, 3))  # fmt: skip
def test_sparsity_zero_is_exactly_dense(arch, mode, seed, batch):
    model = tiny_model(arch)
    ids = token_ids(9 * batch, seed=seed).view(batch, 9)
    with torch.no_grad():
        dense = model(ids).logits
        sparsify(model, mode, 0.0, tiny_calibration(arch), prefill=True)
        assert torch.equal(model(ids).logits, dense)
        gen_dense = None
        unsparsify(model)
        gen_dense = model.generate(ids, max_new_tokens=3, do_sample=False)
        sparsify(model, mode, 0.0, tiny_calibration(arch))
        assert torch.equal(model.generate(ids, max_new_tokens=3, do_sample=False), gen_dense)


def _decode_both(model, prompt, step_tokens):
    """Logits of decode steps on the gathered path and on the masked reference path."""
    state = sparse_state(model)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(prompt, cache=cache)
        c2 = copy.deepcopy(cache)
        gathered = model(step_tokens, cache=cache).logits
        for s in state.states:
            s.force_masked = True
        masked = model(step_tokens, cache=c2).logits
        for s in state.states:
            s.force_masked = False
    return gathered, masked


@settings(max_examples=10, deadline=None)
@given(arch=st.sampled_from(ARCHS), mode=st.sampled_from(MODES), batch=st.sampled_from([1, 2, 5]),
       sparsity=st.sampled_from([0.3, 0.5, 0.7]), seed=st.integers(0, 99),
       greedy=st.booleans())  # fmt: skip
def test_gathered_decode_equals_masked_per_token(arch, mode, batch, sparsity, seed, greedy):
    model = tiny_model(arch)
    sparsify(model, mode, sparsity, tiny_calibration(arch), greedy=greedy)
    if mode == "teal" and not greedy:  # uniform: q/k/v and gate/up share one gathered product
        assert {"qkv_t", "gate_up_t"} <= set(sparse_state(model).states[0].w)
    prompt = token_ids(7 * batch, seed=seed).view(batch, 7)
    step = token_ids(batch, seed=seed + 1).view(batch, 1)
    gathered, masked = _decode_both(model, prompt, step)
    torch.testing.assert_close(gathered, masked, atol=2e-5, rtol=2e-5)
    assert sparse_state(model).report()["mean"]["layer"] > 0


@pytest.mark.parametrize("batch", [1, 3])
def test_predictors_without_lookahead(batch):
    """Predictors that read their own block's input: recorded in the manifest, followed by
    sparsify, and the gathered decode still equals the masked reference."""
    from dejavu_sparse import calibrate

    model = tiny_model("llama")
    calib = calibrate(model, token_ids(256), seq_len=64, rank=16, epochs=2, greedy=False,
                      progress=False, lookahead=False)  # fmt: skip
    assert calib.manifest["lookahead"] is False
    sparsify(model, "dejavu", 0.5, calib)
    assert not any(s.lookahead for s in sparse_state(model).states)
    prompt = token_ids(5 * batch, seed=3).view(batch, 5)
    gathered, masked = _decode_both(model, prompt, token_ids(batch, seed=4).view(batch, 1))
    torch.testing.assert_close(gathered, masked, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", [1, 4, 16])
def test_generate_batches(mode, batch):
    model = tiny_model("llama")
    sparsify(model, mode, 0.5, tiny_calibration("llama"))
    ids = token_ids(6 * batch, seed=batch).view(batch, 6)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding on one row
    out = model.generate(
        ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0
    )
    assert out.shape == (batch, 10)
    rep = sparse_state(model).report()
    assert len(rep["layers"]) == 3 and 0 <= rep["mean"]["layer"] < 1
    if batch == 1:  # at batch 16 the union of the rows' selections may cover every row
        assert rep["mean"]["layer"] > 0


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 999), attn_sparsity=st.sampled_from([0.34, 0.5, 0.84]))
def test_head_sparsity_keeps_every_heads_kv(seed, attn_sparsity):
    """Decode with only head sparsity: layer 0's cache equals the dense model's for every head
    and position (its K/V depend only on the embeddings), and every layer caches every KV head at
    every position, so a later token may select any head."""
    dense = tiny_model("llama")
    sparse = tiny_model("llama")
    sparsify(sparse, "dejavu", 0.0, tiny_calibration("llama"), attn_sparsity=attn_sparsity)
    prompt = token_ids(5, seed=seed).view(1, 5)
    steps = token_ids(6, seed=seed + 7)
    caches = []
    with torch.no_grad():
        for model in (dense, sparse):
            cache = DynamicCache(config=model.config)
            model(prompt, cache=cache)
            for t in steps:
                model(t.view(1, 1), cache=cache)
            caches.append(cache)
    assert sparse_state(sparse).report()["mean"]["attn"] > 0
    kd, vd = caches[0].layers[0].keys, caches[0].layers[0].values
    ks, vs = caches[1].layers[0].keys, caches[1].layers[0].values
    assert torch.equal(kd, ks) and torch.equal(vd, vs)
    for layer in caches[1].layers:
        assert layer.keys.shape == (1, 2, 11, 8)
        assert layer.keys.abs().amax(-1).gt(0).all() and layer.values.abs().amax(-1).gt(0).all()


def _dense_site_values(model, ids):
    """|values| at every threshold site of every layer, from the dense model on ``ids``."""
    found = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        sites = {
            "teal.attn_in": (layer.self_attn.q_proj, lambda m, x: x),
            "teal.o_in": (layer.self_attn.o_proj, lambda m, x: x),
            "teal.mlp_in": (layer.mlp.gate_proj, lambda m, x: x),
            "teal.down_in": (layer.mlp.down_proj, lambda m, x: x),
            "cats.gate": (layer.mlp.gate_proj, None),
        }
        for site, (module, fn) in sites.items():
            mlp = layer.mlp

            def hook(module, args, site=site, fn=fn, i=i, mlp=mlp):
                value = args[0]
                if site == "cats.gate":
                    g = mlp.gate_proj
                    value = mlp.act_fn(torch.nn.functional.linear(value, g.weight, g.bias))
                found.setdefault((site, i), []).append(value.detach().abs().reshape(-1))

            hooks.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        for chunk in ids.view(-1, 64):
            model(chunk[None], use_cache=False)
    for h in hooks:
        h.remove()
    return {k: torch.cat(v) for k, v in found.items()}


@settings(max_examples=10, deadline=None)
@given(sparsity=st.floats(0.01, 0.95))
def test_thresholds_hit_requested_sparsity_on_calibration_data(sparsity):
    """Every TEAL and CATS threshold drops the requested fraction of its site's values on the
    calibration text (dense activations) within one point."""
    calib = tiny_calibration("llama")
    values = _dense_site_values(tiny_model("llama"), token_ids(512))
    for (site, layer), v in values.items():
        dropped = float((v <= calib.threshold(site, layer, sparsity)).float().mean())
        assert abs(dropped - sparsity) <= 0.01, (site, layer, dropped, sparsity)


def test_greedy_allocation_meets_weighted_target():
    calib = tiny_calibration("llama")
    model = tiny_model("llama")
    layer = model.model.layers[1]
    sizes = {p: (getattr(layer.self_attn, f"{p}_proj", None) or getattr(layer.mlp, f"{p}_proj")).weight.numel()
             for p in PROJECTIONS}  # fmt: skip
    for target in (0.25, 0.4, 0.5):
        alloc = calib.teal_allocation(1, target)
        weighted = sum(alloc[p] * sizes[p] for p in PROJECTIONS) / sum(sizes.values())
        assert abs(weighted - target) < 0.02
        assert len(set(round(v, 3) for v in alloc.values())) > 1  # not uniform


def test_calibration_roundtrip_and_model_check(tmp_path):
    calib = tiny_calibration("llama")
    path = calib.save(tmp_path / "calib")
    assert sorted(p.name for p in path.iterdir()) == [
        "manifest.json", "predictors.safetensors", "thresholds.safetensors"
    ]  # fmt: skip
    loaded = Calibration.load(path, tiny_model("llama"))
    assert loaded.manifest["model"] == calib.manifest["model"]
    for k, v in calib.tensors.items():
        assert torch.equal(loaded.tensors[k], v)
    a, b = tiny_model("llama"), tiny_model("llama")
    sparsify(a, "dejavu", 0.5, calib)
    sparsify(b, "dejavu", 0.5, path)
    ids = token_ids(6).view(1, 6)
    assert torch.equal(a.generate(ids, max_new_tokens=3), b.generate(ids, max_new_tokens=3))
    with pytest.raises(DejaVuSparseError, match="calibration was made for") as err:
        Calibration.load(path, tiny_model("llama", seed=5))
    assert "\n" not in str(err.value)
    with pytest.raises(DejaVuSparseError, match="calibration was made for"):
        sparsify(tiny_model("llama", hidden_size=72), "teal", 0.4, calib)
    (path / "thresholds.safetensors").write_bytes(b"broken")
    with pytest.raises(DejaVuSparseError, match="unreadable"):
        Calibration.load(path)
    with pytest.raises(DejaVuSparseError, match="no manifest"):
        Calibration.load(tmp_path)


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan"), "half", None])
def test_bad_sparsity_is_one_line(value):
    with pytest.raises(DejaVuSparseError, match="sparsity must be") as err:
        sparsify(tiny_model("llama"), "teal", value, tiny_calibration("llama"))
    assert "\n" not in str(err.value)


def test_unsupported_architecture_and_mode():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(DejaVuSparseError, match="unsupported architecture 'gpt2'") as err:
        sparsify(gpt2, "dejavu", 0.5)
    assert "\n" not in str(err.value)
    with pytest.raises(DejaVuSparseError, match="unknown mode"):
        sparsify(tiny_model("llama"), "relu", 0.5)
    with pytest.raises(DejaVuSparseError, match="needs a calibration"):
        sparsify(tiny_model("llama"), "teal", 0.5)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", MODES)
def test_gpu_generate_matches_masked(mode):
    model = tiny_model("llama").cuda()
    sparsify(model, mode, 0.5, tiny_calibration("llama"))
    prompt = token_ids(12).view(2, 6).cuda()
    gathered, masked = _decode_both(model, prompt, token_ids(2, seed=3).view(2, 1).cuda())
    torch.testing.assert_close(gathered, masked, atol=1e-4, rtol=1e-4)
    out = model.generate(prompt, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, 10)


# -- TEAL's block option ------------------------------------------------------------------------

BLOCKS = (8, 16, 32, 64)  # the tiny model is 48 wide with an 80-wide MLP: short last blocks


@settings(max_examples=10, deadline=None)
@given(arch=st.sampled_from(ARCHS), batch=st.sampled_from([1, 2, 5]), block=st.sampled_from(BLOCKS),
       sparsity=st.sampled_from([0.3, 0.5, 0.7]), seed=st.integers(0, 99),
       greedy=st.booleans())  # fmt: skip
def test_block_gathered_decode_equals_masked_per_token(arch, batch, block, sparsity, seed, greedy):
    model = tiny_model(arch)
    sparsify(model, "teal", sparsity, tiny_calibration(arch), greedy=greedy, block_size=block)
    prompt = token_ids(7 * batch, seed=seed).view(batch, 7)
    step = token_ids(batch, seed=seed + 1).view(batch, 1)
    gathered, masked = _decode_both(model, prompt, step)
    torch.testing.assert_close(gathered, masked, atol=2e-5, rtol=2e-5)
    assert sparse_state(model).report()["mean"]["layer"] > 0


def test_block_selection_keeps_whole_blocks():
    """Every projection input the block mode passes on is zero in whole blocks or not at all."""
    from dejavu_sparse.layers import _mask_input, block_ms

    x = torch.randn(3, 5, 50)
    for block in BLOCKS:
        t = float(block_ms(x, block).sqrt().median())
        y = _mask_input(x, t, block)
        pad = torch.nn.functional.pad(y, (0, -50 % block)).view(3, 5, -1, block)
        kept = pad.ne(0).any(-1)
        full = torch.nn.functional.pad(x, (0, -50 % block)).view(3, 5, -1, block)
        assert torch.equal(pad[kept], full[kept]) and not pad[~kept].any()


@settings(max_examples=6, deadline=None)
@given(sparsity=st.floats(0.05, 0.9), block=st.sampled_from(BLOCKS))
def test_block_thresholds_hit_requested_sparsity_on_calibration_data(sparsity, block):
    """Each block threshold drops the requested fraction of its site's blocks (by RMS) on the
    calibration text within one point."""
    from dejavu_sparse.layers import block_ms

    calib = tiny_calibration("llama")
    model = tiny_model("llama")
    found: dict = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        for site, module in (("attn_in", layer.self_attn.q_proj), ("o_in", layer.self_attn.o_proj),
                             ("mlp_in", layer.mlp.gate_proj), ("down_in", layer.mlp.down_proj)):  # fmt: skip

            def hook(module, args, site=site, i=i):
                found.setdefault((site, i), []).append(block_ms(args[0].detach(), block).flatten())

            hooks.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        for chunk in token_ids(512).view(-1, 64):
            model(chunk[None], use_cache=False)
    for h in hooks:
        h.remove()
    for (site, layer), v in found.items():
        t = calib.threshold(f"teal.{site}.b{block}", layer, sparsity)
        dropped = float((torch.cat(v) <= t * t).float().mean())
        assert abs(dropped - sparsity) <= 0.01, (site, layer, block, dropped, sparsity)


def test_block_sparsity_zero_is_exactly_dense():
    model = tiny_model("llama")
    ids = token_ids(8).view(1, 8)
    with torch.no_grad():
        dense = model.generate(ids, max_new_tokens=3, do_sample=False)
        sparsify(model, "teal", 0.0, tiny_calibration("llama"), block_size=16)
        assert torch.equal(model.generate(ids, max_new_tokens=3, do_sample=False), dense)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"block_size": 0}, "block_size must be a positive integer"),
        ({"block_size": 2.5}, "block_size must be a positive integer"),
        ({"block_size": True}, "block_size must be a positive integer"),
        ({"block_size": 12}, "no TEAL thresholds for block_size=12"),
        ({"block_size": 16, "mode": "cats"}, "applies to mode 'teal' only"),
    ],
)
def test_bad_block_size_is_one_line(kwargs, message):
    kwargs = {"mode": "teal", **kwargs}
    with pytest.raises(DejaVuSparseError, match=message) as err:
        sparsify(tiny_model("llama"), sparsity=0.5, calibration=tiny_calibration("llama"), **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.gpu
@pytest.mark.parametrize("block", [8, 16])
def test_gpu_block_generate_matches_masked(block):
    """On CUDA the block option runs ``gather_blocks``' expanded backend (the gathered-column
    Triton kernel over block-expanded indices); decode equals the masked reference."""
    model = tiny_model("llama").cuda()
    sparsify(model, "teal", 0.5, tiny_calibration("llama"), block_size=block)
    prompt = token_ids(12).view(2, 6).cuda()
    gathered, masked = _decode_both(model, prompt, token_ids(2, seed=3).view(2, 1).cuda())
    torch.testing.assert_close(gathered, masked, atol=1e-4, rtol=1e-4)
    out = model.generate(prompt, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, 10)
