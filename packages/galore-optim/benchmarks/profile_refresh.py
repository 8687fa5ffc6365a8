"""What a subspace refresh is made of, and candidate solvers, on LLaMA-1B gradient shapes.

Times (CUDA events, median of ``--reps`` after warm-up) the linear-algebra primitives a solver
uses (Gram matmul, Cholesky, triangular solve, Householder QR, small / large ``eigh``, small
SVD with each cuSOLVER driver) and whole candidate solvers, each with its accuracy against the
exact SVD: captured energy ``||Pᵀ A||² / ||U_rᵀ A||²`` and orthonormality error.

    python tools/run_gpu.py galore-optim --bench profile_refresh.py   # the page's table (CUDA)
    python packages/galore-optim/benchmarks/profile_refresh.py --small  # CPU-sized smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from galore_optim import projector as P

from tensor_utils_dev.bench import results_dir, write_csv

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def timeit(fn, reps: int, warm: int = 2) -> float:
    for _ in range(warm):
        fn()
    if DEV == "cuda":
        torch.cuda.synchronize()
        out = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            out.append(a.elapsed_time(b))
        return statistics.median(out)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(out)


# -- orthonormalization variants -------------------------------------------------------------
def orth_cholqr2_sync(y):
    return P._orthonormal(y)


def orth_cholqr2_nosync(y):
    q = y
    for _ in range(2):
        chol = torch.linalg.cholesky_ex(q.mT @ q)[0]
        q = (
            torch.linalg.solve_triangular(chol, q, upper=False, left=False).mT
            if False
            else (torch.linalg.solve_triangular(chol.mT, q, upper=True, left=False))
        )
    return q


def orth_qr(y):
    return torch.linalg.qr(y, mode="reduced").Q


# -- candidates: left basis (p, r) of A (p, q) -----------------------------------------------
def cand_randomized_svd(a, r, gen):
    """``projector.randomized_svd``: both factors, through an SVD of the k x n sketch."""
    u, _ = P.randomized_svd(a, r, generator=gen)
    return u


def _rr_eigh(a, q, r):
    b = a.mT @ q  # (q, k)
    t = b.mT @ b  # (k, k) = Qᵀ A Aᵀ Q
    _w, v = torch.linalg.eigh(t)
    return q @ v[..., :, -r:].flip(-1)


def make_rr(iters, orth, k_extra=8):
    def f(a, r, gen):
        p, qd = a.shape[-2:]
        k = min(r + k_extra, p)
        om = torch.randn(qd, k, generator=gen, device=a.device)
        q = orth(a @ om)
        for _ in range(iters):
            z = orth(a.mT @ q)
            q = orth(a @ z)
        return _rr_eigh(a, q, r)

    return f


def make_rr_half(iters, orth, k_extra=8):
    """Power iterations without the inner orthonormalization of Aᵀ Q (one orth per iteration)."""

    def f(a, r, gen):
        p, qd = a.shape[-2:]
        k = min(r + k_extra, p)
        om = torch.randn(qd, k, generator=gen, device=a.device)
        q = orth(a @ om)
        for _ in range(iters):
            q = orth(a @ (a.mT @ q))
        return _rr_eigh(a, q, r)

    return f


def cand_gram_eigh(a, r, gen):
    m = a @ a.mT
    _w, v = torch.linalg.eigh(m)
    return v[..., :, -r:].flip(-1)


def make_gram_si(iters, orth, k_extra=8):
    def f(a, r, gen):
        p, qd = a.shape[-2:]
        k = min(r + k_extra, p)
        m = a @ a.mT
        om = torch.randn(qd, k, generator=gen, device=a.device)
        q = orth(a @ om)
        for _ in range(iters):
            q = orth(m @ q)
        t = q.mT @ (m @ q)
        _w, v = torch.linalg.eigh(t)
        return q @ v[..., :, -r:].flip(-1)

    return f


FALLBACKS = {"n": 0}
_householder = P._householder


def _counting_householder(*args, **kwargs):
    FALLBACKS["n"] += 1
    return _householder(*args, **kwargs)


P._householder = _counting_householder


def cand_package(a, r, gen):
    """This package's ``randomized`` solver as the optimizer calls it (left basis of ``a``)."""
    return P.compute_basis(a, r, "left", solver="randomized")[0]


def cand_svd_lowrank(a, r, gen):
    u, _s, _v = torch.svd_lowrank(a, q=r + 8, niter=2)
    return u[:, :r]


def make_svd_driver(driver):
    def f(a, r, gen):
        return torch.linalg.svd(a, full_matrices=False, driver=driver)[0][:, :r]

    return f


def test_matrix(p, q, kind, gen):
    if kind == "bench":  # bench_step.py's gradients: rank-64 log-spaced signal + 1e-3 noise
        k = 64
        u = torch.randn(p, k, device=DEV, generator=gen)
        v = torch.randn(k, q, device=DEV, generator=gen)
        s = torch.logspace(0, -2, k, device=DEV)
        return (u * s) @ v / k + 1e-3 * torch.randn(p, q, device=DEV, generator=gen)
    # "slow": power-law spectrum sigma_i = i^-0.6 over the full rank (a harder case)
    n = min(p, q)
    u = torch.linalg.qr(torch.randn(p, n, device=DEV, generator=gen)).Q
    v = torch.linalg.qr(torch.randn(q, n, device=DEV, generator=gen)).Q
    s = torch.arange(1, n + 1, device=DEV, dtype=torch.float32) ** -0.6
    return (u * s) @ v.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument(
        "--out", default=str(results_dir(__file__)), help="folder for profile_refresh.csv"
    )
    ap.add_argument("--no-prims", action="store_true")
    ap.add_argument("--cands", default="", help="comma-separated subset of the candidates")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    d, ffn = (128, 341) if args.small else (2048, 5461)
    ranks = (8, 32) if args.small else (128, 512)
    reps = args.reps
    out = Path(args.out)
    rows = []

    def rec(**kw):
        rows.append(kw)
        print(json.dumps(kw), flush=True)

    gen = torch.Generator(device=DEV).manual_seed(0)
    # ---- primitives ----
    for r in ranks if not args.no_prims else ():
        k = r + 8
        for qd in (d, ffn):
            y = torch.randn(d, k, device=DEV, generator=gen)
            a = torch.randn(d, qd, device=DEV, generator=gen)
            om = torch.randn(qd, k, device=DEV, generator=gen)
            g = y.mT @ y
            g = g + k * torch.eye(k, device=DEV)
            chol = torch.linalg.cholesky(g)
            b = torch.randn(k, qd, device=DEV, generator=gen)
            prim = {
                "A@Omega": lambda a=a, om=om: a @ om,
                "Y^T Y": lambda y=y: y.mT @ y,
                "cholesky_ex": lambda g=g: torch.linalg.cholesky_ex(g),
                "cholesky_ex+info.item": lambda g=g: int(torch.linalg.cholesky_ex(g)[1]),
                "solve_triangular": lambda c=chol, y=y: torch.linalg.solve_triangular(
                    c.mT, y, upper=True, left=False
                ),
                "cholqr2_sync": lambda y=y: orth_cholqr2_sync(y),
                "cholqr2_nosync": lambda y=y: orth_cholqr2_nosync(y),
                "householder_qr": lambda y=y: orth_qr(y),
                "eigh_kxk": lambda g=g: torch.linalg.eigh(g),
                "svd_kxq_default": lambda b=b: torch.linalg.svd(b, full_matrices=False),
            }
            if DEV == "cuda":
                for drv in ("gesvd", "gesvda"):
                    prim[f"svd_kxq_{drv}"] = lambda b=b, drv=drv: torch.linalg.svd(
                        b.mT.contiguous(), full_matrices=False, driver=drv
                    )
            for name, fn in prim.items():
                if qd == ffn and name in (
                    "Y^T Y",
                    "cholesky_ex",
                    "cholesky_ex+info.item",
                    "solve_triangular",
                    "cholqr2_sync",
                    "cholqr2_nosync",
                    "householder_qr",
                    "eigh_kxk",
                ):
                    continue
                try:
                    ms = timeit(fn, reps)
                except Exception as e:
                    ms = float("nan")
                    print("ERR", name, repr(e)[:200])
                rec(what="prim", name=name, k=k, p=d, q=qd, ms=ms)
    m2 = torch.randn(d, d, device=DEV, generator=gen)
    m2 = m2 @ m2.mT
    if args.no_prims:
        m2 = None
    if m2 is not None:
        prims_big(m2, d, ffn, reps, gen, rec)
    run_cands(args, d, ffn, ranks, reps, gen, rec)
    write(rows, out)


def prims_big(m2, d, ffn, reps, gen, rec):
    rec(what="prim", name="eigh_pxp", k=d, p=d, q=d, ms=timeit(lambda: torch.linalg.eigh(m2), reps))
    for bs in (4, 7):
        mb = m2.expand(bs, d, d).contiguous()
        rec(
            what="prim",
            name=f"eigh_pxp_batch{bs}",
            k=d,
            p=d,
            q=d,
            ms=timeit(lambda mb=mb: torch.linalg.eigh(mb), max(2, reps // 2)),
        )
    a = torch.randn(d, ffn, device=DEV, generator=gen)
    rec(what="prim", name="gram_pxq", k=d, p=d, q=ffn, ms=timeit(lambda: a @ a.mT, reps))
    if DEV == "cuda":
        try:
            torch.backends.cuda.preferred_linalg_library("magma")
            rec(
                what="prim",
                name="eigh_pxp_magma",
                k=d,
                p=d,
                q=d,
                ms=timeit(lambda: torch.linalg.eigh(m2), reps),
            )
        except Exception as e:
            print("ERR magma", repr(e)[:200])
        finally:
            torch.backends.cuda.preferred_linalg_library("default")
        sq = torch.randn(d, d, device=DEV, generator=gen)
        rec(
            what="prim",
            name="svd_pxp_gesvda",
            k=d,
            p=d,
            q=d,
            ms=timeit(lambda: torch.linalg.svd(sq, full_matrices=False, driver="gesvda"), 3, 1),
        )


def run_cands(args, d, ffn, ranks, reps, gen, rec):
    # ---- candidate solvers ----
    cands = {
        "package_randomized": cand_package,
        "randomized_svd": cand_randomized_svd,
        "rr_eigh_it2_sync": make_rr(2, orth_cholqr2_sync),
        "rr_eigh_it2": make_rr(2, orth_cholqr2_nosync),
        "rr_eigh_it1": make_rr(1, orth_cholqr2_nosync),
        "rr_half_it2": make_rr_half(2, orth_cholqr2_nosync),
        "rr_half_it1": make_rr_half(1, orth_cholqr2_nosync),
        "rr_half_it2_qr": make_rr_half(2, orth_qr),
        "rr_eigh_it2_qr": make_rr(2, orth_qr),
        "gram_eigh": cand_gram_eigh,
        "gram_si1_qr": make_gram_si(1, orth_qr),
        "gram_si2_qr": make_gram_si(2, orth_qr),
        "svd_lowrank": cand_svd_lowrank,
    }
    if DEV == "cuda":
        cands["svd_gesvda"] = make_svd_driver("gesvda")
    if args.cands:
        cands = {k: v for k, v in cands.items() if k in args.cands.split(",")}
    for kind in ("bench", "slow"):
        for qd in (d, ffn):
            a = test_matrix(d, qd, kind, gen)
            u, s, _ = torch.linalg.svd(a.double() if DEV == "cpu" else a, full_matrices=False)
            u, s = u.float(), s.float()
            total = (a.norm() ** 2).item()
            for r in ranks:
                best = (s[:r] ** 2).sum().item()
                for name, fn in cands.items():
                    g2 = torch.Generator(device=DEV).manual_seed(7)
                    try:
                        basis = fn(a, r, g2)
                        en = ((basis.mT @ a).norm() ** 2).item()
                        orth_err = (basis.mT @ basis - torch.eye(r, device=DEV)).abs().max().item()
                        sig = min(64, r // 2)
                        overlap = ((u[:, :sig].mT @ basis).norm() ** 2).item() / sig
                        ms = (
                            timeit(lambda fn=fn, a=a, r=r, g2=g2: fn(a, r, g2), reps)
                            if kind == "bench"
                            else float("nan")
                        )
                    except Exception as e:
                        print("ERR", name, repr(e)[:300])
                        en, orth_err, overlap, ms = (
                            float("nan"),
                            float("nan"),
                            float("nan"),
                            float("nan"),
                        )
                    rec(
                        what="cand",
                        name=name,
                        kind=kind,
                        p=d,
                        q=qd,
                        r=r,
                        ms=ms,
                        energy_vs_exact=en / best,
                        energy_frac=en / total,
                        orth_err=orth_err,
                        top_overlap=overlap,
                    )
    # batched: the 4 square matrices of a layer at once
    for r in ranks:
        a4 = torch.stack([test_matrix(d, d, "bench", gen) for _ in range(4)])
        for name in ("rr_eigh_it2", "rr_half_it2", "gram_eigh"):
            if name not in cands:
                continue
            fn = cands[name]

            def fb(fn=fn, r=r, name=name, a4=a4):
                gb = torch.Generator(device=DEV).manual_seed(1)
                if name == "gram_eigh":
                    return fn(a4, r, gb)
                k = r + 8
                om = torch.randn(4, d, k, generator=gb, device=DEV)
                q = orth_cholqr2_nosync(a4 @ om)
                its = 2
                for _ in range(its):
                    if name == "rr_half_it2":
                        q = orth_cholqr2_nosync(a4 @ (a4.mT @ q))
                    else:
                        q = orth_cholqr2_nosync(a4 @ orth_cholqr2_nosync(a4.mT @ q))
                return _rr_eigh(a4, q, r)

            try:
                ms = timeit(fb, reps)
                bb = fb()
                oe = (bb.mT @ bb - torch.eye(r, device=DEV)).abs().max().item()
            except Exception as e:
                print("ERR batch", name, repr(e)[:300])
                ms, oe = float("nan"), float("nan")
            rec(what="batch4", name=name, p=d, q=d, r=r, ms=ms, ms_per_matrix=ms / 4, orth_err=oe)
    rec(what="fallbacks", name="householder_fallbacks", n=FALLBACKS["n"])


def write(rows, out):
    write_csv(Path(out) / "profile_refresh.csv", rows)  # tagged with device and versions
    print("\nSUMMARY (ms)")
    for row in rows:
        if row["what"] == "prim":
            print(f"prim {row['name']:24s} k={row['k']:5d} q={row['q']:5d} {row['ms']:9.3f}")
    for row in rows:
        if row["what"] == "cand":
            print(
                f"cand {row['name']:20s} {row['kind']:5s} q={row['q']:5d} r={row['r']:4d} "
                f"{row['ms']:9.3f} ms  E/Eex={row['energy_vs_exact']:.6f} "
                f"ov={row['top_overlap']:.4f} orth={row['orth_err']:.1e}"
            )
    for row in rows:
        if row["what"] == "batch4":
            print(
                f"batch4 {row['name']:20s} r={row['r']:4d} {row['ms']:9.3f} ms "
                f"({row['ms_per_matrix']:.3f}/matrix) orth={row['orth_err']:.1e}"
            )
        if row["what"] == "fallbacks":
            print(f"Householder fallbacks taken by package_randomized: {row['n']}")


if __name__ == "__main__":
    main()
