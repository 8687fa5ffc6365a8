"""Tiny models and training loops shared by the optimizer tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor


class TinyLM(nn.Module):
    """Embedding -> two 'attn'/'mlp' Linear blocks -> norm -> head: GaLore's param mix."""

    def __init__(self, vocab: int = 23, dim: int = 12, hidden: int = 20):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.attn = nn.Linear(dim, dim)
        self.mlp_up = nn.Linear(dim, hidden)
        self.mlp_down = nn.Linear(hidden, dim, bias=False)
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        h = h + torch.tanh(self.attn(h))
        h = h + self.mlp_down(torch.relu(self.mlp_up(h)))
        return self.lm_head(self.norm(h))


def tiny_model(seed: int = 0, **kwargs) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM(**kwargs)


def batches(n: int, *, batch: int = 8, seq: int = 6, vocab: int = 23, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (batch, seq), generator=gen) for _ in range(n)]


def lm_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(ids[:, :-1])
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def galore_groups(model: TinyLM, **galore):
    keys = {"rank": 4, "update_proj_gap": 3, "scale": 0.25, "proj_type": "std", **galore}
    big = [model.attn.weight, model.mlp_up.weight, model.mlp_down.weight]
    ids = {id(p) for p in big}
    return [
        {"params": big, **keys},
        {"params": [p for p in model.parameters() if id(p) not in ids]},
    ]


def train(model, optimizer, data, *, clip: float | None = None, scheduler=None) -> list[float]:
    losses = []
    for ids in data:
        optimizer.zero_grad()
        loss = lm_loss(model, ids)
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
    return losses


def max_param_diff(a: nn.Module, b: nn.Module) -> float:
    return max(
        (x - y).abs().max().item() for x, y in zip(a.parameters(), b.parameters(), strict=True)
    )


def ddp_worker(
    rank: int, world: int, init_file: str, out_dir: str, solvers: tuple[str, ...]
) -> None:
    """One DDP rank (gloo, CPU): train the tiny model on its half of each batch, save state."""
    import torch.distributed as dist
    from galore_optim import GaLoreAdamW

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for solver in solvers:
            model = tiny_model()
            ddp = nn.parallel.DistributedDataParallel(model)
            opt = GaLoreAdamW(galore_groups(model, update_proj_gap=2, solver=solver), lr=1e-2)
            for ids in batches(5, batch=8):
                opt.zero_grad()
                lm_loss(ddp, ids.chunk(world)[rank]).backward()
                opt.step()
            torch.save(
                {"params": [p.detach() for p in model.parameters()], "state": opt.state_dict()},
                f"{out_dir}/{solver}-rank{rank}.pt",
            )
    finally:
        dist.destroy_process_group()


def load_agreeing_ranks(out_dir, name: str) -> dict:
    """Rank 0's saved results for ``name`` after checking that rank 1 ended with the same
    parameters and the same projectors (3 of them: the tiny model's GaLore matrices)."""
    r0 = torch.load(f"{out_dir}/{name}-rank0.pt", weights_only=True)
    r1 = torch.load(f"{out_dir}/{name}-rank1.pt", weights_only=True)
    for a, b in zip(r0["params"], r1["params"], strict=True):
        assert torch.equal(a, b)
    projectors = 0
    for k, st in r0["state"]["state"].items():
        for key in ("proj_left", "proj_right"):
            if key in st:
                assert torch.equal(st[key], r1["state"]["state"][k][key])
                projectors += 1
    assert projectors == 3
    return r0


def _dtensor(p: torch.Tensor) -> DTensor:
    """An FSDP2-sharded parameter, typed as the DTensor it is."""
    from torch.distributed.tensor import DTensor

    assert isinstance(p, DTensor), type(p)
    return p


def fsdp_optimizer(name: str, model: TinyLM):
    """The optimizers the FSDP2 test runs, by name (picklable for ``mp.spawn``)."""
    from galore_optim import GaLoreAdafactor, GaLoreAdamW, GaLoreAdamW8bit

    if name in ("adamw-exact", "adamw-randomized"):
        solver = name.split("-")[1]
        return GaLoreAdamW(
            galore_groups(model, update_proj_gap=2, solver=solver), lr=1e-2, weight_decay=0.1
        )
    if name == "adamw8bit":
        return GaLoreAdamW8bit(galore_groups(model, update_proj_gap=2), lr=1e-2, min_8bit_size=0)
    if name == "adafactor":
        return GaLoreAdafactor(galore_groups(model, update_proj_gap=2), beta1=0.9)
    raise ValueError(name)


def fsdp_worker(rank: int, world: int, init_file: str, out_dir: str, names: tuple[str, ...]):
    """One FSDP2 rank (gloo, CPU): ``fully_shard`` the tiny model, train 5 steps on this rank's
    half of each batch, then resume from the step-3 checkpoint and redo steps 4-5."""
    import io

    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for name in names:
            model = tiny_model()
            for module in (model.embed, model.attn, model.mlp_up, model.mlp_down, model.lm_head):
                fully_shard(module)
            fully_shard(model)
            opt = fsdp_optimizer(name, model)
            data = batches(5, batch=8)

            def run(opt, data, model=model):
                for ids in data:
                    opt.zero_grad()
                    lm_loss(model, ids.chunk(world)[rank]).backward()
                    opt.step()

            run(opt, data[:3])
            saved_params = [_dtensor(p).to_local().clone() for p in model.parameters()]
            buf = io.BytesIO()
            torch.save(opt.state_dict(), buf)
            run(opt, data[3:])
            final = [_dtensor(p).full_tensor() for p in model.parameters()]
            with torch.no_grad():
                for p, s in zip(model.parameters(), saved_params, strict=True):
                    _dtensor(p).to_local().copy_(s)
            resumed = fsdp_optimizer(name, model)
            buf.seek(0)
            resumed.load_state_dict(torch.load(buf, weights_only=True))
            run(resumed, data[3:])
            torch.save(
                {
                    "params": final,
                    "resumed": [_dtensor(p).full_tensor() for p in model.parameters()],
                    "state": opt.state_dict(),
                },
                f"{out_dir}/{name}-rank{rank}.pt",
            )
    finally:
        dist.destroy_process_group()


def fsdp_dcp_worker(rank: int, world: int, init_file: str, out_dir: str, names: tuple[str, ...]):
    """One FSDP2 rank: train 5 steps; separately, train 3, ``save_checkpoint`` (DCP), build a
    fresh sharded model and optimizer, ``load_checkpoint`` and train steps 4-5."""
    import torch.distributed as dist
    from galore_optim.checkpoint import load_checkpoint, save_checkpoint
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)

    def sharded(seed: int = 0):
        model = tiny_model(seed)
        for module in (model.embed, model.attn, model.mlp_up, model.mlp_down, model.lm_head):
            fully_shard(module)
        fully_shard(model)
        return model

    def run(model, opt, data):
        for ids in data:
            opt.zero_grad()
            lm_loss(model, ids.chunk(world)[rank]).backward()
            opt.step()

    try:
        for name in names:
            data = batches(5, batch=8)
            model = sharded()
            opt = fsdp_optimizer(name, model)
            run(model, opt, data)
            final = [_dtensor(p).full_tensor() for p in model.parameters()]
            model = sharded()
            opt = fsdp_optimizer(name, model)
            run(model, opt, data[:3])
            save_checkpoint(f"{out_dir}/{name}-dcp", model, opt)
            resumed_model = sharded(seed=5)  # different init: everything comes from the checkpoint
            resumed_opt = fsdp_optimizer(name, resumed_model)
            load_checkpoint(f"{out_dir}/{name}-dcp", resumed_model, resumed_opt)
            run(resumed_model, resumed_opt, data[3:])
            torch.save(
                {
                    "params": final,
                    "resumed": [_dtensor(p).full_tensor() for p in resumed_model.parameters()],
                },
                f"{out_dir}/{name}-dcp-rank{rank}.pt",
            )
    finally:
        dist.destroy_process_group()
