"""The FSDP2 test's ranks (``mp.spawn`` imports them by module name, so they live outside the
test file): a tiny JetMoE trained on the CPU with gloo, one shard of each batch per rank."""

from __future__ import annotations

from typing import Any

import torch

# router-loss weights large enough that an un-aggregated aux loss would move the parameters
COEFS = dict(aux_loss_coef=1.0, router_z_loss_coef=0.1)
STEPS = 3


def tiny_model(seed: int = 0):
    from jetmoe_model import JetMoEConfig, JetMoEForCausalLM
    from jetmoe_testlib import TINY, randomize_

    torch.manual_seed(seed)
    model = JetMoEForCausalLM(JetMoEConfig(**TINY, **COEFS))
    return randomize_(model, seed, scale=0.2).train()


def batches(n: int = STEPS, batch: int = 4, seq: int = 8, vocab: int = 97, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (batch, seq), generator=gen) for _ in range(n)]


def padded_batch():
    """Right-padded rows, padded differently on the two halves: ranks see unequal token counts."""
    ids = batches(1, seed=7)[0]
    mask = torch.ones_like(ids)
    mask[2:, 5:] = 0
    mask[3, 3:] = 0
    return ids, mask


def router_losses_on(model, ids, mask) -> tuple[float, float]:
    with torch.no_grad():
        out = model(ids, attention_mask=mask, output_router_logits=True)
    return out.aux_loss.item(), out.z_loss.item()


def optimizer(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)


def step(model, opt, ids) -> dict[str, float]:
    out = model(ids, labels=ids, output_router_logits=True)
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {k: getattr(out, k).item() for k in ("loss", "lm_loss", "aux_loss", "z_loss")}


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Train ``STEPS`` steps on this rank's rows of each batch (full precision, checkpointing
    on), then check a bf16 ``MixedPrecisionPolicy`` is applied; rank 0 saves what it saw."""
    import torch.distributed as dist
    from jetmoe_model import router_losses
    from jetmoe_model.distributed import mixed_precision, shard_model

    from tensor_utils_dev.testing.distributed import probe_mixed_precision

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model: Any = shard_model(tiny_model(), gradient_checkpointing=True)
        block_calls = [0]  # a module inside the block: its hooks run again when recomputed
        model.model.layers[0].mlp.register_forward_pre_hook(
            lambda *_: block_calls.__setitem__(0, block_calls[0] + 1)
        )
        opt = optimizer(model)
        history, local_aux = [], []
        for ids in batches():
            rows = ids.chunk(world)[rank]
            with torch.no_grad():  # this rank's tokens only: what an un-aggregated loss sees
                out = model(rows, output_router_logits=True)
                local_aux.append(
                    float(router_losses(out.router_logits, out.router_expert_index)[0])
                )
            block_calls[0] = 0
            history.append(step(model, opt, rows))
        calls_last_step = block_calls[0]
        ids, mask = padded_batch()
        padded = router_losses_on(model, ids.chunk(world)[rank], mask.chunk(world)[rank])
        lm_losses: list[Any] = [None] * world
        dist.all_gather_object(lm_losses, [h["lm_loss"] for h in history])
        params = [p.full_tensor().detach().clone() for p in model.parameters()]

        policy_model: Any = shard_model(tiny_model(), mp_policy=mixed_precision(torch.bfloat16))
        rows = batches(1)[0].chunk(world)[rank]
        mp = probe_mixed_precision(
            policy_model,
            [("block", policy_model.model.layers[0]), ("root", policy_model)],
            lambda: policy_model(rows, labels=rows, output_router_logits=True),
        )
        if rank == 0:
            torch.save(
                {
                    "history": history,
                    "lm_losses": lm_losses,
                    "padded": padded,
                    "local_aux": local_aux,
                    "block_calls": calls_last_step,
                    "params": params,
                    "mp": mp,
                },
                f"{out_dir}/rank0.pt",
            )
        dist.barrier()
    finally:
        dist.destroy_process_group()
