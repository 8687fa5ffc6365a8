"""Which change to the Deja Vu predictors' calibration raises their recall on SmolLM2 (CPU):
more calibration tokens, each block's own input instead of one block ahead, a larger rank,
more epochs. Three layers (early, middle, late); recall of the oracle top half of the MLP
neurons on held-out text. Run by hand (several minutes).

    python benchmarks/tune_predictors.py [--tokens 16384] [--out results/predictor_study_cpu.csv]
"""

from __future__ import annotations

import argparse
import time

import torch

LAYERS = (2, 14, 26)


def collect(model, ids: torch.Tensor, seq: int = 256) -> dict:
    """Per layer: the predictors' two candidate inputs and the neurons' importance labels."""
    from dejavu_sparse.arch import rms

    rec: dict = {}
    hooks = []
    for i in LAYERS:
        layer = model.model.layers[i]

        def ahead(mod, args, kwargs, i=i):  # the residual entering the layer (one block ahead)
            h = args[0] if args else kwargs["hidden_states"]
            rec.setdefault(("ahead", i), []).append(rms(h).reshape(-1, h.shape[-1]).half())

        def own(mod, args, i=i):  # the MLP's own input, and its labels
            x = args[0]
            rec.setdefault(("own", i), []).append(x.reshape(-1, x.shape[-1]).half())
            h = mod.act_fn(mod.gate_proj(x)) * mod.up_proj(x)
            imp = h.abs() * mod.down_proj.weight.norm(dim=0)
            rec.setdefault(("label", i), []).append(imp.reshape(-1, h.shape[-1]).half())

        hooks += [layer.register_forward_pre_hook(ahead, with_kwargs=True),
                  layer.mlp.register_forward_pre_hook(own)]  # fmt: skip
    with torch.no_grad():
        for s in range(0, ids.numel() // seq * seq, seq):
            model(ids[s : s + seq][None], use_cache=False)
    for h in hooks:
        h.remove()
    return {k: torch.cat(v) for k, v in rec.items()}


def main() -> None:
    from dejavu_sparse.calibration import recall_at, train_predictor
    from dejavu_sparse.text import stdlib_text

    from tensor_utils_dev.bench import environment_tags, results_dir, write_csv
    from tensor_utils_dev.models import load_smollm2

    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--out", default=str(results_dir(__file__) / "predictor_study_cpu.csv"))
    args = p.parse_args()
    torch.set_num_threads(1)
    model, tok = load_smollm2()
    cal = tok(stdlib_text("calibration"), return_tensors="pt")["input_ids"][0]
    ev = tok(stdlib_text("evaluation"), return_tensors="pt")["input_ids"][0][:2048]
    big, small, held = (
        collect(model, cal[: args.tokens]),
        collect(model, cal[:4096]),
        collect(model, ev),
    )
    keep = 768  # half of SmolLM2's 1536 neurons
    configs = [("4096 tokens, one block ahead, rank 128, 5 epochs", small, "ahead", 128, 5),
               (f"{args.tokens} tokens, one block ahead, rank 128, 5 epochs", big, "ahead", 128, 5),
               ("4096 tokens, own input, rank 128, 5 epochs", small, "own", 128, 5),
               (f"{args.tokens} tokens, own input, rank 128, 5 epochs", big, "own", 128, 5),
               (f"{args.tokens} tokens, own input, rank 256, 10 epochs", big, "own", 256, 10)]  # fmt: skip
    rows = []
    for name, data, inp, rank, epochs in configs:
        t0 = time.perf_counter()
        recalls = []
        for i in LAYERS:
            pred = train_predictor(data[(inp, i)], data[("label", i)], rank=rank, density=0.5,
                                   epochs=epochs, seed=i)  # fmt: skip
            recalls.append(recall_at(pred, held[(inp, i)], held[("label", i)], keep))
        rows.append({"config": name, **{f"recall_layer{i}": round(r, 4)
                                        for i, r in zip(LAYERS, recalls, strict=True)},
                     "recall_mean": round(sum(recalls) / len(recalls), 4),
                     "train_s": round(time.perf_counter() - t0, 1)})  # fmt: skip
        print(rows[-1], flush=True)
    tags = {**environment_tags(packages=["dejavu-sparse"]), "model": "SmolLM2-135M-Instruct",
            "sparsity": "0.5", "eval_tokens": str(ev.numel())}  # fmt: skip
    write_csv(args.out, rows, tags=tags)


if __name__ == "__main__":
    main()
