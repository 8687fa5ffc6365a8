"""Global-batch selection under torch.distributed: two gloo processes on the CPU select exactly
what one process holding the whole batch selects, and DDP-averaged gradients equal its gradients."""

from __future__ import annotations

import pytest
import torch
from rho_select import selective_loss
from rho_testlib import distributed_problem, distributed_worker, grad_of
from torch.multiprocessing.spawn import spawn

from tensor_utils_dev.testing import assert_close


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_ranks_select_like_one_process_with_the_whole_batch(tmp_path):
    spawn(distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    h, w, labels, ref = distributed_problem()
    for mode in ("batch", "random"):
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
        gen = torch.Generator().manual_seed(0) if mode == "random" else None
        single = selective_loss(hh, ww, labels, ref, 0.45, mode=mode, generator=gen)
        single.loss.backward()
        if mode == "batch":  # random draws differ per rank; only its count is global
            mask = torch.cat([r0[mode]["mask"], r1[mode]["mask"]])
            assert torch.equal(mask, single.selected_mask)
            # each rank's loss is scaled by the world size so that DDP's averaging of parameter
            # gradients gives the global mean; per-rank activation gradients carry that factor
            grad_hidden = torch.cat([r0[mode]["grad_hidden"], r1[mode]["grad_hidden"]]) / 2
            assert_close(grad_hidden, grad_of(hh))
            assert_close(r0[mode]["grad_weight"], grad_of(ww))
            assert_close(r1[mode]["grad_weight"], grad_of(ww))
            assert_close((r0[mode]["loss"] + r1[mode]["loss"]) / 2, single.loss.detach())
        total = int(r0[mode]["mask"].sum() + r1[mode]["mask"].sum())
        assert total == int(single.selected_mask.sum())
        assert float(r0[mode]["fraction"]) == float(r1[mode]["fraction"])
        assert float(r0[mode]["fraction"]) == pytest.approx(float(single.selected_fraction))
