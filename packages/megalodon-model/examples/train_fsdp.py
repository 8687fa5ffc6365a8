"""Train a Megalodon causal LM data-parallel and fully sharded with FSDP2.

    torchrun --nproc-per-node 2 examples/train_fsdp.py                    # CPU: gloo
    torchrun --nproc-per-node 8 examples/train_fsdp.py --bf16 --checkpointing --steps 100

On CUDA each rank takes the GPU of its ``LOCAL_RANK`` and nccl; on the CPU, gloo. The data is
random tokens (a stand-in for your loader: give each rank its own shard of every global batch,
as ``DistributedSampler`` does). Each sequence stays whole on one rank: CEMA and the timestep
norm run along it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist
from megalodon_model import MegalodonConfig, MegalodonForCausalLM
from megalodon_model.distributed import mixed_precision, shard_model


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=4, help="sequences per rank per step")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--chunk", type=int, default=64, help="attention chunk length")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--bf16", action="store_true", help="MixedPrecisionPolicy(param_dtype=bf16)")
    p.add_argument("--checkpointing", action="store_true", help="recompute blocks in backward")
    p.add_argument(
        "--no-reshard", action="store_true", help="keep gathered parameters until backward"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON line per step on rank 0")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if "RANK" not in os.environ:
        print("train_fsdp.py: launch with torchrun --nproc-per-node N", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available()
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        torch.manual_seed(args.seed)  # same initial weights on every rank
        config = MegalodonConfig(
            vocab_size=32000,
            hidden_size=args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=max(1, args.hidden // 128),
            z_dim=args.hidden // 4,
            value_dim=args.hidden * 2,
            intermediate_size=args.hidden * 8 // 3,
            chunk_size=args.chunk,
            norm_num_groups=min(32, args.hidden // 8),
        )
        model = MegalodonForCausalLM(config).to(device).train()  # pyright: ignore[reportArgumentType]  (transformers types .to() wrongly)
        shard_model(
            model,
            mp_policy=mixed_precision(torch.bfloat16) if args.bf16 else None,
            reshard_after_forward=not args.no_reshard,
            gradient_checkpointing=args.checkpointing,
        )
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
        data = torch.Generator().manual_seed(args.seed + 1 + rank)  # this rank's shard
        for step in range(args.steps):
            t0 = time.perf_counter()
            ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=data)
            ids = ids.to(device)
            out = model(ids, labels=ids)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss = out.loss.detach().clone()
            dist.all_reduce(loss)  # each rank's loss is on its shard: average them
            if rank == 0:
                row = {
                    "step": step,
                    "loss": loss.item() / world,
                    "seconds": time.perf_counter() - t0,
                }
                print(
                    json.dumps(row)
                    if args.json
                    else " ".join(f"{k}={v:.4g}" for k, v in row.items())
                )
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
