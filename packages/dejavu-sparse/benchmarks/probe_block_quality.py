"""What selecting input channels in whole blocks costs in accuracy, on the real SmolLM2, per
projection: the relative output error ``||x W - (x * keep) W||^2 / ||x W||^2`` of TEAL's
fine-grained selection against block selection (blocks of 8 / 16 / 64 channels kept by their
RMS) at the same fraction of skipped inputs, with and without a one-time channel permutation
chosen on calibration tokens (the model's function is unchanged by a permutation: the weight
rows move with the channels):

- ``mean``: channels sorted by their mean magnitude (always-large channels share blocks);
- ``coact``: greedy co-activation groups (seeded by the highest-energy free channel, filled
  with the free channels whose magnitudes correlate most with it across tokens).

Inputs recorded on the calibration text (first half: choosing the permutation; second half:
the error), at three depths, for q/k/v's input, gate/up's input and down's input.

    python benchmarks/probe_block_quality.py [--out results/blocks_cpu.csv]
"""

from __future__ import annotations

import argparse

import torch

LAYERS = (3, 15, 27)


def keep_fine(x: torch.Tensor, s: float) -> torch.Tensor:
    return x.abs() > x.abs().quantile(s)


def keep_blocks(x: torch.Tensor, s: float, b: int, perm: torch.Tensor | None) -> torch.Tensor:
    xp = x if perm is None else x[:, perm]
    ms = xp.view(x.shape[0], -1, b).square().mean(-1)
    keep = (ms > ms.flatten().quantile(s)).repeat_interleave(b, 1)
    if perm is None:
        return keep
    out = torch.empty_like(keep)
    out[:, perm] = keep
    return out


def coact_order(x: torch.Tensor, b: int) -> torch.Tensor:
    a = x.abs()
    a = (a - a.mean(0)) / (a.std(0) + 1e-6)
    corr = a.T @ a / a.shape[0]
    energy = x.square().mean(0)
    free = torch.ones(x.shape[1], dtype=torch.bool)
    order: list[int] = []
    while free.any():
        seed = int(torch.where(free, energy, -1.0).argmax())
        c = torch.where(free, corr[seed], -9.0)
        c[seed] = 9.0
        group = c.topk(min(b, int(free.sum()))).indices
        order += group.tolist()
        free[group] = False
    return torch.tensor(order)


def rel_err(x: torch.Tensor, keep: torch.Tensor, w: torch.Tensor) -> float:
    y = x @ w.T
    return float((y - (x * keep) @ w.T).square().sum() / y.square().sum())


def main() -> None:
    from dejavu_sparse.text import stdlib_text

    from tensor_utils_dev.bench import environment_tags, results_dir, write_csv
    from tensor_utils_dev.models import load_smollm2

    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    p.add_argument("--out", default=str(results_dir(__file__) / "blocks_cpu.csv"))
    args = p.parse_args()
    torch.set_num_threads(1)
    model, tok = load_smollm2()
    ids = tok(stdlib_text("calibration"), return_tensors="pt")["input_ids"][0][: args.tokens]
    rec: dict[tuple[str, int], list[torch.Tensor]] = {}
    hooks = []
    for i in LAYERS:
        layer = model.model.layers[i]
        for site, module in (("attn_in", layer.self_attn.q_proj), ("mlp_in", layer.mlp.gate_proj),
                             ("down_in", layer.mlp.down_proj)):  # fmt: skip

            def hook(module, a, key=(site, i)):
                rec.setdefault(key, []).append(a[0].detach()[0])

            hooks.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        for chunk in ids.view(-1, 256):
            model(chunk[None], use_cache=False)
    for h in hooks:
        h.remove()
    rows = []
    with torch.no_grad():
        for (site, i), xs in rec.items():
            x = torch.cat(xs)
            xc, xe = x[: x.shape[0] // 2], x[x.shape[0] // 2 :]
            layer = model.model.layers[i]
            w = {"attn_in": layer.self_attn.q_proj, "mlp_in": layer.mlp.gate_proj,
                 "down_in": layer.mlp.down_proj}[site].weight.detach()  # fmt: skip
            by_mean = xc.abs().mean(0).argsort()
            for s in args.sparsities:
                row: dict = {"bench": "block_error", "model": "SmolLM2-135M-Instruct",
                             "site": site, "layer": i, "sparsity": s,
                             "fine_err": round(rel_err(xe, keep_fine(xe, s), w), 5)}  # fmt: skip
                for b in (8, 16, 64):
                    orders = {"": None, "_mean": by_mean, "_coact": coact_order(xc, b)}
                    for name, perm in orders.items():
                        err = rel_err(xe, keep_blocks(xe, s, b, perm), w)
                        row[f"b{b}{name}_err"] = round(err, 5)
                rows.append(row)
                print(row, flush=True)
    write_csv(args.out, rows, tags={**environment_tags(packages=["dejavu-sparse"]),
                                    "dtype": "float32", "tokens": str(ids.numel())})  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
