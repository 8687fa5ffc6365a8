"""FSDP2: two gloo processes on the CPU, the tiny model under ``fully_shard`` (every parameter a
DTensor sharded on dim 0), end equal to one process on the whole batch; the optimizer state
round-trips through ``state_dict`` / ``torch.load(weights_only=True)`` and resumes exactly."""

import pytest
import torch
from galore_testlib import (
    batches,
    fsdp_optimizer,
    fsdp_worker,
    load_agreeing_ranks,
    tiny_model,
    train,
)
from torch.multiprocessing.spawn import spawn

from tensor_utils_dev.testing.distributed import fully_shard_available

NAMES = ("adamw-exact", "adamw-randomized", "adamw8bit", "adafactor")


@pytest.mark.skipif(
    not fully_shard_available(), reason="torch.distributed.fsdp.fully_shard missing"
)
def test_fsdp2_two_ranks_match_single_process(tmp_path):
    spawn(fsdp_worker, args=(2, str(tmp_path / "init"), str(tmp_path), NAMES), nprocs=2, join=True)
    for name in NAMES:
        r0 = load_agreeing_ranks(tmp_path, name)
        for a, b in zip(r0["params"], r0["resumed"], strict=True):
            assert torch.equal(a, b), f"{name}: resume from state_dict diverged"
        single = tiny_model()
        train(single, fsdp_optimizer(name, single), batches(5, batch=8))
        # 8-bit: plain (non-GaLore) params quantize their moments in 256-value blocks of the
        # local shard, not of the full tensor, so they match one process to quantization error.
        atol = 2e-3 if name == "adamw8bit" else 2e-5
        for a, b in zip(r0["params"], single.parameters(), strict=True):
            torch.testing.assert_close(a, b.detach(), atol=atol, rtol=1e-4, msg=name)


@pytest.mark.skipif(
    not fully_shard_available(), reason="torch.distributed.fsdp.fully_shard missing"
)
def test_fsdp2_dcp_checkpoint_resumes_exactly(tmp_path):
    """save_checkpoint at step 3 with 2 ranks (torch.distributed.checkpoint), load into a fresh
    sharded model and optimizer, train on: equal to the uninterrupted run."""
    from galore_testlib import fsdp_dcp_worker

    spawn(
        fsdp_dcp_worker,
        args=(2, str(tmp_path / "init"), str(tmp_path), NAMES),
        nprocs=2,
        join=True,
    )
    for name in NAMES:
        for rank in range(2):
            r = torch.load(tmp_path / f"{name}-dcp-rank{rank}.pt", weights_only=True)
            for a, b in zip(r["params"], r["resumed"], strict=True):
                assert torch.equal(a, b), f"{name}: DCP resume diverged"
