"""Contiguous reads for the selected rows: run-wise and block-wise sparse products against dense
and against the shipped in-place op, at Llama-3-8B MLP shapes on the CPU (float32, batch 1).

TEAL's MLP on the CPU reads the selected input channels of transposed weights
(``gather_cols``: one ``embedding_bag`` over the selected rows, where they lie). That reaches
72-78% of the dense product's bandwidth; a contiguous slice of the same size reaches about 95%.
This probe times what lies between:

- ``runs``: the fine-grained selection sorted into maximal runs of consecutive rows, one
  ``addmm`` per run over a slice view of the weight (no copy; a Python loop over the runs);
- ``block<B>``: whole blocks of ``B`` consecutive input channels selected by the block's L2
  norm (TEAL per block), consecutive selected blocks merged into one ``addmm`` each;
- ``block<B>_eb``: the same block selection as one ``embedding_bag`` over the block-expanded
  indices (no Python loop; the shipped op fed block-structured indices);
- ``coo``: the fine-grained selection as a one-row sparse COO input times the weight
  (``torch.sparse.mm``: one BLAS axpy per selected row; kernel rows only);
- ``contig``: a product over a contiguous slice of the selected size (the bound).

Kernel rows give one product at a time (selection given); MLP rows time the whole TEAL MLP
block (gate/up fused, SiLU, down) with the selection from the activations included, against
the ``nn.Linear`` dense block. Two weight copies are cycled with different inputs, so the
weights stream from memory. Interleaved rounds, medians.

    python benchmarks/probe_blocks_cpu.py [--rounds 7] [--out results/blocks_cpu.csv]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F

from tensor_utils_dev.bench import interleaved_medians

HIDDEN, INTER = 4096, 14336


def each(fn: Callable[..., object], *lists) -> Callable[[], object]:
    """A timed call: ``fn`` applied to every tuple of the lists (one per weight copy)."""
    return lambda: [fn(*args) for args in zip(*lists, strict=True)]


def runs_of(mask: torch.Tensor) -> tuple[list[int], list[int]]:
    """Starts and ends (exclusive) of the maximal runs of True in a 1-D bool mask."""
    m = mask.to(torch.int8)
    z = m.new_zeros(1)
    d = torch.diff(m, prepend=z, append=z)
    return (d == 1).nonzero().squeeze(1).tolist(), (d == -1).nonzero().squeeze(1).tolist()


def runs_product(x: torch.Tensor, w_t: torch.Tensor, starts, ends, scale: int = 1):
    """``x @ w_t`` over the rows of the given runs only (in units of ``scale`` rows)."""
    out = x.new_zeros(x.shape[0], w_t.shape[1])
    for s, e in zip(starts, ends, strict=True):
        out.addmm_(x[:, s * scale : e * scale], w_t[s * scale : e * scale])
    return out


def eb_product(x: torch.Tensor, w_t: torch.Tensor, idx: torch.Tensor):
    """Batch-1 ``x[:, idx] @ w_t[idx]`` as one ``embedding_bag`` (the shipped in-place op)."""
    offsets = torch.zeros(1, dtype=torch.long)
    return F.embedding_bag(idx, w_t, offsets, mode="sum", per_sample_weights=x[0, idx])


def coo_product(x: torch.Tensor, w_t: torch.Tensor, idx: torch.Tensor):
    """Batch-1 ``x[:, idx] @ w_t[idx]`` as ``torch.sparse.mm`` of a one-row COO input (the CPU
    kernel adds each selected row with a BLAS axpy)."""
    rows = torch.stack((torch.zeros_like(idx), idx))
    sparse = torch.sparse_coo_tensor(rows, x[0, idx], (1, w_t.shape[0]), is_coalesced=True)
    return torch.sparse.mm(sparse, w_t)


def block_select(x: torch.Tensor, block: int, density: float) -> torch.Tensor:
    """The blocks of ``block`` consecutive channels kept: the top ``density`` by L2 norm (a
    threshold calibrated to hit the density exactly stands in for TEAL's per-block one)."""
    score = x.view(-1, block).square().sum(1)
    k = max(1, round(density * score.numel()))
    return score >= score.kthvalue(score.numel() - k + 1).values


def kernel_rows(rounds: int, densities, blocks) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    rows = []
    for n, m, name in ((INTER, HIDDEN, "down_t"), (HIDDEN, 2 * INTER, "gate_up_t")):
        ws = [torch.randn(n, m, generator=g) * 0.02 for _ in range(2)]
        xs = [torch.randn(1, n, generator=g) for _ in ws]
        for density in densities:
            sel = int(density * n)
            fine = [x.abs()[0] >= x.abs()[0].kthvalue(n - sel + 1).values for x in xs]
            idx = [f.nonzero().squeeze(1) for f in fine]
            fruns = [runs_of(f) for f in fine]
            fns: dict[str, Callable[[], object]] = {
                "dense": each(torch.mm, xs, ws),
                "contig": each(lambda x, w, sel=sel: x[:, :sel] @ w[:sel], xs, ws),
                "inplace": each(eb_product, xs, ws, idx),
                "coo": each(coo_product, xs, ws, idx),
                "runs": each(lambda x, w, r: runs_product(x, w, *r), xs, ws, fruns),
            }
            nruns = {"runs": len(fruns[0][0])}
            for b in blocks:
                bm = [block_select(x, b, density) for x in xs]
                br = [runs_of(mk) for mk in bm]
                bidx = [(mk.nonzero() * b + torch.arange(b)).reshape(-1) for mk in bm]
                fns[f"block{b}"] = each(lambda x, w, r, b=b: runs_product(x, w, *r, scale=b),
                                        xs, ws, br)  # fmt: skip
                fns[f"block{b}_eb"] = each(eb_product, xs, ws, bidx)
                nruns[f"block{b}"] = len(br[0][0])
            t = {k: v / len(ws) for k, v in interleaved_medians(fns, rounds, rotate=True).items()}
            row: dict = {"bench": "kernel", "matrix": name, "shape": f"{n}x{m}", "batch": 1,
                         "density": density, **{f"{k}_ms": round(v, 3) for k, v in t.items()},
                         **{f"{k}_speedup": round(t["dense"] / v, 3) for k, v in t.items() if k != "dense"},
                         **{f"{k}_calls": v for k, v in nruns.items()},
                         "dense_GBps": round(n * m * 4 / t["dense"] / 1e6, 2)}  # fmt: skip
            rows.append(row)
            print({k: v for k, v in row.items() if "speedup" in k or k in ("matrix", "density")},
                  flush=True)  # fmt: skip
    return rows


def mlp_rows(rounds: int, densities, blocks) -> list[dict]:
    """The TEAL MLP block (selection included) against the ``nn.Linear`` dense block."""
    g = torch.Generator().manual_seed(1)
    copies = []
    for _ in range(2):
        wg, wu = (torch.randn(INTER, HIDDEN, generator=g) * 0.02 for _ in range(2))
        wd = torch.randn(HIDDEN, INTER, generator=g) * 0.02
        gu_t = torch.cat((wg, wu)).t().contiguous()
        copies.append((wg, wu, wd, gu_t, wd.t().contiguous()))
    xs = [torch.randn(1, HIDDEN, generator=g) for _ in copies]

    def dense(x, c):
        wg, wu, wd, _, _ = c
        return F.linear(F.silu(F.linear(x, wg)) * F.linear(x, wu), wd)

    def split_act(gu):
        g_, u_ = gu.split(INTER, dim=1)
        return F.silu(g_) * u_

    def teal_inplace(x, c, t):  # the shipped fine-grained path (one selection per input)
        _, _, _, gu_t, d_t = c
        t1, t2 = t
        i1 = (x.abs() > t1)[0].nonzero().squeeze(1)
        h = split_act(eb_product(x, gu_t, i1))
        i2 = (h.abs() > t2)[0].nonzero().squeeze(1)
        return eb_product(h, d_t, i2)

    def teal_runs(x, c, t):
        _, _, _, gu_t, d_t = c
        t1, t2 = t
        h = split_act(runs_product(x, gu_t, *runs_of((x.abs() > t1)[0])))
        return runs_product(h, d_t, *runs_of((h.abs() > t2)[0]))

    def teal_block(x, c, t, b):
        _, _, _, gu_t, d_t = c
        t1, t2 = t
        h = split_act(runs_product(x, gu_t, *runs_of(x.view(-1, b).square().sum(1) > t1), scale=b))
        return runs_product(h, d_t, *runs_of(h.view(-1, b).square().sum(1) > t2), scale=b)

    def teal_block_eb(x, c, t, b, ar):
        _, _, _, gu_t, d_t = c
        t1, t2 = t
        i1 = ((x.view(-1, b).square().sum(1) > t1).nonzero() * b + ar).reshape(-1)
        h = split_act(eb_product(x, gu_t, i1))
        i2 = ((h.view(-1, b).square().sum(1) > t2).nonzero() * b + ar).reshape(-1)
        return eb_product(h, d_t, i2)

    def contig(x, c, density):
        _, _, _, gu_t, d_t = c
        k1, k2 = int(density * HIDDEN), int(density * INTER)
        h = split_act(x[:, :k1] @ gu_t[:k1])
        return h[:, :k2] @ d_t[:k2]

    def quantile_t(v: torch.Tensor, density: float) -> float:  # keeps `density` of v above t
        return float(v.flatten().float().quantile(1 - density))

    def fine_h(x, c, t1):  # the down projection's input after a fine-grained gate/up
        return split_act((x * (x.abs() > t1)) @ c[3])

    def block_h(x, c, t1, b):  # ... after a block-sparse gate/up
        keep = (x.view(-1, b).square().sum(1) > t1).repeat_interleave(b)
        return split_act((x * keep) @ c[3])

    rows = []
    with torch.no_grad():
        for density in densities:
            # thresholds that keep exactly `density` of the inputs of gate/up and of down, each
            # down threshold on the activations its own sparse gate/up produces
            ft = []
            for x, c in zip(xs, copies, strict=True):
                t1 = quantile_t(x.abs(), density)
                ft.append((t1, quantile_t(fine_h(x, c, t1).abs(), density)))
            fns: dict[str, Callable[[], object]] = {
                "dense": each(dense, xs, copies),
                "contig": each(lambda x, c, d=density: contig(x, c, d), xs, copies),
                "inplace": each(teal_inplace, xs, copies, ft),
                "runs": each(teal_runs, xs, copies, ft),
            }
            kept: dict[str, float] = {}
            for b in blocks:
                bt = []
                for x, c in zip(xs, copies, strict=True):
                    t1 = quantile_t(x.view(-1, b).square().sum(1), density)
                    h = block_h(x, c, t1, b)
                    bt.append((t1, quantile_t(h.view(-1, b).square().sum(1), density)))
                    kept[f"block{b}_down_kept"] = round(
                        float((h.view(-1, b).square().sum(1) > bt[-1][1]).float().mean()), 4
                    )
                ar = torch.arange(b)
                fns[f"block{b}"] = each(lambda x, c, t, b=b: teal_block(x, c, t, b), xs, copies, bt)
                fns[f"block{b}_eb"] = each(lambda x, c, t, b=b, ar=ar: teal_block_eb(x, c, t, b, ar),
                                           xs, copies, bt)  # fmt: skip
            t = {k: v / len(xs) for k, v in interleaved_medians(fns, rounds, rotate=True).items()}
            row = {"bench": "mlp", "shape": "4096/14336 gate,up,down", "batch": 1,
                   "density": density, **{f"{k}_ms": round(v, 3) for k, v in t.items()},
                   **{f"{k}_speedup": round(t["dense"] / v, 3) for k, v in t.items() if k != "dense"},
                   **kept}  # fmt: skip
            rows.append(row)
            print({k: v for k, v in row.items() if "speedup" in k or "kept" in k or k == "density"},
                  flush=True)  # fmt: skip
    return rows


def main() -> None:
    from tensor_utils_dev.bench import environment_tags, results_dir, write_csv

    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parts", nargs="+", default=["kernel", "mlp"])
    p.add_argument("--densities", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    p.add_argument("--blocks", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--out", default=str(results_dir(__file__) / "blocks_cpu.csv"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tags = {**environment_tags(packages=["dejavu-sparse"]), "dtype": "float32",
            "threads": str(args.threads), "rounds": str(args.rounds)}  # fmt: skip
    if "kernel" in args.parts:
        write_csv(args.out, kernel_rows(args.rounds, args.densities, args.blocks), tags=tags)
    if "mlp" in args.parts:
        write_csv(args.out, mlp_rows(args.rounds, args.densities, args.blocks), tags=tags)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
