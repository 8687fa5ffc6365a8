"""Projector properties: orthonormal bases, project / back-project identities, rank clamping."""

import pytest
import torch
from galore_optim import GaLoreAdamW, GaLoreProjector
from galore_optim.projector import (
    PROJ_TYPES,
    compute_basis,
    low_rank_shape,
    project,
    project_back,
    resolve_side,
)
from hypothesis import given
from hypothesis import strategies as st

from tensor_utils_dev.testing.strategies import random_tensor, seeds

dims = st.integers(min_value=2, max_value=24)


def _side_basis(left: torch.Tensor | None, right: torch.Tensor | None, side: str) -> torch.Tensor:
    """The basis ``compute_basis`` returned for ``side``, as columns."""
    basis = left if side == "left" else None if right is None else right.T
    assert basis is not None, side
    return basis


def _orthonormality_error(basis: torch.Tensor, rows: bool) -> float:
    b = basis.double()
    gram = b @ b.T if rows else b.T @ b
    return (gram - torch.eye(gram.shape[0], dtype=torch.float64)).abs().max().item()


@given(
    m=dims,
    n=dims,
    seed=seeds(),
    proj_type=st.sampled_from(PROJ_TYPES),
    solver=st.sampled_from(["exact", "randomized", "warm"]),
    data=st.data(),
)
def test_basis_orthonormal_and_identities(m, n, seed, proj_type, solver, data):
    rank = data.draw(st.integers(min_value=1, max_value=min(m, n)))
    g = random_tensor((m, n), torch.float32, seed)
    side = resolve_side(proj_type, (m, n))
    left, right = compute_basis(g, rank, side, solver=solver, seed=seed)
    if left is not None:
        assert left.shape == (m, rank)
        assert _orthonormality_error(left, rows=False) < 1e-4
    if right is not None:
        assert right.shape == (rank, n)
        assert _orthonormality_error(right, rows=True) < 1e-4
    low = project(g, side, left, right)
    assert low.shape == low_rank_shape(side, (m, n), rank)
    # project ∘ back-project is the identity on the low-rank space (PᵀP = I).
    r = random_tensor(low.shape, torch.float32, seed + 1)
    torch.testing.assert_close(
        project(project_back(r, side, left, right), side, left, right), r, atol=1e-4, rtol=1e-4
    )
    # back-project ∘ project is an orthogonal projection: idempotent, and scale is linear.
    pg = project_back(low, side, left, right)
    torch.testing.assert_close(
        project_back(project(pg, side, left, right), side, left, right), pg, atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(project_back(low, side, left, right, scale=0.25), 0.25 * pg)
    assert pg.norm() <= g.norm() * (1 + 1e-5) + 1e-6


@given(m=dims, n=dims, seed=seeds())
def test_full_rank_projection_is_exact(m, n, seed):
    g = random_tensor((m, n), torch.float32, seed)
    side = resolve_side("std", (m, n))
    left, right = compute_basis(g, min(m, n), side)
    torch.testing.assert_close(
        project_back(project(g, side, left, right), side, left, right), g, atol=1e-4, rtol=1e-4
    )


def test_std_compresses_the_smaller_dimension():
    assert resolve_side("std", (64, 16)) == "right"
    assert resolve_side("std", (16, 64)) == "left"
    assert resolve_side("std", (32, 32)) == "right"
    assert resolve_side("reverse_std", (64, 16)) == "left"
    assert resolve_side("reverse_std", (16, 64)) == "right"
    with pytest.raises(ValueError, match="unknown proj_type"):
        resolve_side("diagonal", (4, 4))


@pytest.mark.parametrize("solver", ["randomized", "warm"])
def test_randomized_captures_exact_energy(solver):
    gen = torch.Generator().manual_seed(0)
    m, n, k = 96, 80, 6
    u = torch.linalg.qr(torch.randn(m, k, generator=gen)).Q
    v = torch.linalg.qr(torch.randn(n, k, generator=gen)).Q
    g = u @ torch.diag(torch.logspace(1, 0, k)) @ v.T + 1e-3 * torch.randn(m, n, generator=gen)
    exact, _ = compute_basis(g, k, "left", solver="exact")
    prev = exact if solver == "warm" else None
    approx, _ = compute_basis(g, k, "left", solver=solver, prev_left=prev)
    energy = lambda p: ((p.T @ g).norm() ** 2 / g.norm() ** 2).item()  # noqa: E731
    assert energy(approx) == pytest.approx(energy(exact), abs=1e-5)


def test_randomized_is_deterministic_per_seed_index_step():
    g = random_tensor((30, 20), torch.float32, 3)
    a = compute_basis(g, 4, "right", solver="randomized", seed=1, index=2, step=5)[1]
    b = compute_basis(g, 4, "right", solver="randomized", seed=1, index=2, step=5)[1]
    c = compute_basis(g, 4, "right", solver="randomized", seed=1, index=3, step=5)[1]
    assert a is not None and b is not None and c is not None
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@given(m=dims, n=dims, extra=st.integers(min_value=1, max_value=40))
def test_rank_clamping(m, n, extra):
    w = torch.nn.Parameter(torch.zeros(m, n))
    rank = min(m, n) + extra
    with pytest.raises(ValueError, match=r"rank \d+ exceeds min\(m, n\)"):
        GaLoreAdamW([{"params": [w], "rank": rank}])
    opt = GaLoreAdamW([{"params": [w], "rank": rank, "clamp_rank": True}])
    w.grad = random_tensor((m, n), torch.float32, m * n)
    opt.step()
    state = opt.state[w]
    assert state["rank"] == min(m, n)
    assert state["exp_avg"].shape == low_rank_shape(state["side"], (m, n), min(m, n))


def test_standalone_projector_refreshes_on_schedule():
    proj = GaLoreProjector(rank=3, update_proj_gap=2, scale=0.5)
    g = random_tensor((10, 6), torch.float32, 0)
    assert proj.update(g, 0)
    assert not proj.update(g * 2, 1)
    assert proj.update(g, 2)
    low = proj.project(g)
    assert low.shape == (10, 3) and proj.right is not None
    torch.testing.assert_close(proj.project_back(low), 0.5 * (low @ proj.right))
    with pytest.raises(ValueError, match="2-D"):
        GaLoreProjector(rank=2).update(torch.zeros(3, 3, 3), 0)


@pytest.mark.parametrize("solver", ["exact", "randomized"])
@pytest.mark.parametrize("proj_type", ["left", "right", "full"])
def test_basis_owns_only_its_storage(solver, proj_type):
    """The stored basis is not a view into the full SVD factors (which would keep an (n, n)
    matrix alive per weight)."""
    g = random_tensor((40, 30), torch.float32, 0)
    left, right = compute_basis(g, 3, proj_type, solver=solver)
    for t in (left, right):
        if t is not None:
            assert t.is_contiguous() or t.mT.is_contiguous()  # row- or column-major, no gaps
            assert t.untyped_storage().nbytes() == t.numel() * t.element_size()


def _low_rank_plus_noise(m, n, k, seed):
    gen = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(m, k, generator=gen)).Q
    v = torch.linalg.qr(torch.randn(n, k, generator=gen)).Q
    return u @ torch.diag(torch.logspace(1, -1, k)) @ v.T + 1e-3 * torch.randn(m, n, generator=gen)


@pytest.mark.parametrize("solver", ["randomized", "warm"])
@pytest.mark.parametrize("proj_type", ["left", "right", "full", "std"])
@pytest.mark.parametrize("shape", [(120, 70), (70, 120)])
def test_rayleigh_ritz_basis_matches_exact_svd(solver, proj_type, shape):
    """The eigh-based Rayleigh-Ritz solver spans the exact top-r singular subspace (signal
    directions) and captures the exact SVD's energy, on either side."""
    m, n = shape
    k, rank = 10, 16
    g = _low_rank_plus_noise(m, n, k, seed=m + n)
    side = resolve_side(proj_type, shape)
    ex_left, ex_right = compute_basis(g, rank, side, solver="exact")
    prev = compute_basis(g + 0.1 * random_tensor(shape, torch.float32, 5), rank, side)
    left, right = compute_basis(
        g, rank, side, solver=solver, seed=3, prev_left=prev[0], prev_right=prev[1]
    )
    for approx, exact, rows in ((left, ex_left, False), (right, ex_right, True)):
        if exact is None:
            assert approx is None
            continue
        assert approx is not None
        a, e = (approx.T, exact.T) if rows else (approx, exact)
        assert _orthonormality_error(a, rows=False) < 1e-5
        # signal subspace: principal angles between the top-k directions are ~0
        overlap = (e[:, :k].T @ a).norm() ** 2 / k
        assert overlap.item() == pytest.approx(1.0, abs=1e-5)
        # ordered like the SVD: the leading vectors agree up to sign
        cos = (e[:, :4] * a[:, :4]).sum(0).abs()
        assert torch.all(cos > 1 - 1e-4)
        mat = g if not rows else g.T
        energy = lambda b, mat=mat: ((b.T @ mat).norm() ** 2).item()  # noqa: E731
        assert energy(a) == pytest.approx(energy(e), rel=1e-4)


@pytest.mark.parametrize("side", ["left", "right", "full"])
@pytest.mark.parametrize("grad_rank", [0, 3])
def test_randomized_rank_deficient_gradient_falls_back(side, grad_rank):
    """A gradient of rank below the sketch size (few tokens, or all zeros) makes CholeskyQR
    fail; the solver must still return an orthonormal, finite basis (Householder fallback)."""
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(50, grad_rank, generator=gen) @ torch.randn(grad_rank, 40, generator=gen)
    left, right = compute_basis(g, 8, side, solver="randomized")
    for basis, rows in ((left, False), (right, True)):
        if basis is not None:
            assert torch.isfinite(basis).all()
            assert _orthonormality_error(basis, rows=rows) < 1e-5
    if grad_rank:
        pg = project_back(project(g, side, left, right), side, left, right)
        torch.testing.assert_close(pg, g, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("solver", ["randomized", "warm"])
def test_fast_solver_state_dict_round_trip(solver, tmp_path):
    torch.manual_seed(0)
    ws = [torch.nn.Parameter(torch.randn(24, 40)), torch.nn.Parameter(torch.randn(40, 24))]
    grads = [random_tensor(tuple(w.shape), torch.float32, i) for i, w in enumerate(ws)]

    def make(params):
        return GaLoreAdamW([{"params": params, "rank": 6, "update_proj_gap": 2, "solver": solver}])

    opt = make(ws)
    for _ in range(3):
        for w, g in zip(ws, grads, strict=True):
            w.grad = g.clone()
        opt.step()
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    ws2 = [torch.nn.Parameter(w.detach().clone()) for w in ws]
    opt2 = make(ws2)
    opt2.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    for _ in range(3):  # crosses a refresh (warm starts from the loaded basis)
        for a, b, g in zip(ws, ws2, grads, strict=True):
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        opt2.step()
    for a, b in zip(ws, ws2, strict=True):
        assert torch.equal(a, b)
        for key in ("proj_left", "proj_right"):
            if key in opt.state[a]:
                assert torch.equal(opt.state[a][key], opt2.state[b][key])


@pytest.mark.gpu
@pytest.mark.parametrize("side", ["left", "right"])
def test_randomized_on_cuda_matches_exact_without_fallback(side, monkeypatch):
    """On CUDA the CholeskyQR + eigh path is taken (no Householder fallback) for a full-rank
    gradient and captures the exact SVD's energy."""
    import galore_optim.projector as proj

    def no_fallback(*args, **kwargs):
        raise AssertionError("Householder fallback taken")

    monkeypatch.setattr(proj, "_householder", no_fallback)
    g = _low_rank_plus_noise(384, 1024, 32, seed=1)
    rank = 128
    # Reference: float64 singular values on the CPU (CUDA's fp32 gesvdj is only ~1e-3
    # orthogonal, too coarse to compare energies at 1e-4).
    best = (torch.linalg.svdvals(g.double())[:rank] ** 2).sum().item()
    left, right = compute_basis(g.cuda(), rank, side, solver="randomized")
    a = _side_basis(left, right, side).cpu().double()
    mat = g.double() if side == "left" else g.double().T
    assert ((a.T @ mat).norm() ** 2).item() == pytest.approx(best, rel=1e-4)
    assert _orthonormality_error(a, rows=False) < 1e-4


@pytest.mark.parametrize("side", ["left", "right"])
def test_randomized_sign_convention(side):
    """Each basis vector's largest-magnitude entry is positive (eigh's signs are arbitrary and
    may depend on the LAPACK build or thread count)."""
    g = random_tensor((30, 20), torch.float32, 11)
    left, right = compute_basis(g, 5, side, solver="randomized")
    b = _side_basis(left, right, side)
    assert torch.all(b.gather(0, b.abs().argmax(0, keepdim=True)) > 0)
