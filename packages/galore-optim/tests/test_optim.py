"""GaLoreAdamW / 8-bit / Adafactor: parity with galore-torch, plain params, checkpoints, errors."""

import copy
import io
import itertools
import warnings
from typing import Any

import pytest
import torch
from galore_optim import GaLoreAdafactor, GaLoreAdamW, GaLoreAdamW8bit
from galore_optim.projector import PROJ_TYPES
from galore_testlib import batches, galore_groups, lm_loss, max_param_diff, tiny_model, train
from hypothesis import given, settings
from hypothesis import strategies as st

from tensor_utils_dev.testing.strategies import seeds

galore_torch = pytest.importorskip("galore_torch")
warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.mark.parametrize("proj_type", PROJ_TYPES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_parity_with_galore_torch(proj_type, weight_decay):
    """Same model, seed, hyperparameters: galore-torch's updates, to float rounding."""
    ref, ours = tiny_model(), tiny_model()
    ref_opt = galore_torch.GaLoreAdamW(
        galore_groups(ref, proj_type=proj_type),
        lr=1e-2,
        weight_decay=weight_decay,
        no_deprecation_warning=True,
    )
    opt = GaLoreAdamW(
        galore_groups(ours, proj_type=proj_type),
        lr=1e-2,
        weight_decay=weight_decay,
        backend="reference",
    )
    data = batches(8)  # update_proj_gap=3: refreshes at steps 0, 3, 6
    ref_losses, losses = train(ref, ref_opt, data), train(ours, opt, data)
    assert max_param_diff(ref, ours) == 0.0  # bit-identical on the CPU
    assert losses == pytest.approx(ref_losses, rel=1e-6)
    # The GaLore matrices' moments are low-rank: (12, 4) for the 12x12 attn with std.
    assert opt.state[ours.attn.weight]["exp_avg"].numel() < ours.attn.weight.numel()


def _parity_run(opt_cls, model, rank, proj_type, gap, weight_decay, data, **kw):
    weights = [m.weight for m in model if isinstance(m, torch.nn.Linear)]
    ids = {id(w) for w in weights}
    groups = [
        {
            "params": weights,
            "rank": rank,
            "update_proj_gap": gap,
            "scale": 0.25,
            "proj_type": proj_type,
        },
        {"params": [p for p in model.parameters() if id(p) not in ids]},
    ]
    opt = opt_cls(groups, lr=1e-2, weight_decay=weight_decay, **kw)
    for x, y in data:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


@settings(max_examples=12, deadline=None)
@given(
    dims=st.lists(st.integers(3, 37), min_size=3, max_size=4),
    rank_frac=st.floats(0.0, 1.0),
    proj_type=st.sampled_from(PROJ_TYPES),
    gap=st.integers(1, 4),
    weight_decay=st.sampled_from([0.0, 0.01, 0.1]),
    seed=seeds(),
)
def test_adamw_bit_identical_to_galore_torch_on_drawn_shapes(
    dims, rank_frac, proj_type, gap, weight_decay, seed
):
    """Odd shapes, ranks, gaps and weight decay: exactly galore-torch's parameters (CPU)."""
    layers = []
    for d_in, d_out in itertools.pairwise(dims):
        layers += [torch.nn.Linear(d_in, d_out), torch.nn.Tanh()]
    torch.manual_seed(seed)
    ref = torch.nn.Sequential(*layers[:-1])
    ours = copy.deepcopy(ref)
    low = min(min(a, b) for a, b in itertools.pairwise(dims))
    # galore-torch picks reverse_std's back-projection side from the projected shape, which is
    # wrong for a full-rank left basis of a wide matrix (a documented difference): rank < min.
    top = low - 1 if proj_type == "reverse_std" else low
    rank = max(1, min(top, round(rank_frac * top)))
    gen = torch.Generator().manual_seed(seed)
    data = [
        (torch.randn(9, dims[0], generator=gen), torch.randn(9, dims[-1], generator=gen))
        for _ in range(6)
    ]
    _parity_run(
        galore_torch.GaLoreAdamW,
        ref,
        rank,
        proj_type,
        gap,
        weight_decay,
        data,
        no_deprecation_warning=True,
    )
    _parity_run(GaLoreAdamW, ours, rank, proj_type, gap, weight_decay, data, backend="reference")
    for (name, a), b in zip(ref.named_parameters(), ours.parameters(), strict=True):
        assert torch.equal(a, b), f"{name}: max diff {(a - b).abs().max().item():.3g}"


@pytest.mark.triton
def test_adamw_triton_backend_matches_galore_torch(device):
    ref, ours = tiny_model().to(device), tiny_model().to(device)
    ref_opt = galore_torch.GaLoreAdamW(
        galore_groups(ref), lr=1e-2, weight_decay=0.1, no_deprecation_warning=True
    )
    opt = GaLoreAdamW(galore_groups(ours), lr=1e-2, weight_decay=0.1, backend="triton")
    data = [b.to(device) for b in batches(5)]
    train(ref, ref_opt, data)
    train(ours, opt, data)
    assert max_param_diff(ref, ours) <= 1e-5


@pytest.mark.parametrize("beta1", [None, 0.9])
def test_adafactor_parity_with_galore_torch(beta1):
    ref, ours = tiny_model(), tiny_model()
    kw = {
        "lr": 1e-2,
        "scale_parameter": False,
        "relative_step": False,
        "beta1": beta1,
        "weight_decay": 0.01,
    }
    ref_opt = galore_torch.GaLoreAdafactor(galore_groups(ref), **kw)
    opt = GaLoreAdafactor(galore_groups(ours), **kw)
    data = batches(7)
    train(ref, ref_opt, data)
    train(ours, opt, data)
    assert max_param_diff(ref, ours) <= 1e-6


def test_adafactor_relative_step_parity():
    ref, ours = tiny_model(), tiny_model()
    ref_opt = galore_torch.GaLoreAdafactor(galore_groups(ref))
    opt = GaLoreAdafactor(galore_groups(ours))
    data = batches(4)
    train(ref, ref_opt, data)
    train(ours, opt, data)
    assert max_param_diff(ref, ours) <= 1e-6


def test_plain_groups_are_hf_adamw():
    """Without a rank every param gets galore-torch's (HF-style) AdamW."""
    ref, ours = tiny_model(), tiny_model()
    ref_opt = galore_torch.GaLoreAdamW(
        ref.parameters(), lr=3e-3, weight_decay=0.05, no_deprecation_warning=True
    )
    opt = GaLoreAdamW(ours.parameters(), lr=3e-3, weight_decay=0.05)
    data = batches(4)
    train(ref, ref_opt, data)
    train(ours, opt, data)
    assert max_param_diff(ref, ours) <= 1e-6
    assert all("side" not in s for s in opt.state.values())


def test_8bit_tracks_fp32_galore():
    base, q = tiny_model(), tiny_model()
    opt = GaLoreAdamW(galore_groups(base), lr=5e-3, eps=1e-8)
    opt8 = GaLoreAdamW8bit(galore_groups(q), lr=5e-3, weight_decay=0.0, min_8bit_size=0)
    data = batches(1) * 12  # one batch, memorized: the loss must fall
    l32, l8 = train(base, opt, data), train(q, opt8, data)
    assert opt8.state[q.attn.weight]["exp_avg"].dtype == torch.int8
    assert opt8.state[q.attn.weight]["exp_avg_sq"].dtype == torch.uint8
    assert l32[-1] < 0.9 * l32[0]
    assert l8[-1] < 0.9 * l8[0]
    assert abs(l8[-1] - l32[-1]) < 0.02 * l32[-1]
    assert max_param_diff(base, q) < 2e-2


def test_8bit_small_tensors_keep_fp32_moments():
    m = tiny_model()
    opt = GaLoreAdamW8bit(galore_groups(m), lr=1e-3)  # min_8bit_size=4096 > every tensor here
    train(m, opt, batches(1))
    assert all(s["exp_avg"].dtype == torch.float32 for s in opt.state.values())


OPTIMIZERS = {
    "adamw": lambda g: GaLoreAdamW(g, lr=1e-2, weight_decay=0.01),
    "adamw8bit": lambda g: GaLoreAdamW8bit(g, lr=1e-2, min_8bit_size=16),
    "adafactor": lambda g: GaLoreAdafactor(
        g, lr=1e-2, relative_step=False, scale_parameter=False, beta1=0.9
    ),
}


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@settings(max_examples=6)
@given(
    name=st.sampled_from(sorted(OPTIMIZERS)),
    proj_type=st.sampled_from(PROJ_TYPES),
    solver=st.sampled_from(["exact", "randomized", "warm"]),
    stagger=st.booleans(),
    split=st.integers(1, 5),
    seed=seeds(),
)
def test_checkpoint_resume_is_bit_exact(name, proj_type, solver, stagger, split, seed):
    """Train 6 steps straight, or `split` steps + save/load (weights_only) + the rest."""
    make = OPTIMIZERS[name]
    kw = {"proj_type": proj_type, "solver": solver, "stagger": stagger, "seed": seed % 1000}
    data = batches(6, seed=seed)
    straight = tiny_model(seed % 7)
    train(straight, make(galore_groups(straight, **kw)), data)

    first = tiny_model(seed % 7)
    opt = make(galore_groups(first, **kw))
    train(first, opt, data[:split])
    model_sd, opt_sd = _roundtrip(first.state_dict()), _roundtrip(opt.state_dict())
    resumed = tiny_model(123)
    resumed.load_state_dict(model_sd)
    opt2 = make(galore_groups(resumed, **kw))
    opt2.load_state_dict(opt_sd)
    # The round-trip is exact: same keys, dtypes and values (projectors and step counters too).
    sd2 = opt2.state_dict()
    assert sd2["param_groups"] == opt_sd["param_groups"]
    for k, st_ in opt_sd["state"].items():
        for key, v in st_.items():
            w = sd2["state"][k][key]
            if isinstance(v, torch.Tensor):
                assert v.dtype == w.dtype and torch.equal(v, w), key
            else:
                assert v == w, key
    train(resumed, opt2, data[split:])
    assert max_param_diff(straight, resumed) == 0.0


def test_state_holds_projectors_and_steps():
    m = tiny_model()
    opt = GaLoreAdamW(galore_groups(m, proj_type="full"), lr=1e-3)
    train(m, opt, batches(2))
    st_ = opt.state[m.mlp_up.weight]  # (20, 12)
    assert st_["step"] == 2 and st_["side"] == "full" and st_["last_refresh"] == 0
    assert st_["proj_left"].shape == (20, 4) and st_["proj_right"].shape == (4, 12)
    assert st_["exp_avg"].shape == (4, 4)


def test_staggered_refresh_spreads_steps():
    m = tiny_model()
    opt = GaLoreAdamW(galore_groups(m, update_proj_gap=6, stagger=True), lr=1e-3)
    train(m, opt, batches(1))
    offsets = sorted(
        opt.state[p]["refresh_offset"] for p in (m.attn.weight, m.mlp_up.weight, m.mlp_down.weight)
    )
    assert offsets == [0, 2, 4]
    refreshed = {p: [] for p in (m.attn.weight, m.mlp_up.weight, m.mlp_down.weight)}
    for ids in batches(8):
        opt.zero_grad()
        lm_loss(m, ids).backward()
        opt.step()
        for p in refreshed:
            refreshed[p].append(opt.state[p]["last_refresh"])
    # Each matrix refreshes on a different step after the first.
    firsts = [next(s for s in seq if s > 0) for seq in refreshed.values()]
    assert len(set(firsts)) == 3


# --- bad input ------------------------------------------------------------------------------


def test_errors_for_bad_groups():
    m = tiny_model()
    with pytest.raises(ValueError, match=r"1-D parameter of shape \(12,\).*group without 'rank'"):
        GaLoreAdamW([{"params": [m.attn.bias], "rank": 2}])
    with pytest.raises(ValueError, match=r"rank 13 exceeds min\(m, n\) = 12"):
        GaLoreAdamW([{"params": [m.attn.weight], "rank": 13}])
    with pytest.raises(ValueError, match="proj_type 'sideways'"):
        GaLoreAdamW([{"params": [m.attn.weight], "rank": 2, "proj_type": "sideways"}])
    with pytest.raises(ValueError, match="solver 'qr'"):
        GaLoreAdamW([{"params": [m.attn.weight], "rank": 2, "solver": "qr"}])
    with pytest.raises(ValueError, match="rank must be a positive int"):
        GaLoreAdamW([{"params": [m.attn.weight], "rank": 0}])
    with pytest.raises(ValueError, match="update_proj_gap must be a positive int"):
        GaLoreAdamW([{"params": [m.attn.weight], "rank": 2, "update_proj_gap": 0}])
    with pytest.raises(ValueError, match="invalid learning rate"):
        GaLoreAdamW(m.parameters(), lr=-1)
    with pytest.raises(ValueError, match="invalid betas"):
        GaLoreAdamW8bit(m.parameters(), betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="backend"):
        GaLoreAdamW(m.parameters(), backend="cuda")
    with pytest.raises(ValueError, match="manual lr"):
        GaLoreAdafactor(m.parameters(), lr=1e-3)


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("rnak", "did you mean 'rank'"),
        ("Rank", "did you mean 'rank'"),
        ("update_proj_gp", "did you mean 'update_proj_gap'"),
        ("proj_tpye", "did you mean 'proj_type'"),
        ("scael", "did you mean 'scale'"),
        ("galore_rank", "GaLore keys are"),
        ("proj_rank", "GaLore keys are"),
    ],
)
@pytest.mark.parametrize("cls", [GaLoreAdamW, GaLoreAdamW8bit, GaLoreAdafactor])
def test_misspelled_galore_keys_are_refused(cls, key, hint):
    m = tiny_model()
    kw: dict[str, Any] = {"lr": 1e-3} if cls is not GaLoreAdafactor else {}
    with pytest.raises(ValueError, match=rf"param group 0: unknown key '{key}'.*{hint}"):
        cls([{"params": [m.attn.weight], key: 4}], **kw)
    with pytest.raises(ValueError, match=rf"param group 1: unknown key '{key}'"):
        cls([{"params": [m.attn.weight], "rank": 2}, {"params": [m.mlp_up.weight], key: 4}], **kw)


def test_galore_keys_without_rank_are_refused():
    m = tiny_model()
    with pytest.raises(ValueError, match=r"GaLore key.* update_proj_gap, proj_type but no 'rank'"):
        GaLoreAdamW([{"params": [m.attn.weight], "update_proj_gap": 50, "proj_type": "left"}])


def test_other_extra_group_keys_still_pass():
    m = tiny_model()
    opt = GaLoreAdamW(
        [
            {"params": [m.attn.weight], "rank": 2, "name": "galore"},
            {"params": [m.mlp_up.weight], "lr_scale": 2.0},
        ]
    )
    assert opt.param_groups[0]["name"] == "galore" and opt.param_groups[1]["lr_scale"] == 2.0


def test_error_for_sparse_gradients():
    emb = torch.nn.Embedding(10, 4, sparse=True)
    opt = GaLoreAdamW(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match=r"does not support sparse gradients.*SparseAdam"):
        opt.step()


def test_error_for_mixed_devices():
    """Optimizer state left on another device than its parameter (e.g. model moved after the
    optimizer stepped) is reported, not silently mixed. (torch itself refuses a gradient on
    another device than its parameter.)"""
    w = torch.nn.Parameter(torch.randn(6, 5))
    opt = GaLoreAdamW([{"params": [w], "rank": 2}])
    w.grad = torch.randn(6, 5)
    opt.step()
    opt.state[w]["exp_avg"] = opt.state[w]["exp_avg"].to("meta")
    with pytest.raises(RuntimeError, match="optimizer state 'exp_avg' is on meta"):
        opt.step()


def test_closure_and_no_grad_params():
    m = tiny_model()
    opt = GaLoreAdamW(galore_groups(m), lr=1e-3)
    ids = batches(1)[0]
    before = copy.deepcopy(m)

    def closure():
        opt.zero_grad()
        loss = lm_loss(m, ids)
        loss.backward()
        return loss

    loss = opt.step(closure)  # pyright: ignore[reportArgumentType]  (torch.optim types closures as returning float; they return the loss tensor)
    assert torch.is_tensor(loss)
    assert max_param_diff(before, m) > 0
    opt.zero_grad()
    opt.step()  # every grad is None: nothing moves, nothing fails


def test_slow_refresh_shows_progress(monkeypatch, capsys):
    import galore_optim.base

    data = batches(1)
    m = tiny_model()
    opt = GaLoreAdamW(galore_groups(m), lr=1e-3)
    train(m, opt, data)  # a fast refresh: no bar
    assert "GaLore basis refresh" not in capsys.readouterr().err
    monkeypatch.setattr(galore_optim.base, "REFRESH_PROGRESS_DELAY_S", 0.0)
    m = tiny_model()
    opt = GaLoreAdamW(galore_groups(m), lr=1e-3)
    train(m, opt, data)  # as if slow: the bar shows every refreshed matrix
    err = capsys.readouterr().err
    assert "GaLore basis refresh" in err and "/3 [" in err  # 3 refreshing matrices
    train(m, opt, data)  # no refresh due: no bar
    assert "GaLore basis refresh" not in capsys.readouterr().err
