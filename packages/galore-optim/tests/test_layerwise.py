"""Layer-wise mode: accumulation equivalence, clipping, one LR clock."""

import pytest
import torch
from galore_optim import GaLoreAdafactor, GaLoreAdamW, LayerwiseGaLore
from galore_testlib import batches, galore_groups, lm_loss, max_param_diff, tiny_model, train


def _layerwise_train(model, optimizer, data, k, *, max_grad_norm=None, scheduler=None):
    lw = LayerwiseGaLore(optimizer, accumulation_steps=k, max_grad_norm=max_grad_norm)
    norms = []
    for ids in data:
        for micro in ids.chunk(k):
            (lm_loss(model, micro) / k).backward()
            # Gradients are consumed during backward: no full gradient survives it
            # except on refresh steps (kept until the last micro-batch).
        norms.append(lw.step())
        if scheduler is not None:
            scheduler.step()
    lw.remove()
    return norms


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("stagger", [False, True])
def test_accumulation_matches_one_big_batch(k, stagger):
    """k micro-batches in layer-wise mode == one big batch with the regular step()."""
    data = batches(7, batch=8)  # update_proj_gap=3: refresh steps 0, 3, 6 (or staggered)
    ref = tiny_model()
    sched = lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0 / (1 + s))  # noqa: E731
    ref_opt = GaLoreAdamW(galore_groups(ref, stagger=stagger), lr=1e-2, weight_decay=0.1)
    train(ref, ref_opt, data, scheduler=sched(ref_opt))
    lw_model = tiny_model()
    opt = GaLoreAdamW(galore_groups(lw_model, stagger=stagger), lr=1e-2, weight_decay=0.1)
    s = sched(opt)
    _layerwise_train(lw_model, opt, data, k, scheduler=s)
    assert max_param_diff(ref, lw_model) < 2e-5
    # One LR clock: the single scheduler advanced once per optimizer step.
    assert s.last_epoch == len(data)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 / (1 + len(data)))
    for p in lw_model.parameters():
        assert p.grad is None


def test_adafactor_bf16_layerwise_matches_regular_step():
    """Adafactor upcasts half-precision gradients in layer-wise mode as in its regular step."""
    data = batches(4, batch=8)
    ref, lw_model = tiny_model().bfloat16(), tiny_model().bfloat16()
    train(ref, GaLoreAdafactor(galore_groups(ref)), data)
    opt = GaLoreAdafactor(galore_groups(lw_model))
    _layerwise_train(lw_model, opt, data, 1)
    assert max_param_diff(ref, lw_model) == 0
    assert all(
        v.dtype == torch.float32
        for s in opt.state.values()
        for v in s.values()
        if torch.is_tensor(v) and v.is_floating_point() and v.dim() > 0
    )


def test_full_gradients_freed_between_micro_batches():
    m = tiny_model()
    opt = GaLoreAdamW(galore_groups(m), lr=1e-3)
    lw = LayerwiseGaLore(opt, accumulation_steps=2)
    ids = batches(2)
    # Step 0 refreshes: the full gradient is kept for the SVD until the last micro-batch.
    (lm_loss(m, ids[0]) / 2).backward()
    assert m.attn.weight.grad is not None
    (lm_loss(m, ids[0]) / 2).backward()
    lw.step()
    # Step 1 does not refresh: GaLore weights' full gradients are freed in the hook.
    (lm_loss(m, ids[1]) / 2).backward()
    assert m.attn.weight.grad is None and m.mlp_up.weight.grad is None
    assert m.embed.weight.grad is not None  # plain params accumulate as usual
    (lm_loss(m, ids[1]) / 2).backward()
    lw.step()
    assert m.embed.weight.grad is None


@pytest.mark.parametrize("k", [1, 3])
def test_clipping_uses_one_global_norm(k):
    data = batches(5, batch=6)
    norms = {}
    models = {}
    for kk in (1, k):
        m = tiny_model()
        opt = GaLoreAdamW(galore_groups(m), lr=1e-2)
        norms[kk] = _layerwise_train(m, opt, data, kk, max_grad_norm=0.05)
        models[kk] = m
    assert max_param_diff(models[1], models[k]) < 2e-5
    assert norms[1] == pytest.approx(norms[k], rel=1e-4)
    # The norm is that of the gradients the optimizer consumes: projected for GaLore weights.
    m = tiny_model()
    opt = GaLoreAdamW(galore_groups(m), lr=1e-2)
    lm_loss(m, data[0]).backward()
    expected = 0.0
    for group in opt.param_groups:
        for p in group["params"]:
            expected += opt.project_grad(p, group, p.grad).norm().item() ** 2
    assert norms[1][0] == pytest.approx(expected**0.5, rel=1e-5)
    # Clipping changes the trajectory (it is not a no-op).
    unclipped = tiny_model()
    opt = GaLoreAdamW(galore_groups(unclipped), lr=1e-2)
    _layerwise_train(unclipped, opt, data, 1)
    assert max_param_diff(models[1], unclipped) > 1e-4


def test_missing_micro_batch_is_reported():
    m = tiny_model()
    opt = GaLoreAdamW(galore_groups(m), lr=1e-3)
    lw = LayerwiseGaLore(opt, accumulation_steps=2)
    lm_loss(m, batches(1)[0]).backward()
    with pytest.raises(RuntimeError, match="got 1 of 2 micro-batch gradients"):
        lw.step()


def test_layerwise_bad_arguments():
    m = tiny_model()
    with pytest.raises(TypeError, match="needs a GaLoreOptimizer"):
        LayerwiseGaLore(torch.optim.SGD(m.parameters(), lr=0.1))  # pyright: ignore[reportArgumentType]  (wrong type on purpose)
    opt = GaLoreAdamW(galore_groups(m))
    with pytest.raises(ValueError, match="accumulation_steps"):
        LayerwiseGaLore(opt, accumulation_steps=0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        LayerwiseGaLore(opt, max_grad_norm=0.0)
