"""The FSDP2 test's ranks (``mp.spawn`` imports them by module name, so they live outside the
test file): a tiny Megalodon trained on the CPU with gloo, one shard of each batch per rank."""

from __future__ import annotations

import torch

STEPS = 3


def tiny_model(seed: int = 0):
    from megalodon_testlib import tiny_model as build

    return build(seed).train()


def batches(n: int = STEPS, batch: int = 4, seq: int = 16, vocab: int = 97, seed: int = 1):
    """Sequences of two attention chunks (chunk_size 8), so the CEMA state crosses a chunk."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (batch, seq), generator=gen) for _ in range(n)]


def optimizer(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)


def step(model, opt, ids) -> float:
    out = model(ids, labels=ids)
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return out.loss.item()


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Train ``STEPS`` steps on this rank's rows of each batch (full precision, checkpointing
    on), then check a bf16 ``MixedPrecisionPolicy`` is applied; rank 0 saves what it saw."""
    import torch.distributed as dist
    from megalodon_model.distributed import mixed_precision, shard_model
    from megalodon_model.modeling import MegalodonBlock
    from torch.distributed.tensor import DTensor

    from tensor_utils_dev.testing.distributed import probe_mixed_precision

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = tiny_model()
        shard_model(model, gradient_checkpointing=True)  # in place
        block = model.model.layers[0]
        assert isinstance(block, MegalodonBlock)
        block_calls = [0]  # a module inside the block: its hooks run again when recomputed
        block.nffn.register_forward_pre_hook(
            lambda *_: block_calls.__setitem__(0, block_calls[0] + 1)
        )
        opt = optimizer(model)
        losses = []
        for ids in batches():
            block_calls[0] = 0
            losses.append(step(model, opt, ids.chunk(world)[rank]))
        gathered: list[list[float] | None] = [None] * world
        dist.all_gather_object(gathered, losses)
        params = [
            (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone()
            for p in model.parameters()
        ]

        policy_model = tiny_model()
        shard_model(policy_model, mp_policy=mixed_precision(torch.bfloat16))
        rows = batches(1)[0].chunk(world)[rank]
        mp = probe_mixed_precision(
            policy_model,
            [("block", policy_model.model.layers[0]), ("root", policy_model)],
            lambda: policy_model(rows, labels=rows),
        )
        if rank == 0:
            torch.save(
                {"losses": gathered, "block_calls": block_calls[0], "params": params, "mp": mp},
                f"{out_dir}/rank0.pt",
            )
        dist.barrier()
    finally:
        dist.destroy_process_group()
