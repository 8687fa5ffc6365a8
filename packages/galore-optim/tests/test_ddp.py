"""DDP: two gloo processes on the CPU end with identical projectors and weights, equal to
one process on the whole batch."""

import pytest
import torch
from galore_optim import GaLoreAdamW
from galore_testlib import (
    batches,
    ddp_worker,
    galore_groups,
    load_agreeing_ranks,
    tiny_model,
    train,
)
from torch.multiprocessing.spawn import spawn


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_ddp_two_ranks_match_single_process(tmp_path):
    solvers = ("exact", "randomized")
    spawn(ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path), solvers), nprocs=2, join=True)
    for solver in solvers:
        _check(tmp_path, solver)


def _check(tmp_path, solver):
    r0 = load_agreeing_ranks(tmp_path, solver)
    single = tiny_model()
    train(
        single,
        GaLoreAdamW(galore_groups(single, update_proj_gap=2, solver=solver), lr=1e-2),
        batches(5, batch=8),
    )
    for a, b in zip(r0["params"], single.parameters(), strict=True):
        torch.testing.assert_close(a, b.detach(), atol=2e-5, rtol=1e-4)
